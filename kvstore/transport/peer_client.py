"""The sending side of the peer protocol: one long-lived stream per peer, frames that batch.

Why it is built this way (DESIGN 3.3): on grpc.aio the cost of a stream
message is fixed (about 0.2 ms of CPU) and its payload nearly free, so every
Raft message queued for a peer while the previous frame was being written goes
into the next frame. No timer delays a frame: batching comes from the time a
write takes, so a lone heartbeat leaves at once and a burst is packed.

Raft retransmits whatever is lost, so the transport never blocks for a peer:
``send`` only appends to a bounded per-peer queue (dropping the oldest message
when it is full, as newer messages carry newer state), and each peer has its
own task that connects, writes and reconnects with exponential backoff and
jitter. A dead, slow or refusing peer costs the others nothing.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from dataclasses import asdict, dataclass
from typing import Any

import grpc
import grpc.aio

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.transport import codec
from kvstore.transport.dialer import PeerDialer
from kvstore.transport.peer_server import DEFAULT_MAX_MESSAGE_BYTES
from raftcore import Message

__all__ = ["PeerSender", "PeerStats", "channel_options"]

log = logging.getLogger("kvstore.transport")

STREAM_METHOD = "/kvstore.raft.v1.Peer/Stream"
SNAPSHOT_METHOD = "/kvstore.raft.v1.Peer/InstallSnapshot"


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, Any]]:
    """Channel arguments for a peer channel.

    gRPC's own reconnect backoff (default 1 s growing to 120 s) is brought in
    line with ours (50 ms to 1 s), else a call made while the channel waits out
    its backoff fails at once for up to two minutes after a peer restarts. The
    cap is one election timeout: a restarted member whose vote is needed must
    be reached again within about that (the chaos tests saw 3 s with 2 s). A
    connection attempt gets 3 s (gRPC's minimum connect timeout, default 20 s).
    Keepalive pings every 10 s detect a peer that vanished without closing the
    connection (the server side accepts pings every 5 s). Each channel has its
    own subchannel, so two senders in one process (tests) do not share state.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.initial_reconnect_backoff_ms", 50),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        ("grpc.min_reconnect_backoff_ms", 3_000),
        ("grpc.keepalive_time_ms", 10_000),
        ("grpc.keepalive_timeout_ms", 5_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.use_local_subchannel_pool", 1),
    ]


@dataclass
class PeerStats:
    """Counters of one peer's sender (exported as metrics by the node)."""

    frames_sent: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    dropped: int = 0  # queue overflow, or lost in a failed frame
    streams_opened: int = 0
    reconnects: int = 0  # streams opened after the first (a failure or a move ended it)
    send_failures: int = 0  # streams that ended in an error
    snapshots_sent: int = 0
    snapshots_failed: int = 0
    connected: bool = False
    last_error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PeerSender:
    """The queue and the stream to one peer. Create and use it on the node's loop."""

    def __init__(
        self,
        peer_id: int,
        address: str,
        *,
        cluster_id: int,
        node_id: int,
        node_address: str,
        max_queue: int = 4096,
        max_frame_messages: int = 256,
        max_frame_bytes: int = 4 * 1024 * 1024,
        backoff_initial: float = 0.05,
        backoff_max: float = 1.0,
        options: list[tuple[str, Any]] | None = None,
        dialer: PeerDialer | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.address = address
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.node_address = node_address
        self.max_queue = max_queue
        self.max_frame_messages = max_frame_messages
        self.max_frame_bytes = max_frame_bytes
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stats = PeerStats()
        self._options = options if options is not None else channel_options()
        self._dialer = dialer if dialer is not None else PeerDialer()
        self._queue: collections.deque[Message] = collections.deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._stop = asyncio.Event()  # cuts a backoff wait short when closing
        self._channel = self._new_channel()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"peer-sender-{peer_id}"
        )

    def _new_channel(self) -> grpc.aio.Channel:
        self._channel_address = self.address
        return self._dialer.channel(self.address, self._options)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the peer; snapshots use it too, so one connection per peer."""
        return self._channel

    @property
    def queued(self) -> int:
        return len(self._queue)

    def send(self, message: Message) -> None:
        """Queue one message; never blocks. The oldest message goes when the queue is full."""
        if self._closed:
            self.stats.dropped += 1
            return
        queue = self._queue
        if len(queue) >= self.max_queue:
            queue.popleft()
            self.stats.dropped += 1
        queue.append(message)
        self._wakeup.set()

    def set_address(self, address: str) -> None:
        """The peer moved: the task reconnects to ``address`` at its next step."""
        if address != self.address:
            log.info("peer %d moves from %s to %s", self.peer_id, self.address, address)
            self.address = address
            self._wakeup.set()

    async def close(self, timeout: float = 1.0) -> None:
        """Flush, then stop the task and close the channel, in about ``timeout`` seconds.

        If the stream is up, what is queued is written and the stream ended
        cleanly, so that the last messages (say the TimeoutNow of a leadership
        transfer before shutdown) are delivered rather than cut off in flight.
        What cannot be flushed within ``timeout`` is dropped.
        """
        self._closed = True
        self._wakeup.set()
        self._stop.set()
        done, _ = await asyncio.wait({self._task}, timeout=timeout)
        if not done:
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.stats.dropped += len(self._queue)
        self._queue.clear()
        await self._channel.close(None)
        self.stats.connected = False

    # ------------------------------------------------------------------ the task

    def _frame(self) -> tuple[bytes, int]:
        """Everything queued, up to the frame bounds, as one serialized MessageBatch."""
        batch = pb.MessageBatch(
            cluster_id=self.cluster_id,
            from_id=self.node_id,
            from_address=self.node_address,
            to_id=self.peer_id,
        )
        queue = self._queue
        count = 0
        size = 0
        while queue and count < self.max_frame_messages:
            message = queue[0]
            estimate = codec.estimate_size(message)
            if count and size + estimate > self.max_frame_bytes:
                break
            queue.popleft()
            try:
                codec.add_message(batch, message)
            except (ValueError, TypeError, KeyError) as exc:
                # A message protobuf cannot carry (a bug upstream): drop it, not the stream.
                del batch.messages[count:]
                self.stats.dropped += 1
                log.error("cannot encode a message to peer %d: %s (%r)", self.peer_id, exc, message)
                continue
            count += 1
            size += estimate
        return batch.SerializeToString(), count

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        backoff = self.backoff_initial
        failed_before = False
        while True:
            while not self._queue:  # no stream is opened before there is something to send
                if self._closed:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
            if self._channel_address != self.address:
                await self._channel.close(None)
                self._channel = self._new_channel()
            opened_at = loop.time()
            error = await self._stream(announce=failed_before)
            self.stats.connected = False
            if self._closed:
                return
            if error is None:  # address change: reconnect at once
                continue
            self.stats.send_failures += 1
            self.stats.last_error = error
            if loop.time() - opened_at > self.backoff_max:
                # It had been healthy for a while: a fresh failure, a fresh backoff.
                backoff = self.backoff_initial
                failed_before = False
            # One warning per outage, not one per attempt every 2 s.
            level = logging.DEBUG if failed_before else logging.WARNING
            log.log(level, "stream to peer %d at %s failed: %s", self.peer_id, self.address, error)
            failed_before = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, self.backoff_max)

    async def _stream(self, announce: bool) -> str | None:
        """Run one stream until it fails (the reason), or the address changes or the
        sender closes and the queue is flushed (None)."""
        call: grpc.aio.StreamUnaryCall[bytes, pb.StreamAck] = self._channel.stream_unary(
            STREAM_METHOD, request_serializer=None, response_deserializer=pb.StreamAck.FromString
        )()
        call.add_done_callback(lambda _: self._wakeup.set())
        self.stats.streams_opened += 1
        self.stats.reconnects += self.stats.streams_opened > 1
        count = 0
        try:
            while True:
                if call.done():
                    return await _call_error(call)
                if self._channel_address != self.address:
                    return None
                if not self._queue:
                    if self._closed:  # flushed: end the stream, wait for the peer's ack
                        await call.done_writing()
                        await call
                        return None
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                frame, count = self._frame()
                await call.write(frame)
                if not self.stats.connected:
                    self.stats.connected = True
                    if announce:
                        log.info("stream to peer %d at %s is up again", self.peer_id, self.address)
                self.stats.frames_sent += 1
                self.stats.messages_sent += count
                self.stats.bytes_sent += len(frame)
                count = 0
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        except asyncio.InvalidStateError:
            return await _call_error(call)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return "the call was cancelled (channel closed)"
        except Exception as exc:  # never let the peer's task die: log, back off, retry
            log.exception("stream to peer %d failed unexpectedly", self.peer_id)
            return f"internal error: {exc!r}"
        finally:
            self.stats.dropped += count  # the frame that was being written is lost
            call.cancel()


async def _call_error(call: grpc.aio.StreamUnaryCall[Any, Any]) -> str:
    """Why a finished call ended, as 'CODE: details'."""
    code = await call.code()
    details = await call.details()
    if code == grpc.StatusCode.OK:
        return "the peer closed the stream"
    return f"{code.name}: {details}"
