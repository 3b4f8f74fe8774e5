"""Peer routes: a member dials an advertised peer address at another host:port."""

from __future__ import annotations

import asyncio

import grpc.aio
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kvstore.transport.dialer import PeerDialer, parse_routes


def test_parse_routes_maps_advertised_to_dialled_addresses() -> None:
    assert parse_routes(" kv-0.kv:7201=127.0.0.1:17201, kv-1.kv:7201=127.0.0.1:17202 ") == {
        "kv-0.kv:7201": "127.0.0.1:17201",
        "kv-1.kv:7201": "127.0.0.1:17202",
    }
    assert parse_routes("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kv-0:7201", "is not ADVERTISED"),
        ("=127.0.0.1:1", "is not ADVERTISED"),
        ("a:1=b:1,a:1=c:1", "twice"),
    ],
)
def test_parse_routes_names_the_bad_part(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_routes(text)


def test_unrouted_addresses_are_dialled_as_advertised() -> None:
    dialer = PeerDialer(routes={"kv-0.kv:7201": "127.0.0.1:17201"})
    assert dialer.target("kv-0.kv:7201") == "127.0.0.1:17201"
    assert dialer.target("127.0.0.1:7202") == "127.0.0.1:7202"


def test_a_channel_to_a_routed_name_reaches_the_route() -> None:
    async def run() -> str:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            # ".invalid" never resolves (RFC 2606): only the route can reach the server.
            dialer = PeerDialer(routes={"member-1.invalid:7201": f"127.0.0.1:{port}"})
            async with dialer.channel("member-1.invalid:7201") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        finally:
            await server.stop(grace=None)

    assert asyncio.run(run()) == "SERVING"
