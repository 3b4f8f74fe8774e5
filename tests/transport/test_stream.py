"""Peer streams on real grpc.aio servers: delivery, order, batching, refusals, reconnects."""

from __future__ import annotations

import asyncio
import socket

import grpc
import grpc.aio

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.transport import PeerServicer, Transport, start_peer_server
from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Configuration,
    Entry,
    EntryType,
    InstallSnapshot,
    Message,
    RequestVote,
)

from .harness import CLUSTER, Cluster, Node, free_port, heartbeat, run, until


def test_two_transports_exchange_batches_in_order():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            entries = [Entry(1, EntryType.COMMAND, b"v%d" % i) for i in range(5)]
            for start in range(0, 300, 30):  # several send calls, as successive updates
                a.send([heartbeat(2, b.address, i) for i in range(start, start + 30)])
                await asyncio.sleep(0)
            a.send([Message(2, b.address, AppendEntries(1, 300, 1, 299, entries, context=42))])
            b.send([Message(1, a.address, AppendEntriesResult(1, 0, 305, context=42))])
            b.send([Message(1, a.address, RequestVote(2, 2, 305, 1, pre_vote=True))])
            await until(lambda: len(b.received) == 301 and len(a.received) == 2)

            assert [m.payload.prev_log_index for m in b.received] == list(range(301))
            assert all(m.server_id == 1 and m.server_address == a.address for m in b.received)
            assert b.received[-1].payload == AppendEntries(1, 300, 1, 299, entries, context=42)
            assert a.received[0] == Message(
                2, b.address, AppendEntriesResult(1, 0, 305, context=42)
            )
            assert a.received[1].payload == RequestVote(2, 2, 305, 1, pre_vote=True)
            assert b.servicer.stats.messages == 301
            stats = a.transport.stats()[2]
            assert stats.messages_sent == 301 and stats.dropped == 0 and stats.connected

    run(main())


def test_messages_queued_together_travel_in_few_frames():
    async def main():
        a, b = Node(1, max_frame_messages=100), Node(2)
        async with Cluster(a, b):
            a.send([heartbeat(2, b.address, i) for i in range(1000)])
            await until(lambda: len(b.received) == 1000)
            stats = a.transport.stats()[2]
            assert stats.messages_sent == 1000
            assert stats.frames_sent <= 11  # 10 full frames (plus a lone first one at most)
            assert len(b.batches) == stats.frames_sent
            assert max(n for _, _, n in b.batches) == 100
            assert [m.payload.prev_log_index for m in b.received] == list(range(1000))

    run(main())


def test_frames_are_bounded_in_bytes():
    async def main():
        a, b = Node(1, max_frame_bytes=64 * 1024), Node(2)
        async with Cluster(a, b):
            big = [Entry(1, EntryType.COMMAND, b"x" * 20_000)]
            a.send([Message(2, b.address, AppendEntries(1, i, 1, 0, big)) for i in range(20)])
            await until(lambda: len(b.received) == 20)
            assert max(n for _, _, n in b.batches) <= 3  # 3 x 20 kB fit in 64 KiB, 4 do not
            assert b.received[7].payload.entries[0].data == b"x" * 20_000

    run(main())


def _refusal_test(sender: Node, receiver: Node, counter: str, code: str, words: str):
    async def main():
        async with Cluster(sender, receiver):
            sender.send([heartbeat(2, receiver.address, i) for i in range(5)])
            await until(lambda: getattr(receiver.servicer.stats, counter) >= 1)
            await until(lambda: sender.transport.stats()[2].send_failures >= 1)
            stats = sender.transport.stats()[2]
            assert stats.last_error.startswith(code), stats.last_error
            assert words in stats.last_error
            assert words in receiver.servicer.stats.last_refusal
            await asyncio.sleep(0.3)  # the sender backs off, does not hammer
            assert receiver.received == []
            assert receiver.servicer.stats.batches == 0
            assert getattr(receiver.servicer.stats, counter) <= 5

    run(main())


def test_a_frame_from_another_cluster_is_refused_and_counted():
    _refusal_test(
        Node(1, cluster_id=99),
        Node(2),
        "refused_cluster",
        "FAILED_PRECONDITION",
        "cluster id mismatch",
    )


def test_a_sender_outside_the_configuration_is_refused():
    _refusal_test(
        Node(1),
        Node(2, members={2, 3}),
        "refused_sender",
        "PERMISSION_DENIED",
        "not in the configuration",
    )


def test_a_frame_for_another_member_is_refused():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            a.send([heartbeat(3, b.address, 0)])  # a believes member 3 listens at b's address
            await until(lambda: b.servicer.stats.refused_recipient >= 1)
            assert "addressed to member 3, but this is member 2" in b.servicer.stats.last_refusal
            # The sender learns of the refusal when its stream ends, a moment later.
            await until(lambda: a.transport.stats()[3].last_error.startswith("FAILED_PRECONDITION"))
            a.send([heartbeat(2, b.address, 1)])  # the same pair of nodes still works
            await until(lambda: len(b.received) == 1)

    run(main())


def test_malformed_frames_are_refused_and_the_server_keeps_serving():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            good_header = {"cluster_id": CLUSTER, "from_id": 1, "to_id": 2, "from_address": "x"}
            bad_frames = [
                b"\xff\xff\xff\xff",  # not protobuf at all
                pb.MessageBatch(**good_header, messages=[pb.RaftMessage()]).SerializeToString(),
                pb.MessageBatch(
                    **good_header,
                    messages=[
                        pb.RaftMessage(append_entries=pb.AppendEntries(entries=[pb.Entry(type=77)]))
                    ],
                ).SerializeToString(),
                pb.MessageBatch(
                    **good_header,
                    messages=[pb.RaftMessage(install_snapshot=pb.InstallSnapshot(conf=b"junk"))],
                ).SerializeToString(),
            ]
            async with grpc.aio.insecure_channel(b.address) as channel:
                stream = channel.stream_unary("/kvstore.raft.v1.Peer/Stream")
                for frame in bad_frames:
                    call = stream()
                    await call.write(frame)
                    await call.done_writing()
                    try:
                        await asyncio.wait_for(call, 5)
                    except grpc.aio.AioRpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                    else:
                        raise AssertionError("a malformed frame was accepted")
            assert b.servicer.stats.malformed == len(bad_frames)
            assert b.received == []
            a.send([heartbeat(2, b.address, 0)])
            await until(lambda: len(b.received) == 1)

    run(main())


def test_an_oversized_frame_is_refused_by_grpc_and_the_server_keeps_serving():
    async def main():
        received: list[Message] = []
        servicer = PeerServicer(
            cluster_id=CLUSTER,
            node_id=2,
            accept_from=lambda peer: True,
            on_messages=lambda _id, _address, messages: received.extend(messages),
        )
        server = await start_peer_server(servicer, "127.0.0.1:0", max_message_bytes=64 * 1024)
        try:
            address = f"127.0.0.1:{server.port}"
            async with grpc.aio.insecure_channel(address) as channel:
                call = channel.stream_unary("/kvstore.raft.v1.Peer/Stream")()
                try:
                    await call.write(b"\x0a" + bytes(100_000))
                    await call.done_writing()
                    await asyncio.wait_for(call, 5)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                else:
                    raise AssertionError("an oversized frame was accepted")
            a = Node(1)
            async with Cluster(a):
                a.send([heartbeat(2, address, 0)])
                await until(lambda: len(received) == 1)
        finally:
            await server.stop(0.2)

    run(main())


def test_a_peer_that_is_down_gets_messages_once_it_is_up():
    async def main():
        down_port = free_port()
        a, b, c = Node(1), Node(2, port=down_port), Node(3)
        async with Cluster(a, c):
            try:
                for i in range(20):  # heartbeats to both while b is down
                    a.send([heartbeat(2, b.address, i), heartbeat(3, c.address, i)])
                    await asyncio.sleep(0.01)
                await until(lambda: len(c.received) == 20, what="the live peer's messages")
                await until(lambda: a.transport.stats()[2].send_failures >= 1)
                assert b.received == []

                await b.start()
                for i in range(20, 60):
                    a.send([heartbeat(2, b.address, i)])
                    await asyncio.sleep(0.02)
                    if any(m.payload.prev_log_index >= 20 for m in b.received):
                        break
                await until(lambda: any(m.payload.prev_log_index >= 20 for m in b.received))
                indexes = [m.payload.prev_log_index for m in b.received]
                assert indexes == sorted(indexes)  # in order, though some may be lost
                stats = a.transport.stats()[2]
                assert stats.reconnects >= 1 and stats.connected
            finally:
                await b.stop()

    run(main())


def test_a_full_queue_drops_the_oldest_messages():
    async def main():
        a = Node(1, max_queue=10)
        async with Cluster(a):
            address = f"127.0.0.1:{free_port()}"  # nobody listens
            a.send([heartbeat(2, address, i) for i in range(25)])
            sender = a.transport._senders[2]
            assert sender.queued <= 10
            assert sender.stats.dropped >= 15
            assert sender._queue[-1].payload.prev_log_index == 24  # the newest are kept

    run(main())


def test_update_peers_closes_the_senders_of_removed_peers():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            transport = a.transport
            transport.update_peers({1: a.address, 2: b.address, 3: "127.0.0.1:1"})
            assert transport.peers == {2: b.address, 3: "127.0.0.1:1"}
            transport.send([heartbeat(2, b.address, 0)])
            await until(lambda: len(b.received) == 1)
            transport.update_peers({2: b.address})
            assert transport.peers == {2: b.address}
            transport.update_peers({})
            assert transport.peers == {}
            transport.send([heartbeat(2, b.address, 1)])  # a sender is created again on demand
            await until(lambda: len(b.received) == 2)

    run(main())


def test_send_skips_messages_it_must_not_send():
    async def main():
        a = Node(1)
        async with Cluster(a):
            snapshot = InstallSnapshot(1, 10, 1, Configuration(), 1)
            a.send([heartbeat(1, a.address, 0), Message(2, "127.0.0.1:1", snapshot)])
            assert a.transport.skipped == 2

    run(main())


def test_closing_is_bounded_even_with_a_peer_that_never_answers():
    async def main():
        with socket.socket() as silent:  # accepts TCP connections, never speaks HTTP/2
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            address = f"127.0.0.1:{silent.getsockname()[1]}"
            transport = Transport(cluster_id=CLUSTER, node_id=1, node_address="127.0.0.1:9")
            transport.send([heartbeat(2, address, i) for i in range(100)])
            await asyncio.sleep(0.2)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await transport.close(timeout=1.0)
            assert loop.time() - started < 2.0
            assert transport.peers == {}
            transport.send([heartbeat(2, address, 0)])
            assert transport.skipped == 1

    run(main())


def test_closing_flushes_what_is_queued_to_connected_peers():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            a.send([heartbeat(2, b.address, 0)])
            await until(lambda: len(b.received) == 1)
            a.send([heartbeat(2, b.address, i) for i in range(1, 2000)])
            await a.transport.close(timeout=5.0)  # right away: most are still queued
            assert [m.payload.prev_log_index for m in b.received] == list(range(2000))

    run(main())


def test_stopping_a_server_with_open_streams_is_bounded():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            a.send([heartbeat(2, b.address, 0)])
            await until(lambda: len(b.received) == 1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await b.stop_server()
            assert loop.time() - started < 2.0
            await until(lambda: a.transport.stats()[2].send_failures >= 1)

    run(main())


def test_a_message_protobuf_cannot_carry_is_dropped_and_the_stream_goes_on():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            too_big = Message(2, b.address, AppendEntries(2**64, 0, 0, 0))  # not a uint64
            a.send([heartbeat(2, b.address, 0), too_big, heartbeat(2, b.address, 1)])
            await until(lambda: len(b.received) == 2)
            assert [m.payload.prev_log_index for m in b.received] == [0, 1]
            assert a.transport.stats()[2].dropped == 1

    run(main())
