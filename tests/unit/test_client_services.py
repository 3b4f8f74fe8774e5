"""The client port's services go through gRPC's generic handlers only.

grpc.aio's server loop keeps one pending request per *registered* method and
waits on all of them (``asyncio.wait``) for every call that arrives: with the
generated ``add_*_to_server`` functions our 16 methods made each call cost
~10% more server CPU than a bare echo server's. These tests run a real
grpc.aio server on 127.0.0.1 and watch what its loop waits on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from kvstore.api.service import add_client_services

#: Enough for the servicers' constructors; no test here reaches the executor.
_EXECUTOR: Any = SimpleNamespace(node=SimpleNamespace(config=SimpleNamespace(request_timeout=1.0)))


@pytest.fixture
def server_waits(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """How many futures each FIRST_COMPLETED wait of the server loop covered."""
    sizes: list[int] = []
    real_wait = asyncio.wait

    async def recording_wait(fs: Any, *args: Any, **kwargs: Any) -> Any:
        fs = set(fs)
        if kwargs.get("return_when") == asyncio.FIRST_COMPLETED:
            sizes.append(len(fs))
        return await real_wait(fs, *args, **kwargs)

    monkeypatch.setattr(asyncio, "wait", recording_wait)
    yield sizes


async def _serve_and_call() -> tuple[health_pb2.HealthCheckResponse, list[str]]:
    server = grpc.aio.server()
    health_servicer = health.aio.HealthServicer()
    add_client_services(server, _EXECUTOR, health_servicer)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            checks = [
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
                for _ in range(5)
            ]
            answers = await asyncio.gather(*checks)
            listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
            )
            services = [
                s.name
                async for response in listing
                for s in response.list_services_response.service
            ]
        return answers[0], services
    finally:
        await server.stop(None)


def test_every_call_waits_on_a_single_pending_request(server_waits: list[int]) -> None:
    answer, services = asyncio.run(_serve_and_call())
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
    assert server_waits, "the server loop was not seen waiting for calls (gRPC changed?)"
    assert max(server_waits) == 1, f"the server loop waited on {max(server_waits)} futures"
    assert set(services) == {
        "kvstore.v1.KV",
        "kvstore.v1.Cluster",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
