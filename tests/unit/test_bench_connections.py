"""``kvctl bench --conns N`` opens N TCP connections, as etcd's benchmark does.

gRPC lets channels to one address share a connection unless told otherwise;
then --conns would change nothing, and a server that spreads connections over
several acceptors (kvstore.api.client_port) would be measured on one.
"""

from __future__ import annotations

import asyncio

import grpc

from kvstore import bench


async def peers_seen(conns: int) -> set[str]:
    peers: set[str] = set()

    async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        peers.add(context.peer())
        return request

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "kvstore.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        channels = bench._channels([f"127.0.0.1:{port}"], conns)
        try:
            for channel in channels:
                assert await channel.unary_unary(bench.ECHO_METHOD)(b"x", timeout=5) == b"x"
        finally:
            for channel in channels:
                await channel.close()
    finally:
        await server.stop(None)
    return peers


def test_each_channel_is_its_own_connection() -> None:
    peers = asyncio.run(peers_seen(3))
    assert len(peers) == 3, f"3 channels came from {sorted(peers)}"
