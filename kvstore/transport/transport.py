"""The node's view of the outgoing side: ``send`` Raft messages, ``send_snapshot``, ``close``.

One :class:`~kvstore.transport.peer_client.PeerSender` per peer, created on
demand from the destination of the messages (``Message.server_id`` and
``server_address``, as raftcore fills them) and kept in step with the
configuration by ``update_peers``.

InstallSnapshot messages are not sent by ``send``: raftcore leaves their data
empty for the I/O layer to fill, so the node calls ``send_snapshot`` with the
header and the data in chunks instead (one client-streaming call per snapshot,
over the same channel, hence the same connection, as the peer's stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from typing import Any

import grpc
import grpc.aio

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.transport import codec
from kvstore.transport.peer_client import SNAPSHOT_METHOD, PeerSender, PeerStats
from raftcore import InstallSnapshot, Message

__all__ = ["Transport"]

log = logging.getLogger("kvstore.transport")


class Transport:
    """All outgoing peer traffic of one node. Create and use it on the node's event loop.

    ``sender_options`` are passed to every PeerSender (max_queue,
    max_frame_messages, max_frame_bytes, backoff_initial, backoff_max, options).
    """

    def __init__(
        self, *, cluster_id: int, node_id: int, node_address: str, **sender_options: Any
    ) -> None:
        self.cluster_id = cluster_id
        self.node_id = node_id
        self.node_address = node_address
        self._sender_options = sender_options
        self._senders: dict[int, PeerSender] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._closed = False
        self.skipped = 0  # messages send() refused: to ourselves, InstallSnapshot, after close

    # ------------------------------------------------------------------ senders

    def _sender(self, peer_id: int, address: str) -> PeerSender:
        sender = self._senders.get(peer_id)
        if sender is None:
            sender = PeerSender(
                peer_id,
                address,
                cluster_id=self.cluster_id,
                node_id=self.node_id,
                node_address=self.node_address,
                **self._sender_options,
            )
            self._senders[peer_id] = sender
        elif address and address != sender.address:
            sender.set_address(address)
        return sender

    def _retire(self, peer_id: int, timeout: float = 1.0) -> None:
        sender = self._senders.pop(peer_id, None)
        if sender is not None:
            task = asyncio.get_running_loop().create_task(sender.close(timeout))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    def update_peers(self, peers: Mapping[int, str]) -> None:
        """The peers are now exactly ``peers`` ({id: address}; our own id is ignored).

        Senders of peers no longer listed are closed (in the background, their
        queued messages discarded); moved peers reconnect to their new address.
        New peers get a sender that connects when the first message is queued.
        """
        for peer_id in [p for p in self._senders if p not in peers]:
            self._retire(peer_id)
        for peer_id, address in peers.items():
            if peer_id != self.node_id and not self._closed:
                self._sender(peer_id, address)

    def send(self, messages: Iterable[Message]) -> None:
        """Queue each message for its destination; never blocks, never raises for a peer."""
        if self._closed:
            self.skipped += sum(1 for _ in messages)
            return
        senders = self._senders
        for message in messages:
            sender = senders.get(message.server_id)
            if sender is None or sender.address != message.server_address:
                if message.server_id == self.node_id or message.server_id <= 0:
                    log.error("not sending a message addressed to %d", message.server_id)
                    self.skipped += 1
                    continue
                sender = self._sender(message.server_id, message.server_address)
            if isinstance(message.payload, InstallSnapshot):
                # Its data is the node's to fill: a bug in the node if it gets here.
                log.error("InstallSnapshot to %d must go through send_snapshot", message.server_id)
                self.skipped += 1
                continue
            sender.send(message)

    @property
    def peers(self) -> dict[int, str]:
        return {peer_id: sender.address for peer_id, sender in self._senders.items()}

    def stats(self) -> dict[int, PeerStats]:
        """The counters of every current peer, by id."""
        return {peer_id: sender.stats for peer_id, sender in self._senders.items()}

    # ---------------------------------------------------------------- snapshots

    async def send_snapshot(
        self,
        to_id: int,
        address: str,
        header: InstallSnapshot,
        chunks: AsyncIterable[bytes] | Iterable[bytes],
        timeout: float = 60.0,
    ) -> bool:
        """Stream a snapshot to a peer; True once the peer reports it installed.

        The first SnapshotChunk carries the header (its ``data`` is ignored: the
        data is ``chunks``, each sent as one SnapshotChunk, so keep them well
        under the message limit, e.g. 1 MiB). The whole call, from first chunk
        to the acknowledgement, is bounded by ``timeout`` seconds. Every failure
        (peer down, refused, timeout, not installed) is logged and returns False:
        raftcore retries after its install_snapshot_timeout.
        """
        sender = self._sender(to_id, address)
        call: grpc.aio.StreamUnaryCall[bytes, pb.SnapshotAck] = sender.channel.stream_unary(
            SNAPSHOT_METHOD,
            request_serializer=None,
            response_deserializer=pb.SnapshotAck.FromString,
        )(timeout=timeout)
        pb_header = codec.encode_install_snapshot(header)
        sent = 0

        def chunk(data: bytes, last: bool) -> bytes:
            message = pb.SnapshotChunk(
                cluster_id=self.cluster_id,
                from_id=self.node_id,
                from_address=self.node_address,
                to_id=to_id,
                offset=sent,
                data=data,
                last=last,
            )
            if sent == 0:
                message.header.CopyFrom(pb_header)
            return message.SerializeToString()

        error = ""
        try:
            async with asyncio.timeout(timeout):
                pending: bytes | None = None  # one chunk of lookahead: the last one says so
                async for data in _aiter(chunks):
                    if pending is not None:
                        await call.write(chunk(pending, last=False))
                        sent += len(pending)
                    pending = data
                await call.write(chunk(pending or b"", last=True))
                sent += len(pending or b"")
                await call.done_writing()
                ack: pb.SnapshotAck = await call
            if ack.installed:
                sender.stats.snapshots_sent += 1
                log.info(
                    "snapshot up to %d (%d bytes) installed by %d", header.last_index, sent, to_id
                )
                return True
            error = f"not installed: {ack.error}"
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        except asyncio.InvalidStateError:  # the peer ended the call early: ask it why
            with contextlib.suppress(asyncio.CancelledError):
                error = f"{(await call.code()).name}: {await call.details()}"
        except TimeoutError:
            error = f"no acknowledgement within {timeout} s"
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            error = "the call was cancelled (the peer's channel was closed)"
        finally:
            call.cancel()
        sender.stats.snapshots_failed += 1
        log.warning(
            "snapshot to peer %d at %s failed after %d bytes: %s", to_id, address, sent, error
        )
        return False

    # ------------------------------------------------------------------ closing

    async def close(self, timeout: float = 2.0) -> None:
        """Flush and stop every sender, close the channels, in at most about ``timeout`` s.

        Half the time goes to flushing what is queued to connected peers (see
        ``PeerSender.close``), the rest is the margin to close channels.
        """
        self._closed = True
        for peer_id in list(self._senders):
            self._retire(peer_id, timeout / 2)
        if self._closing:
            _done, pending = await asyncio.wait(set(self._closing), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("%d peer senders did not close within %.1f s", len(pending), timeout)


async def _aiter(chunks: AsyncIterable[bytes] | Iterable[bytes]) -> AsyncIterator[bytes]:
    if isinstance(chunks, AsyncIterable):
        async for data in chunks:
            yield data
    else:
        for data in chunks:
            yield data
