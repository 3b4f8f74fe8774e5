"""ForwardClient keeps one stream per leader address, also when several
requests find that stream broken at once (the chaos tests saw the losers'
streams leak: "Task was destroyed but it is pending")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio

from kvstore.api.forward import ForwardClient
from kvstore.raft.v1 import peer_pb2, peer_pb2_grpc


class EchoForward(peer_pb2_grpc.PeerServicer):
    """A leader stand-in whose every forwarded request answers with its payload."""

    async def Forward(
        self, request_iterator: AsyncIterator[peer_pb2.ForwardRequest], context: Any
    ) -> AsyncIterator[peer_pb2.ForwardResponse]:
        async for request in request_iterator:
            yield peer_pb2.ForwardResponse(id=request.id, response=request.request)


def _link_tasks() -> int:
    return sum(
        1
        for task in asyncio.all_tasks()
        if not task.done() and "_write_loop" in repr(task.get_coro())
    )


def test_requests_that_find_a_broken_link_share_one_new_link() -> None:
    async def main() -> None:
        server = grpc.aio.server()
        peer_pb2_grpc.add_PeerServicer_to_server(EchoForward(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        client = ForwardClient(cluster_id=1, node_id=2)
        address = f"127.0.0.1:{port}"
        try:
            assert await client(address, "Get", b"first", 5) == b"first"
            old = client._links[address]
            old.broken = True  # as when its stream failed
            answers = await asyncio.gather(
                *(client(address, "Get", f"r{i}".encode(), 5) for i in range(8))
            )
            assert answers == [f"r{i}".encode() for i in range(8)]
            new = client._links[address]
            assert new is not old and not new.broken
            assert _link_tasks() == 1, "a stream was opened and lost besides the one kept"
        finally:
            await client.close()
            await server.stop(grace=None)

    asyncio.run(main())
