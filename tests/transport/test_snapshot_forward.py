"""InstallSnapshot in chunks and the Forward call, on real grpc.aio servers."""

from __future__ import annotations

import asyncio
import os

import grpc
import grpc.aio

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.transport import codec
from raftcore import Configuration, InstallSnapshot, Role, Server

from .harness import CLUSTER, Cluster, Node, heartbeat, run, until

CONF = Configuration([Server(1, "127.0.0.1:1", Role.VOTER), Server(2, "127.0.0.1:2", Role.VOTER)])
HEADER = InstallSnapshot(term=3, last_index=1000, last_term=2, conf=CONF, conf_index=5)


class Installer:
    """The node's side of a snapshot: read every chunk, then 'install' (keep) it."""

    def __init__(self, result: bool = True) -> None:
        self.result = result
        self.installed: list[tuple[int, str, InstallSnapshot, bytes]] = []
        self.chunk_sizes: list[int] = []
        self.errors: list[Exception] = []

    async def __call__(self, from_id, from_address, header, chunks) -> bool:
        data = bytearray()
        try:
            async for chunk in chunks:
                self.chunk_sizes.append(len(chunk))
                data += chunk
        except Exception as exc:  # a bad or cut stream: nothing is installed
            self.errors.append(exc)
            raise
        self.installed.append((from_id, from_address, header, bytes(data)))
        return self.result


def test_a_snapshot_of_several_megabytes_arrives_intact_and_in_order():
    async def main():
        installer = Installer()
        a, b = Node(1), Node(2, on_snapshot=installer)
        async with Cluster(a, b):
            data = os.urandom(5 * 1024 * 1024 + 123)
            size = 256 * 1024

            async def chunks():
                for offset in range(0, len(data), size):
                    yield data[offset : offset + size]

            ok = await a.transport.send_snapshot(2, b.address, HEADER, chunks(), timeout=10)
            assert ok
            ((from_id, from_address, header, received),) = installer.installed
            assert (from_id, from_address) == (1, a.address)
            assert header == HEADER and header.data == b""
            assert received == data
            assert installer.chunk_sizes[0] == size and len(installer.chunk_sizes) == 21
            assert b.servicer.stats.snapshots_installed == 1
            assert b.servicer.stats.snapshot_bytes == len(data)
            assert a.transport.stats()[2].snapshots_sent == 1

            # A plain iterable works too, and so does an empty snapshot.
            assert await a.transport.send_snapshot(2, b.address, HEADER, [b"ab", b"cd"], timeout=5)
            assert installer.installed[-1][3] == b"abcd"
            assert await a.transport.send_snapshot(2, b.address, HEADER, [], timeout=5)
            assert installer.installed[-1][3] == b""

    run(main())


def test_a_snapshot_not_installed_or_refused_returns_false():
    async def main():
        a, b = Node(1), Node(2, on_snapshot=Installer(result=False))
        stranger = Node(9, on_snapshot=Installer())
        async with Cluster(a, b, stranger):
            assert not await a.transport.send_snapshot(2, b.address, HEADER, [b"x"], timeout=5)
            assert a.transport.stats()[2].snapshots_failed == 1
            # Node 9 is not in b's configuration: refused before on_snapshot runs.
            assert not await stranger.transport.send_snapshot(
                2, b.address, HEADER, [b"x"], timeout=5
            )
            assert b.servicer.stats.refused_sender == 1
            # Nobody listens: fails within the timeout.
            assert not await a.transport.send_snapshot(3, "127.0.0.1:1", HEADER, [b"x"], timeout=2)

    run(main())


async def _raw_snapshot(address: str, chunks: list[pb.SnapshotChunk]) -> grpc.aio.AioRpcError:
    """Send chunks as they are; return the error the server answered with."""
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.stream_unary(
            "/kvstore.raft.v1.Peer/InstallSnapshot",
            request_serializer=pb.SnapshotChunk.SerializeToString,
        )()
        try:
            for chunk in chunks:
                await call.write(chunk)
            await call.done_writing()
        except asyncio.InvalidStateError:
            pass  # the server already ended the call
        try:
            await asyncio.wait_for(call, 5)
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("a bad snapshot stream was acknowledged")


def _chunk(**fields) -> pb.SnapshotChunk:
    return pb.SnapshotChunk(**{"cluster_id": CLUSTER, "from_id": 1, "to_id": 2, **fields})


def test_a_cut_or_gapped_snapshot_stream_is_refused_and_not_installed():
    async def main():
        installer = Installer()
        b = Node(2, on_snapshot=installer)
        header = codec.encode_install_snapshot(HEADER)
        async with Cluster(b):
            cut = await _raw_snapshot(b.address, [_chunk(header=header, data=b"partial")])
            assert cut.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "before the last chunk" in cut.details()

            gap = [_chunk(header=header, data=b"abc"), _chunk(offset=5, data=b"d", last=True)]
            error = await _raw_snapshot(b.address, gap)
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "offset 5, expected 3" in error.details()

            no_header = await _raw_snapshot(b.address, [_chunk(data=b"x", last=True)])
            assert "no header" in no_header.details()

            stranger = await _raw_snapshot(
                b.address, [_chunk(header=header, data=b"x", last=True, cluster_id=CLUSTER + 1)]
            )
            assert stranger.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert installer.installed == [] and len(installer.errors) == 2
            assert b.servicer.stats.malformed == 3 and b.servicer.stats.refused_cluster == 1
            assert b.servicer.stats.snapshots_failed == 4

    run(main())


def test_a_cut_stream_is_refused_even_if_the_node_swallows_the_error():
    async def swallowing(from_id, from_address, header, chunks):
        try:
            async for _ in chunks:
                pass
        except Exception:
            return False
        return True

    async def main():
        b = Node(2, on_snapshot=swallowing)
        header = codec.encode_install_snapshot(HEADER)
        async with Cluster(b):
            cut = await _raw_snapshot(b.address, [_chunk(header=header, data=b"partial")])
            assert cut.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert b.servicer.stats.malformed == 1 and b.servicer.stats.snapshots_failed == 1

    run(main())


def test_forward_is_unimplemented_without_a_handler_and_delegated_with_one():
    async def main():
        b = Node(2)
        async with Cluster(b), grpc.aio.insecure_channel(b.address) as channel:
            forward = channel.stream_stream(
                "/kvstore.raft.v1.Peer/ForwardBatches",
                request_serializer=pb.ForwardBatch.SerializeToString,
                response_deserializer=pb.ForwardAnswers.FromString,
            )
            one = pb.ForwardBatch(requests=[pb.ForwardRequest(id=1, method="Put")])
            call = forward(iter([one]))
            try:
                await asyncio.wait_for(call.read(), 5)
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
            else:
                raise AssertionError("ForwardBatches answered without a handler")

            async def echo(batches, context):
                async for batch in batches:
                    yield pb.ForwardAnswers(
                        responses=[
                            pb.ForwardResponse(id=r.id, response=r.request[::-1])
                            for r in batch.requests
                        ]
                    )

            b.servicer.forward_handler = echo
            batches = [
                pb.ForwardBatch(
                    requests=[pb.ForwardRequest(id=i, method="Put", request=b"ab%d" % i)]
                )
                for i in range(3)
            ]
            call = forward(iter(batches))
            responses = [r async for frame in call for r in frame.responses]
            assert [(r.id, r.response) for r in responses] == [
                (i, (b"ab%d" % i)[::-1]) for i in range(3)
            ]

            async def writer(batches, context):  # the context.write() style
                async for batch in batches:
                    await context.write(
                        pb.ForwardAnswers(
                            responses=[pb.ForwardResponse(id=r.id, code=5) for r in batch.requests]
                        )
                    )

            b.servicer.forward_handler = writer
            responses = [r async for frame in forward(iter(batches)) for r in frame.responses]
            assert [(r.id, r.code) for r in responses] == [(0, 5), (1, 5), (2, 5)]

    run(main())


def test_on_messages_errors_do_not_break_the_stream():
    async def main():
        a, b = Node(1), Node(2)
        async with Cluster(a, b):
            calls = []

            def flaky(from_id, from_address, messages):
                calls.append(len(messages))
                if len(calls) == 1:
                    raise RuntimeError("bug in the node")

            b.servicer.on_messages = flaky
            a.send([heartbeat(2, b.address, 0)])
            await until(lambda: len(calls) == 1)
            a.send([heartbeat(2, b.address, 1)])
            await until(lambda: len(calls) == 2)
            assert b.servicer.stats.callback_errors == 1
            assert a.transport.stats()[2].send_failures == 0

    run(main())
