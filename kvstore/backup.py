"""``Cluster.Snapshot``: a consistent backup streamed by the member that answers.

As etcd's snapshot, the member that receives the call streams its own data
(no copy of the database crosses the cluster), but unlike etcd's it first
passes a linearizable read barrier, so that the backup holds every write
acknowledged before the call started:

- on the leader, the ReadIndex path of linearizable reads (a heartbeat
  round confirms the leadership, then the data is applied up to the read
  index);
- on a follower, the same read runs on the leader (forwarded, as any
  linearizable read) and returns the leader's store revision R at the read
  index; the follower then waits until its own data reaches revision R.
  Every acknowledged write that changed the store has a revision of at most
  R, and revisions grow with the log index, so the follower's data then holds
  all of them. (Writes that changed nothing, such as a failed compare-and-
  swap, have no effect on the data to miss.)

Then one LMDB read transaction (kvstore.storage.snapshot.SnapshotSource,
the reader that also feeds followers' InstallSnapshot) is streamed in 1 MiB
chunks: a consistent cut of keys, revisions, exactly-once sessions, applied
index and store revision, however long the transfer and whatever is written
meanwhile. Chunks are read in a worker thread (py-lmdb opens environments with
MDB_NOTLS, so a read transaction may move between threads) to keep the node
loop free, and gRPC's flow control holds at most a few of them in memory
when the client reads slowly.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import grpc

from kvstore.api.executor import Executor, RequestError
from kvstore.storage import SnapshotSource
from kvstore.v1 import kv_pb2

CHUNK_SIZE = 1 << 20
METHOD = "Snapshot"


async def read_barrier(executor: Executor, timeout: float) -> int:
    """Return once this member's data holds every write acknowledged before the
    call (see module doc); the store revision that guarantees it. RequestError
    (UNAVAILABLE, DEADLINE_EXCEEDED) when that cannot be had within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    request = kv_pb2.MemberListRequest(consistency=kv_pb2.LINEARIZABLE)
    response = await executor.execute("MemberList", request, timeout)
    wanted = int(response.header.revision)
    node = executor.node
    while (have := node.storage.data.revision()) < wanted:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"member {node.config.id} has applied up to revision {have}, behind the "
                f"leader's {wanted}, and did not catch up within {timeout:.3f} s; "
                f"take the backup from another member",
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(node.wait_applied(node.applied_index + 1), remaining)
    return wanted


class _ChunkReader:
    """The source's chunks, each read (and hashed) in a worker thread.

    ``close`` waits for a read in flight before it ends the read transaction:
    aborting it under a cursor in use would crash the process.
    """

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._chunks: Iterator[bytes] = source.chunks()
        self._reading: asyncio.Future[bytes | None] | None = None
        self.digest = hashlib.sha256()
        self.size = 0

    def _next(self) -> bytes | None:
        chunk = next(self._chunks, None)
        if chunk is not None:
            self.digest.update(chunk)
            self.size += len(chunk)
        return chunk

    async def next(self) -> bytes | None:
        self._reading = asyncio.ensure_future(asyncio.to_thread(self._next))
        chunk = await asyncio.shield(self._reading)
        self._reading = None
        return chunk

    async def close(self) -> None:
        if self._reading is not None:
            await asyncio.wait({self._reading})  # a chunk's read always ends
        self._source.close()


async def serve_snapshot(executor: Executor, context: grpc.aio.ServicerContext) -> None:
    """The Snapshot stream: header and info, data chunks, trailer (see the proto).

    Errors before the first message abort the call with their status code;
    the call is counted in the gRPC request metrics as ``Snapshot``. Written
    with ``context.write`` rather than yielded: a client that goes away then
    ends the handler with a plain cancellation, which a yielded message's
    failed send would log as an error.
    """
    node = executor.node
    started = time.perf_counter()
    code = "OK"
    try:
        timeout = node.config.request_timeout
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, max(remaining * 0.9, 0.001))
        try:
            await read_barrier(executor, timeout)
        except RequestError as exc:
            code = exc.code.name
            await context.abort(exc.code, exc.message)
        source = node.storage.snapshot_source(CHUNK_SIZE)
        reader = _ChunkReader(source)
        try:
            first: Any = kv_pb2.SnapshotResponse(
                info=kv_pb2.SnapshotInfo(
                    applied_index=source.applied_index,
                    revision=source.revision,
                    key_count=source.kv_count,
                    raft_term=node.raft.current_term,
                    cluster_id=node.cluster_id,
                    member_id=node.config.id,
                    size_estimate=source.size_estimate,
                )
            )
            first.header.revision = source.revision
            await context.write(executor._fill_header(first))
            while (chunk := await reader.next()) is not None:
                await context.write(kv_pb2.SnapshotResponse(data=chunk))
            trailer = kv_pb2.SnapshotTrailer(size=reader.size, sha256=reader.digest.digest())
            await context.write(kv_pb2.SnapshotResponse(trailer=trailer))
        finally:
            await reader.close()
    except asyncio.CancelledError:
        code = "CANCELLED"
        raise
    except Exception:
        if code == "OK":
            code = "INTERNAL"
        raise
    finally:
        node.metrics.observe_request(METHOD, code, time.perf_counter() - started)
