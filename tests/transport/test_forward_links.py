"""ForwardClient keeps one stream per leader address, also when several
requests find that stream broken at once (the chaos tests saw the losers'
streams leak: "Task was destroyed but it is pending"), and packs the
requests that queue while a frame is being written into the next frame."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc.aio
import pytest

from kvstore.api.executor import RequestError
from kvstore.api.forward import ForwardClient, FrameQueue
from kvstore.raft.v1 import peer_pb2, peer_pb2_grpc


class EchoForward(peer_pb2_grpc.PeerServicer):
    """A leader stand-in whose every forwarded request answers with its payload
    (a frame of answers per frame of requests); it counts the frames."""

    def __init__(self) -> None:
        self.frames: list[int] = []  # requests per frame received

    async def ForwardBatches(
        self, batches: AsyncIterator[peer_pb2.ForwardBatch], context: Any
    ) -> AsyncIterator[peer_pb2.ForwardAnswers]:
        async for batch in batches:
            self.frames.append(len(batch.requests))
            yield peer_pb2.ForwardAnswers(
                responses=[
                    peer_pb2.ForwardResponse(id=r.id, response=r.request) for r in batch.requests
                ]
            )


def _link_tasks() -> int:
    return sum(
        1
        for task in asyncio.all_tasks()
        if not task.done() and "_write_loop" in repr(task.get_coro())
    )


@contextlib.asynccontextmanager
async def leader_at(
    servicer: peer_pb2_grpc.PeerServicer,
) -> AsyncIterator[tuple[ForwardClient, str]]:
    """``servicer`` on a real grpc.aio server on 127.0.0.1, and a client for it."""
    server = grpc.aio.server()
    peer_pb2_grpc.add_PeerServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = ForwardClient(cluster_id=1, node_id=2)
    try:
        yield client, f"127.0.0.1:{port}"
    finally:
        await client.close()
        await server.stop(grace=None)


def test_requests_that_find_a_broken_link_share_one_new_link() -> None:
    async def main() -> None:
        async with leader_at(EchoForward()) as (client, address):
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

    asyncio.run(main())


def test_requests_that_queue_meanwhile_share_a_frame() -> None:
    async def main() -> None:
        leader = EchoForward()
        async with leader_at(leader) as (client, address):
            assert await client(address, "Put", b"alone", 5) == b"alone"
            assert leader.frames == [1], "a lone request leaves at once, in a frame of its own"
            answers = await asyncio.gather(
                *(client(address, "Put", b"p%d" % i, 5) for i in range(100))
            )
            assert answers == [b"p%d" % i for i in range(100)]
            assert sum(leader.frames) == 101
            assert len(leader.frames) <= 10, f"100 concurrent requests took frames {leader.frames}"
            assert (client.stats.requests_sent, client.stats.frames_sent) == (
                101,
                len(leader.frames),
            )

    asyncio.run(main())


def test_a_frame_stops_at_its_byte_budget_and_a_bigger_item_goes_alone() -> None:
    async def main() -> list[list[str] | None]:
        queue: FrameQueue[str] = FrameQueue(budget=10)
        for name, size in [("a", 4), ("b", 4), ("c", 4), ("big", 25), ("d", 1)]:
            queue.put(name, size)
        queue.close()
        return [await queue.take() for _ in range(5)]

    assert asyncio.run(main()) == [["a", "b"], ["c"], ["big"], ["d"], None]


def test_take_waits_for_the_first_item() -> None:
    async def main() -> list[int] | None:
        queue: FrameQueue[int] = FrameQueue()
        waiter = asyncio.ensure_future(queue.take())
        await asyncio.sleep(0.01)
        assert not waiter.done()
        queue.put(1, 1)
        queue.put(2, 1)
        return await asyncio.wait_for(waiter, 5)

    assert asyncio.run(main()) == [1, 2]


class SilentLeader(peer_pb2_grpc.PeerServicer):
    """A leader stand-in that reads forwarded requests and never answers."""

    async def ForwardBatches(
        self, batches: AsyncIterator[peer_pb2.ForwardBatch], context: Any
    ) -> AsyncIterator[peer_pb2.ForwardAnswers]:
        async for _ in batches:
            pass
        return
        yield  # an async generator that yields nothing


def test_a_request_the_leader_never_answers_ends_at_its_deadline() -> None:
    async def main() -> None:
        async with leader_at(SilentLeader()) as (client, address):
            with pytest.raises(RequestError) as late:
                await client(address, "Put", b"lost", 0.2)
            assert late.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert address in late.value.message
            assert not client._links[address]._waiting  # nothing left behind

    asyncio.run(main())
