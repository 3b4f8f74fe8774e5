"""The client port: several gRPC servers on one address (kvstore.api.client_port).

Real grpc.aio servers on 127.0.0.1; the calls are health checks, which need
no node. Which server took a call in is what each one counts.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from kvstore.api.client_port import ClientPort, check_port_free, split_address


def _executor() -> Any:
    """What the servicers' constructors need; no call reaches it."""
    return SimpleNamespace(node=SimpleNamespace(config=SimpleNamespace(request_timeout=1.0)))


@asynccontextmanager
async def client_port(address: str, acceptors: int) -> AsyncIterator[ClientPort]:
    port = ClientPort(_executor(), address, acceptors=acceptors)
    await port.start()
    try:
        yield port
    finally:
        await port.stop(grace=None)


async def health_checks(address: str, connections: int, calls_each: int = 1) -> None:
    """``calls_each`` health checks on each of ``connections`` TCP connections."""
    options = [("grpc.use_local_subchannel_pool", 1)]  # a connection per channel
    channels = [grpc.aio.insecure_channel(address, options=options) for _ in range(connections)]
    try:
        for _ in range(calls_each):
            answers = await asyncio.gather(
                *(
                    health_pb2_grpc.HealthStub(c).Check(health_pb2.HealthCheckRequest(), timeout=5)
                    for c in channels
                )
            )
            assert {a.status for a in answers} == {health_pb2.HealthCheckResponse.SERVING}
    finally:
        for channel in channels:
            await channel.close()


def test_connections_spread_over_the_servers() -> None:
    async def scenario() -> list[int]:
        async with client_port("127.0.0.1:0", acceptors=4) as port:
            await health_checks(f"127.0.0.1:{port.port}", connections=16)
            return list(port.calls)

    calls = asyncio.run(scenario())
    assert sum(calls) == 16, calls
    # The kernel hashes each connection to a server: all 16 on one would be
    # a chance of 4 * 4**-16, or the other servers not listening at all.
    assert sum(1 for c in calls if c) >= 2, f"one server took every connection: {calls}"


def test_the_calls_of_one_connection_stay_with_one_server() -> None:
    async def scenario() -> list[int]:
        async with client_port("127.0.0.1:0", acceptors=4) as port:
            await health_checks(f"127.0.0.1:{port.port}", connections=1, calls_each=10)
            return list(port.calls)

    assert sorted(asyncio.run(scenario())) == [0, 0, 0, 10]


def test_a_port_someone_listens_on_is_refused_by_name() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"

        async def scenario() -> None:
            async with client_port(address, acceptors=4):
                pass

        with pytest.raises(
            OSError, match=re.escape(f"cannot listen for clients on {address}: address ")
        ):
            asyncio.run(scenario())


def test_a_second_member_on_the_same_client_port_is_refused() -> None:
    """Without the probe its servers would join the first member's on the port
    and take a share of its connections."""

    async def scenario() -> tuple[str, list[int]]:
        async with client_port("127.0.0.1:0", acceptors=4) as first:
            address = f"127.0.0.1:{first.port}"
            with pytest.raises(OSError, match="address already in use") as refused:
                async with client_port(address, acceptors=4):
                    pass
            await health_checks(address, connections=8)
            return str(refused.value), list(first.calls)

    message, calls = asyncio.run(scenario())
    assert "cannot listen for clients on 127.0.0.1:" in message
    assert sum(calls) == 8, f"the first member did not take every connection: {calls}"


def test_one_acceptor_keeps_the_port_exclusive() -> None:
    async def scenario() -> None:
        async with (
            client_port("127.0.0.1:0", acceptors=1) as first,
            client_port(f"127.0.0.1:{first.port}", acceptors=1),
        ):
            pass

    with pytest.raises(OSError, match=r"cannot listen for clients on 127\.0\.0\.1:"):
        asyncio.run(scenario())


def test_the_probe_passes_a_free_port_and_reads_v6_addresses() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    check_port_free(f"127.0.0.1:{free}")
    assert split_address("[::1]:7101") == ("::1", 7101)
    assert split_address("0.0.0.0:7101") == ("0.0.0.0", 7101)
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        split_address("localhost")
