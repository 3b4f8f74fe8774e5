"""Snapshots for the node: taking them every N applied entries, streaming one to
a follower that needs it, and installing one received from the leader.

raftcore deals in snapshot metadata only. Here the data is the LMDB data
itself: taking a snapshot records its metadata and compacts the log (no copy),
sending streams a consistent read, and receiving spools the stream to a file
before one write transaction replaces the data (kvstore.storage.snapshot).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from kvstore.storage import SnapshotInstaller
from raftcore import Event, InstallSnapshot, Message, RaftError, SnapshotMetadata

if TYPE_CHECKING:
    from kvstore.node.node import Node

log = logging.getLogger("kvstore.snapshot")

SEND_TIMEOUT = 300.0
# After a snapshot arrived, how long its follower may take to install and
# answer before raftcore's repeated request sends it again.
DELIVERED_GRACE = 60.0


class SnapshotManager:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.installing = False
        self.taken = 0
        self.sent = 0
        self.installed = 0
        self.last_duration = 0.0
        self._taking = False
        self._sending: dict[int, asyncio.Task[None]] = {}
        self._delivered: dict[int, tuple[int, float]] = {}  # follower -> (index, when)
        self._staged: tuple[int, SnapshotInstaller] | None = None
        self._install_done: asyncio.Future[bool] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- taking ------------------------------------------------------------------

    def maybe_take(self) -> None:
        node = self.node
        since = node.applied_index - node.raft.log.snapshot_index
        if self._taking or since < node.config.snapshot_count:
            return
        self._taking = True
        self._spawn(self._take())

    async def _take(self) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            index = node.applied_index
            term = node.raft.log.term_of(index)
            if term is None:
                return
            conf, conf_index = node.applied_conf
            metadata = SnapshotMetadata(index, term, conf, conf_index)
            trailing = node.config.snapshot_trailing
            storage = node.storage
            assert node.committer is not None
            await node.committer.run(lambda txn: storage.take_snapshot_in(txn, metadata, trailing))
            node.step(Event.snapshot(node.now(), metadata, trailing, capacity=node.capacity))
            self.taken += 1
            self.last_duration = loop.time() - started
            node.metrics.snapshot_seconds.labels("take").observe(self.last_duration)
            log.info("snapshot at %d taken in %.3f s", index, self.last_duration)
        except (RaftError, Exception) as exc:
            log.error("taking a snapshot failed: %s", exc)
        finally:
            self._taking = False

    # -- sending -------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """Stream our data to a follower that needs entries we no longer keep.

        raftcore asks again every install_snapshot_timeout until the follower
        answers. A send still running, or one that arrived moments ago (the
        follower is installing it), is not repeated; a failed one is."""
        to = message.server_id
        if to in self._sending and not self._sending[to].done():
            return
        header = message.payload
        assert isinstance(header, InstallSnapshot)
        index, at = self._delivered.get(to, (0, float("-inf")))
        if index >= header.last_index and asyncio.get_running_loop().time() - at < DELIVERED_GRACE:
            return
        self._sending[to] = self._spawn(self._send(to, message.server_address, header))

    async def _send(self, to: int, address: str, header: InstallSnapshot) -> None:
        source = self.node.storage.snapshot_source()
        started = asyncio.get_running_loop().time()
        try:
            if source.applied_index < header.last_index:
                log.error(
                    "snapshot data at %d is older than %d", source.applied_index, header.last_index
                )
                return
            ok = await self.node.transport.send_snapshot(
                to, address, header, source.chunks(), SEND_TIMEOUT
            )
            if ok:
                self._delivered[to] = (header.last_index, asyncio.get_running_loop().time())
                self.sent += 1
                self.node.metrics.snapshot_seconds.labels("send").observe(
                    asyncio.get_running_loop().time() - started
                )
            log.info("snapshot at %d to %d: %s", header.last_index, to, "sent" if ok else "failed")
        except Exception as exc:
            log.warning("sending snapshot to %d failed: %s", to, exc)
        finally:
            source.close()

    # -- receiving -------------------------------------------------------------------

    async def receive(
        self,
        from_id: int,
        from_address: str,
        header: InstallSnapshot,
        chunks: AsyncIterator[bytes],
    ) -> bool:
        """Spool a snapshot from the leader, then let raftcore decide to install it."""
        node = self.node
        if self.installing or self._staged is not None:
            return False
        installer = node.storage.snapshot_installer()
        try:
            async for chunk in chunks:
                installer.feed(chunk)
        except BaseException:
            installer.abort()
            raise
        self._staged = (header.last_index, installer)
        self._install_done = asyncio.get_running_loop().create_future()
        try:
            update = node.step(
                Event.receive(
                    node.now(), Message(from_id, from_address, header), capacity=node.capacity
                )
            )
        except RaftError as exc:
            log.warning("refused snapshot from %d: %s", from_id, exc)
            update = None
        if update is None or update.snapshot is None:
            self._discard_staged()
            return True
        return await self._install_done

    def install_received(self, metadata: SnapshotMetadata) -> None:
        """raftcore asked to persist the snapshot it was sent (a SNAPSHOT update)."""
        if self._staged is None or self._staged[0] != metadata.index:
            log.error("asked to install snapshot %d that was not received", metadata.index)
            return
        installer = self._staged[1]
        self._staged = None
        self.installing = True
        self._spawn(self._install(installer, metadata))

    async def _install(self, installer: SnapshotInstaller, metadata: SnapshotMetadata) -> None:
        node = self.node
        loop = asyncio.get_running_loop()
        started = loop.time()
        ok = False
        try:
            assert node.committer is not None
            await node.committer.run(lambda txn: None)  # earlier writes land first
            info = await asyncio.to_thread(installer.finish, metadata)
            node.applied_index = max(info.applied_index, metadata.index)
            node.applied_conf = (metadata.configuration, metadata.configuration_index)
            self.installing = False
            node.step(
                Event.persisted_snapshot(node.now(), metadata, 0, True, capacity=node.capacity)
            )
            self.installed += 1
            self.last_duration = loop.time() - started
            node.metrics.snapshot_seconds.labels("install").observe(self.last_duration)
            ok = True
            log.info("installed snapshot at %d in %.3f s", metadata.index, self.last_duration)
            node.applied_waiters.advance(node.applied_index)
        except Exception as exc:
            log.error("installing snapshot at %d failed: %s", metadata.index, exc)
            installer.abort()
        finally:
            self.installing = False
            if self._install_done is not None and not self._install_done.done():
                self._install_done.set_result(ok)
            node._schedule_apply()

    def _discard_staged(self) -> None:
        if self._staged is not None:
            self._staged[1].abort()
            self._staged = None
        if self._install_done is not None and not self._install_done.done():
            self._install_done.set_result(True)

    # -- housekeeping -----------------------------------------------------------------

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._discard_staged()
