"""The receiving side of the peer protocol: service ``kvstore.raft.v1.Peer`` on grpc.aio.

Every frame is checked before anything of it reaches the node: the cluster id
must be ours, ``to_id`` must be this member, the sender must be accepted by
the node (``accept_from``: is it in the configuration) and every message must
decode. A frame that fails a check is never passed on: the stream is aborted
with a status naming the problem, the refusal is counted in
:class:`ServerStats` and logged. Aborting (rather than skipping the frame)
makes the sender see the error and back off, instead of streaming into a void.

Stream and InstallSnapshot are registered *without* a request deserializer:
the handler parses the bytes itself, so that a frame protobuf cannot parse is
counted and answered like any other malformed frame instead of failing inside
grpc where we could not see it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, NoReturn

import grpc
import grpc.aio
from google.protobuf.message import DecodeError as ProtobufDecodeError

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.raft.v1 import peer_pb2_grpc
from kvstore.transport import codec
from raftcore import InstallSnapshot, Message

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "ForwardHandler",
    "PeerServer",
    "PeerServicer",
    "ServerStats",
    "start_peer_server",
]

log = logging.getLogger("kvstore.transport")

SERVICE = "kvstore.raft.v1.Peer"
# Well above anything legitimate (32 entries of 1 MiB values plus framing), so
# that the limit errors a client sees are ours, not gRPC's.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024

AcceptFrom = Callable[[int], bool]
OnMessages = Callable[[int, str, list[Message]], None]
OnSnapshot = Callable[[int, str, InstallSnapshot, AsyncIterator[bytes]], Awaitable[bool]]
# forward_handler(batches, context): an async generator of ForwardAnswers,
# or a coroutine that writes them with context.write().
ForwardHandler = Callable[[AsyncIterator[pb.ForwardBatch], grpc.aio.ServicerContext[Any, Any]], Any]


@dataclass
class ServerStats:
    """Counters of the receiving side (exported as metrics by the node)."""

    streams: int = 0
    batches: int = 0
    messages: int = 0
    refused_cluster: int = 0
    refused_recipient: int = 0
    refused_sender: int = 0
    malformed: int = 0
    callback_errors: int = 0
    snapshots: int = 0
    snapshots_installed: int = 0
    snapshots_failed: int = 0
    snapshot_bytes: int = 0
    last_refusal: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Refused(Exception):
    """A frame failed a check; carries the status code and the stats counter to bump."""

    def __init__(self, code: grpc.StatusCode, counter: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.counter = counter
        self.reason = reason


def _malformed(reason: str) -> _Refused:
    return _Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed", reason)


class PeerServicer(peer_pb2_grpc.PeerServicer):
    """Checks peer frames and hands accepted ones to the node's callbacks.

    ``on_messages(from_id, from_address, messages)`` is synchronous and runs on
    the server's (the node's) event loop, one call per accepted batch, in the
    order the sender wrote them. ``on_snapshot(from_id, from_address, header,
    chunks)`` is awaited per InstallSnapshot call; ``chunks`` yields the data
    in order and raises if the stream turns out bad or is cut before the last
    chunk, so the node must install only after it has read to the end.
    """

    def __init__(
        self,
        *,
        cluster_id: int,
        node_id: int,
        accept_from: AcceptFrom,
        on_messages: OnMessages,
        on_snapshot: OnSnapshot | None = None,
        forward_handler: ForwardHandler | None = None,
    ) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.accept_from = accept_from
        self.on_messages = on_messages
        self.on_snapshot = on_snapshot
        # Set by the API layer once it exists; until then ForwardBatches is UNIMPLEMENTED.
        self.forward_handler = forward_handler
        self.stats = ServerStats()

    # ------------------------------------------------------------- registration

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """The method handlers, with raw-bytes requests for Stream and InstallSnapshot."""
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Stream": grpc.stream_unary_rpc_method_handler(
                    self.Stream, response_serializer=pb.StreamAck.SerializeToString
                ),
                "InstallSnapshot": grpc.stream_unary_rpc_method_handler(
                    self.InstallSnapshot, response_serializer=pb.SnapshotAck.SerializeToString
                ),
                "ForwardBatches": grpc.stream_stream_rpc_method_handler(
                    self.ForwardBatches,
                    request_deserializer=pb.ForwardBatch.FromString,
                    response_serializer=pb.ForwardAnswers.SerializeToString,
                ),
            },
        )

    # ------------------------------------------------------------------ checks

    def _check(self, cluster_id: int, from_id: int, to_id: int) -> None:
        """The credentials every frame carries; raises _Refused naming the mismatch."""
        if cluster_id != self.cluster_id:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                "refused_cluster",
                f"cluster id mismatch: frame is for cluster {cluster_id}, "
                f"this member belongs to cluster {self.cluster_id}",
            )
        if to_id != self.node_id:
            raise _Refused(
                grpc.StatusCode.FAILED_PRECONDITION,
                "refused_recipient",
                f"frame is addressed to member {to_id}, but this is member {self.node_id}",
            )
        if from_id == 0 or from_id == self.node_id:
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "refused_sender",
                f"sender id {from_id} is invalid here (0, or this member's own id)",
            )
        if not self.accept_from(from_id):
            raise _Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                "refused_sender",
                f"sender {from_id} is not in the configuration of member {self.node_id}",
            )

    async def _refuse(
        self, context: grpc.aio.ServicerContext[Any, Any], what: str, refusal: _Refused
    ) -> NoReturn:
        setattr(self.stats, refusal.counter, getattr(self.stats, refusal.counter) + 1)
        self.stats.last_refusal = refusal.reason
        log.warning("refused %s from %s: %s", what, context.peer(), refusal.reason)
        await context.abort(refusal.code, refusal.reason)

    # ------------------------------------------------------------------ Stream

    async def Stream(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.StreamAck:
        """Many frames from one sender; each is checked, decoded and passed on, in order."""
        self.stats.streams += 1
        stream_sender = 0
        accepted = 0
        async for raw in request_iterator:
            try:
                try:
                    batch = pb.MessageBatch.FromString(raw)
                except ProtobufDecodeError as exc:
                    raise _malformed(f"frame is not a MessageBatch: {exc}") from None
                from_id = batch.from_id
                self._check(batch.cluster_id, from_id, batch.to_id)
                if stream_sender and from_id != stream_sender:
                    raise _malformed(
                        f"stream of sender {stream_sender} carries a frame of {from_id}"
                    )
                stream_sender = from_id
                try:
                    messages = codec.decode_messages(batch.messages, from_id, batch.from_address)
                except codec.DecodeError as exc:
                    raise _malformed(str(exc)) from None
                if any(isinstance(m.payload, InstallSnapshot) for m in messages):
                    raise _malformed("InstallSnapshot must travel on the InstallSnapshot call")
            except _Refused as refusal:
                await self._refuse(context, "frame", refusal)
            self.stats.batches += 1
            self.stats.messages += len(messages)
            accepted += 1
            try:
                self.on_messages(from_id, batch.from_address, messages)
            except Exception:
                # A bug in the node must not be blamed on the sender nor kill the stream.
                self.stats.callback_errors += 1
                log.exception("on_messages failed for a batch from member %d", from_id)
        return pb.StreamAck(batches=accepted)

    # --------------------------------------------------------- InstallSnapshot

    async def InstallSnapshot(
        self, request_iterator: AsyncIterator[bytes], context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.SnapshotAck:
        """Header in the first chunk, data in order; the node installs and we acknowledge."""
        if self.on_snapshot is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, f"member {self.node_id} does not take snapshots"
            )
        self.stats.snapshots += 1
        frames = aiter(request_iterator)
        try:
            first = self._parse_chunk(await anext(frames, b""))
            if not first.HasField("header"):
                raise _malformed("the first snapshot chunk carries no header")
            if first.offset != 0:
                raise _malformed(f"the first snapshot chunk has offset {first.offset}, not 0")
            try:
                header = codec.decode_install_snapshot(first.header)
            except codec.DecodeError as exc:
                raise _malformed(str(exc)) from None
        except _Refused as refusal:
            self.stats.snapshots_failed += 1
            await self._refuse(context, "snapshot", refusal)

        refusals: list[_Refused] = []  # a bad chunk, even if on_snapshot swallowed the error
        installed = False
        try:
            installed = await self.on_snapshot(
                first.from_id, first.from_address, header, self._chunks(first, frames, refusals)
            )
        except _Refused:
            pass
        except Exception as exc:
            self.stats.snapshots_failed += 1
            log.exception("installing the snapshot from member %d failed", first.from_id)
            return pb.SnapshotAck(installed=False, error=f"install failed: {exc}")
        if refusals:
            self.stats.snapshots_failed += 1
            await self._refuse(context, "snapshot chunk", refusals[0])
        if installed:
            self.stats.snapshots_installed += 1
            return pb.SnapshotAck(installed=True)
        self.stats.snapshots_failed += 1
        return pb.SnapshotAck(installed=False, error="the member did not install the snapshot")

    def _parse_chunk(self, raw: bytes) -> pb.SnapshotChunk:
        if not raw:
            raise _malformed("empty snapshot stream or chunk")
        try:
            chunk = pb.SnapshotChunk.FromString(raw)
        except ProtobufDecodeError as exc:
            raise _malformed(f"frame is not a SnapshotChunk: {exc}") from None
        self._check(chunk.cluster_id, chunk.from_id, chunk.to_id)
        return chunk

    async def _chunks(
        self, first: pb.SnapshotChunk, frames: AsyncIterator[bytes], refusals: list[_Refused]
    ) -> AsyncIterator[bytes]:
        """The data of the chunks, checked: same sender, contiguous offsets, ends with last."""
        try:
            async for data in self._checked_chunks(first, frames):
                yield data
        except _Refused as refusal:
            refusals.append(refusal)
            raise

    async def _checked_chunks(
        self, first: pb.SnapshotChunk, frames: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        chunk = first
        offset = 0
        while True:
            if chunk.offset != offset:
                raise _malformed(f"snapshot chunk at offset {chunk.offset}, expected {offset}")
            if chunk.data:
                offset += len(chunk.data)
                self.stats.snapshot_bytes += len(chunk.data)
                yield chunk.data
            if chunk.last:
                return
            raw = await anext(frames, None)
            if raw is None:
                raise _malformed(f"snapshot stream ended at offset {offset} before the last chunk")
            chunk = self._parse_chunk(raw)
            if chunk.from_id != first.from_id:
                raise _malformed(
                    f"snapshot of sender {first.from_id} carries a chunk of {chunk.from_id}"
                )

    # ---------------------------------------------------------- ForwardBatches

    async def ForwardBatches(
        self,
        request_iterator: AsyncIterator[pb.ForwardBatch],
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Client requests forwarded by a follower; the API layer's handler serves them."""
        handler = self.forward_handler
        if handler is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"member {self.node_id} does not serve forwarded requests (no handler installed)",
            )
        result = handler(request_iterator, context)
        if hasattr(result, "__aiter__"):
            async for response in result:
                await context.write(response)
        else:
            await result


class PeerServer:
    """A grpc.aio server for the Peer service on one address, with bounded shutdown.

    With ``credentials`` (peer TLS: kvstore.tls, always demanding a client
    certificate from the peer CA) it listens on TLS only: a peer without a
    certificate of that CA, or a plaintext one, never gets a frame through
    the handshake, let alone to the checks above.
    """

    def __init__(
        self,
        servicer: PeerServicer,
        address: str,
        *,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: list[tuple[str, Any]] | None = None,
        credentials: grpc.ServerCredentials | None = None,
    ) -> None:
        self.servicer = servicer
        self.address = address
        self.credentials = credentials
        self.port = 0
        base: dict[str, Any] = {
            "grpc.max_receive_message_length": max_message_bytes,
            "grpc.max_send_message_length": max_message_bytes,
            # A second server on our port must fail to bind, not share the traffic.
            "grpc.so_reuseport": 0,
            # Detect peers that vanished without closing their streams; accept the
            # clients' keepalive pings (peer_client pings every 10 s).
            "grpc.keepalive_time_ms": 10_000,
            "grpc.keepalive_timeout_ms": 5_000,
            "grpc.keepalive_permit_without_calls": 1,
            "grpc.http2.min_ping_interval_without_data_ms": 5_000,
        }
        base.update(options or [])
        self._server = grpc.aio.server(options=list(base.items()))
        self._server.add_generic_rpc_handlers((servicer.generic_handler(),))

    async def start(self) -> int:
        """Bind and start serving; returns the bound port (useful with port 0)."""
        try:
            if self.credentials is None:
                self.port = self._server.add_insecure_port(self.address)
            else:
                self.port = self._server.add_secure_port(self.address, self.credentials)
        except RuntimeError as exc:
            raise OSError(f"cannot listen for peers on {self.address}: {exc}") from exc
        if self.port == 0:
            raise OSError(f"cannot listen for peers on {self.address}")
        await self._server.start()
        log.info(
            "peer server listening on %s (port %d, %s)",
            self.address,
            self.port,
            "plaintext" if self.credentials is None else "mutual TLS",
        )
        return self.port

    async def stop(self, grace: float = 1.0) -> None:
        """Stop accepting, give open calls ``grace`` seconds, then cancel them.

        Peer streams are long-lived and never finish by themselves, so the grace
        period is in practice the bound on how long stopping takes.
        """
        await self._server.stop(grace)


async def start_peer_server(
    servicer: PeerServicer,
    address: str,
    *,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    options: list[tuple[str, Any]] | None = None,
) -> PeerServer:
    """Create, bind and start a :class:`PeerServer`; ``server.port`` is the bound port."""
    server = PeerServer(servicer, address, max_message_bytes=max_message_bytes, options=options)
    await server.start()
    return server
