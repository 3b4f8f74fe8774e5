"""The node loop: the only caller of ``Raft.step``, and the one that carries out
every update it returns.

Everything here runs on one asyncio loop. Disk writes go to the group
committer's thread (one fsync per transaction, coalescing what arrives
meanwhile); messages go to the transport; committed entries are applied in
batches, also through the group committer, so that data and applied index
land in one transaction. The C-Raft rules hold: term and vote are durable
before any message of their update (or a later one) leaves, and entries are
reported with PERSISTED_ENTRIES only once durable.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from typing import Any

from kvstore.fsm import ProtobufCodec
from kvstore.metrics import NodeMetrics
from kvstore.node.apply import apply_work, operations
from kvstore.node.capacity import Capacity
from kvstore.node.config import NodeConfig
from kvstore.node.flush import FlushScheduler
from kvstore.node.membership import Membership, removed_members
from kvstore.node.outbox import Outbox
from kvstore.node.reads import ReadScheduler
from kvstore.node.snapshots import SnapshotManager
from kvstore.node.waiters import (
    AppliedWaiters,
    LeadershipLost,
    NotLeaderError,
    Proposals,
    ReadBatches,
)
from kvstore.storage import GroupCommitter, Operation, Persist, Result, Storage
from raftcore import (
    Configuration,
    Entry,
    EntryType,
    Event,
    Message,
    Raft,
    RaftError,
    Role,
    Server,
    State,
    Update,
    UpdateFlags,
)
from raftcore import NoSpace as RaftNoSpace
from raftcore import NotLeader as RaftNotLeader

log = logging.getLogger("kvstore.node")

_APPLY_BATCH = 1024
# Apply batches queued at once: with one, what committed meanwhile waited for
# that batch's sync before it was even queued (~2.5 ms of ~15 ms per put).
_APPLIES_IN_FLIGHT = 4
#: How often waiting writes are checked against their deadlines (seconds).
_EXPIRY_INTERVAL = 0.01
_PERSIST = int(UpdateFlags.CURRENT_TERM | UpdateFlags.VOTED_FOR | UpdateFlags.ENTRIES)
_STATE = int(UpdateFlags.STATE)
_COMMIT_INDEX = int(UpdateFlags.COMMIT_INDEX)
_READS = int(UpdateFlags.READS)
_TIMEOUT = int(UpdateFlags.TIMEOUT)


class Node:
    """One member of the cluster: raftcore, storage and transport tied together."""

    def __init__(self, config: NodeConfig, storage: Storage, cluster_id: int) -> None:
        self.config = config
        self.storage = storage
        self.cluster_id = cluster_id
        self.codec = ProtobufCodec()
        self.raft = Raft(
            config.id,
            config.peer_addr,
            seed=random.SystemRandom().randrange(1 << 62),
            election_timeout=config.election_timeout_ms,
            heartbeat_timeout=config.heartbeat_interval_ms,
            pre_vote=config.pre_vote,
            capacity_threshold=config.capacity_threshold,
            max_inflight_entries=config.max_inflight_entries,
            install_snapshot_timeout=config.install_snapshot_timeout_ms,
        )
        self.transport: Any = None  # set by attach_transport (kvstore.transport)
        self.committer: GroupCommitter | None = None
        self.snapshots = SnapshotManager(self)
        self.proposals = Proposals()
        self.applied_waiters = AppliedWaiters()
        self.reads = ReadBatches()
        self.applied_index = 0
        self.applied_conf: tuple[Configuration, int] = (Configuration(), 0)
        self.leader_changes = 0
        self.membership = Membership(self)
        # Ids removed by a configuration change this node has seen: their messages are refused.
        self.removed: set[int] = set()
        self.last_heard: dict[int, float] = {}  # peer id -> loop time of its last message
        self._leader_known = 0
        self.committed_entries = 0
        self.peer_server_stats: Any = None  # set by the server: refused peer frames
        self.forward_stats: Any = None  # set by the server: kvstore.api.forward.ForwardStats
        self.metrics = NodeMetrics()
        self.metrics.attach(self)
        self._rtt_sent: dict[int, float] = {}
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.on_update_hooks: list[Callable[[Update], None]] = []
        self.leader_event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._t0 = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._hardstate_pending: asyncio.Future[None] | None = None
        self.outbox = Outbox()
        self._flusher: FlushScheduler | None = None  # made by start(), on the loop
        self._persists_in_flight = 0
        self._flushed_index = 0  # last log index of our last flush with entries
        self._applies_in_flight = 0
        self._apply_submitted = 0  # last entry queued for apply
        self._read_scheduler: ReadScheduler | None = None  # made by start(), on the loop
        self._space = Capacity(storage.free_bytes)
        self._stopped = False
        self.fatal: asyncio.Future[BaseException] | None = None

    # -- lifetime --------------------------------------------------------------

    async def start(self) -> None:
        """Load or bootstrap persisted state and START raftcore."""
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        self.fatal = self._loop.create_future()
        self._flusher = FlushScheduler(
            self._loop, self.config.flush_linger, self._flush, self._in_flight
        )
        self._read_scheduler = ReadScheduler(
            self._loop,
            self.reads,
            self.config.read_round_gap,
            self.config.flush_linger,
            self._flush_reads,
        )
        self.committer = GroupCommitter(self.storage, loop=self._loop)
        self.committer.start()
        state = self.storage.load()
        if state.last_index == 0 and state.snapshot is None and self.config.initial_cluster:
            self._bootstrap()
            state = self.storage.load()
        entries: list[Entry] = []
        for _, batch in self.storage.log.iter_batches():
            entries.extend(batch)
        self.applied_index = state.applied_index
        self.applied_conf = self._conf_at(state.applied_index, state.snapshot, entries, state)
        history, since = [], 0
        if state.snapshot is not None:
            history, since = [state.snapshot.configuration], state.snapshot.configuration_index
        history += [
            Configuration.decode(entry.data)
            for offset, entry in enumerate(entries)
            if entry.type == EntryType.CHANGE and state.start_index + offset > since
        ]
        self.removed = removed_members(history)
        self._space.account(state.start_index, entries, self.applied_index)
        event = Event.start(
            self.now(),
            state.term,
            state.voted_for,
            state.snapshot,
            state.start_index,
            entries,
            capacity=self.capacity,
        )
        self._handle(self.raft.step(event))
        log.info(
            "node %d started: term %d, log %d..%d, applied %d, %d members",
            self.config.id,
            state.term,
            state.start_index,
            state.last_index,
            self.applied_index,
            len(self.raft.configuration),
        )
        self._notify_configuration()
        self._schedule_apply()
        self._heartbeat_task = self._loop.create_task(self._loop_heartbeat())

    async def _loop_heartbeat(self) -> None:
        """Proof for /livez that the loop turns: a stuck loop stops this."""
        while not self._stopped:
            self.metrics.loop_heartbeat = time.monotonic()
            await asyncio.sleep(1.0)

    def readiness(self) -> tuple[bool, str]:
        """Ready: a leader is known and everything known committed is applied here."""
        leader_id, _ = self.raft.leader
        if not leader_id:
            return False, "no leader known"
        if self.applied_index < self.raft.commit_index:
            return False, f"applied {self.applied_index} of commit index {self.raft.commit_index}"
        return True, f"ok: leader {leader_id}, applied {self.applied_index}"

    def _bootstrap(self) -> None:
        """First start: the initial configuration is entry 1 of term 1 on every member.

        Without --initial-cluster (a member joining a running cluster) there is
        nothing to bootstrap: it starts with an empty configuration, does not
        campaign, and waits for the leader that adds it to send it the log.
        """
        conf = Configuration(
            Server(i, address, Role.VOTER)
            for i, address in sorted(self.config.initial_cluster.items())
        )
        entry = Entry(1, EntryType.CHANGE, conf.encode())
        self.storage.persist(Persist(term=1, voted_for=0, entries_index=1, entries=[entry]))
        log.info("bootstrapped a new cluster of %d members", len(conf))

    def _conf_at(
        self, index: int, snapshot: Any, entries: list[Entry], state: Any
    ) -> tuple[Configuration, int]:
        """The configuration in force at ``index`` (the last CHANGE at or before it)."""
        best: tuple[Configuration, int] = (Configuration(), 0)
        if snapshot is not None:
            best = (snapshot.configuration, snapshot.configuration_index)
        for offset, entry in enumerate(entries):
            position = state.start_index + offset
            if position > index:
                break
            if entry.type == EntryType.CHANGE and position > best[1]:
                best = (Configuration.decode(entry.data), position)
        return best

    async def stop(self) -> None:
        """Fail what waits, stop the timer, and make everything queued durable."""
        if self._stopped:
            return
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        self.proposals.fail_all(LeadershipLost("the node is shutting down"))
        self.reads.fail_all(NotLeaderError("the node is shutting down"))
        self.applied_waiters.fail_all(NotLeaderError("the node is shutting down"))
        await self.snapshots.close()
        if self.committer is not None:
            await asyncio.to_thread(self.committer.close, 30.0)

    # -- clock -----------------------------------------------------------------

    def now(self) -> int:
        assert self._loop is not None
        return int((self._loop.time() - self._t0) * 1000)

    def _arm_timer(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
        when = self._t0 + self.raft.timeout / 1000
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._stopped:
            self.step(Event.timeout(self.now(), capacity=self.capacity))

    # -- stepping ----------------------------------------------------------------

    def step(self, event: Event) -> Update:
        """Step raftcore and carry out its update. Raises raftcore's errors."""
        update = self.raft.step(event)
        self._handle(update)
        return update

    def _handle(self, update: Update) -> None:
        flags = int(update.flags)  # int operations: IntFlag ones cost microseconds
        if update.entries:
            self._space.account(update.entries_index, update.entries, self.applied_index)
        if update.messages or flags & _PERSIST:
            self.outbox.add(update, self.raft.current_term, self.raft.voted_for)
            assert self._flusher is not None
            self._flusher.schedule()
        if update.snapshot is not None:
            self._flush()  # earlier log writes land before the snapshot replaces the log
            self.snapshots.install_received(update.snapshot.metadata)
        if flags & _STATE:
            self._on_state_change()
        if flags & _COMMIT_INDEX:
            assert self._flusher is not None
            self._flusher.landed()
            self.committed_entries = max(self.committed_entries, self.raft.commit_index)
            self._schedule_apply()
            self._notify_configuration()
        if flags & _READS:
            for read_id, index in update.reads:
                self.reads.ready(read_id, index)
            assert self._read_scheduler is not None
            self._read_scheduler.round_ended()
        if flags & _TIMEOUT or self._timer is None:
            self._arm_timer()
        leader_id = self.raft.leader[0]
        if leader_id != self._leader_known:
            # Also without a STATE change: a follower learns a new leader from its
            # first AppendEntries, and a request waiting for a leader goes on then.
            self._leader_known = leader_id
            if leader_id:
                self.leader_event.set()
            else:
                self.leader_event.clear()
        for hook in self.on_update_hooks:
            hook(update)

    def _in_flight(self) -> bool:
        """Our writes have not landed: a disk write is running, or (leader) the
        last flush's entries are not committed yet (and still in our log)."""
        if self._persists_in_flight:
            return True
        return (
            self.raft.state == State.LEADER
            and self.raft.commit_index < self._flushed_index <= self.raft.last_index
        )

    def _flush(self) -> None:
        """Carry out the merged work of this loop turn (see outbox)."""
        assert self._flusher is not None
        self._flusher.flushing()
        if not self.outbox or self._stopped:
            return
        turn = self.outbox.take()
        if turn.persist is not None:
            self._persist(turn.persist, turn.hard_state, turn.last_index)
            if turn.last_index:
                self._flushed_index = turn.last_index
        if turn.messages:
            self._send(turn.messages)

    def _persist(self, request: Persist, hard_state: bool, last: int) -> None:
        assert self.committer is not None and self._loop is not None
        last_term = request.entries[-1].term if request.entries else 0
        done: asyncio.Future[None] | None = None
        if hard_state:
            done = self._loop.create_future()
            self._hardstate_pending = done

        started = time.perf_counter()
        self._persists_in_flight += 1

        def on_done(_: int | None, exc: BaseException | None) -> None:
            self._persists_in_flight -= 1
            if exc is not None:
                self._die(f"cannot persist the Raft log: {exc}", exc)
                return
            assert self._flusher is not None
            self._flusher.landed()
            self.metrics.persist_seconds.observe(time.perf_counter() - started)
            if done is not None:
                done.set_result(None)
                if self._hardstate_pending is done:
                    self._hardstate_pending = None
            if last and not self._stopped:
                self._space.refresh(self.applied_index)  # reported in this step's answer
                self.step(
                    Event.persisted_entries(
                        self.now(), last, term=last_term, capacity=self.capacity
                    )
                )

        self.committer.submit_persist(request, on_done)

    def _send(self, messages: list[Message]) -> None:
        """Send now, or after the term/vote write in flight (order is kept)."""
        pending = self._hardstate_pending
        if pending is not None and not pending.done():
            pending.add_done_callback(lambda _: self._send_now(messages))
        else:
            self._send_now(messages)

    def _send_now(self, messages: list[Message]) -> None:
        if self._stopped or self.transport is None:
            return
        plain = []
        for message in messages:
            if message.type == 5:  # InstallSnapshot: the data goes its own way
                self.snapshots.send(message)
            else:
                plain.append(message)
        if plain:
            now = time.perf_counter()
            for message in plain:
                if message.type == 1 and message.server_id not in self._rtt_sent:
                    self._rtt_sent[message.server_id] = now
            self.transport.send(plain)

    def receive(self, messages: list[Message]) -> None:
        """Messages from a peer (the transport checked cluster and sender)."""
        now = self.now()
        heard_at = self._loop.time() if self._loop is not None else 0.0
        for message in messages:
            self.last_heard[message.server_id] = heard_at
            if message.type == 2:  # AppendEntriesResult: a round trip ends
                sent = self._rtt_sent.pop(message.server_id, None)
                if sent is not None:
                    self.metrics.peer_rtt_seconds.labels(str(message.server_id)).observe(
                        time.perf_counter() - sent
                    )
            try:
                self.step(Event.receive(now, message, capacity=self.capacity))
            except RaftError as exc:
                log.warning("refused a message from %d: %s", message.server_id, exc)

    def accepts_from(self, server_id: int) -> bool:
        """Members, and unknown ids only while this node does not vote: a member
        that is joining (its configuration is empty) or a stand-by may hear from a
        leader added by entries it has not received yet. A voter refuses strangers
        (a bogus vote could unseat it); everyone refuses members it saw removed."""
        configuration = self.raft.configuration
        if server_id in configuration:
            return True
        if server_id in self.removed:
            return False
        return server_id in self.config.initial_cluster or not configuration.is_voter(
            self.config.id
        )

    def _on_state_change(self) -> None:
        state = self.raft.state
        if state == State.LEADER:
            self.leader_changes += 1
            log.info("node %d leads term %d", self.config.id, self.raft.current_term)
        elif self.proposals or self.reads.forming:
            self.proposals.fail_all(LeadershipLost("leadership lost before the write committed"))
            self.reads.fail_all(NotLeaderError("leadership lost before the read was confirmed"))

    def _die(self, reason: str, exc: BaseException) -> None:
        log.critical("node %d stops: %s", self.config.id, reason)
        if self.fatal is not None and not self.fatal.done():
            self.fatal.set_result(exc)

    # -- client writes and reads --------------------------------------------------

    async def propose(
        self, data: bytes, operation: Operation | None = None, deadline: float = 0.0
    ) -> Result | None:
        """Submit one client write; returns its result once applied here.

        ``operation`` is ``data`` decoded (the leader then applies it without
        decoding again); ``deadline`` (loop time, 0 for none) bounds the wait.
        Raises NotLeaderError (not applied), raftcore's NoSpace (not applied),
        LeadershipLost or WriteTimeout (outcome unknown)."""
        entry = Entry(self.raft.current_term, EntryType.COMMAND, data)
        failed = self.metrics.proposals_failed
        threshold = self.config.capacity_threshold
        try:
            if self.raft.state == State.LEADER and threshold and self.capacity < threshold:
                # raftcore refuses once a majority *reports* too little space, but
                # followers report it only after storing what they were sent, so a
                # burst of writes would all be accepted first. The leader stores
                # every entry too and knows at once what it accepted.
                raise RaftNoSpace(
                    f"member {self.config.id} has {self.capacity} bytes of map space "
                    f"left for new entries, less than {threshold}"
                )
            self.step(Event.submit(self.now(), [entry], capacity=self.capacity))
        except RaftNotLeader as exc:
            failed.labels("not_leader").inc()
            raise NotLeaderError(str(exc)) from exc
        except RaftError as exc:
            failed.labels(exc.code.removeprefix("RAFT_").lower()).inc()
            raise
        future = self.proposals.add(self.raft.last_index, entry.term, operation, deadline)
        if deadline and self._expiry is None:
            assert self._loop is not None
            self._expiry = self._loop.call_later(_EXPIRY_INTERVAL, self._expire_proposals)
        try:
            result: Result | None = await future
        except LeadershipLost:
            failed.labels("leadership_lost").inc()
            raise
        self.metrics.proposals_applied += 1
        return result

    def _expire_proposals(self) -> None:
        """Every few ms while writes with a deadline wait: fail the late ones."""
        assert self._loop is not None
        self._expiry = None
        self.proposals.expire(self._loop.time())
        if self.proposals.have_deadlines and not self._stopped:
            self._expiry = self._loop.call_later(_EXPIRY_INTERVAL, self._expire_proposals)

    async def read_index(self) -> None:
        """Return once a read here would see every write acknowledged before the call."""
        future, first = self.reads.join()
        assert self._read_scheduler is not None
        self._read_scheduler.joined(first)
        index = await future
        await self.applied_waiters.wait(index, self.applied_index)

    def _flush_reads(self, even_in_flight: bool = False) -> None:
        if not self.reads.forming or (self.reads.in_flight and not even_in_flight):
            return
        read_id, _ = self.reads.seal()
        assert self._read_scheduler is not None
        self._read_scheduler.started()
        try:
            self.step(Event.read_index(self.now(), read_id, capacity=self.capacity))
        except RaftError as exc:
            self.reads.fail_round(read_id, NotLeaderError(str(exc)))
            return
        if self._flusher is not None and self._flusher.waiting:
            self._flush()  # the round's heartbeats do not wait for writes in flight

    async def wait_applied(self, index: int) -> None:
        await self.applied_waiters.wait(index, self.applied_index)

    # -- applying committed entries ---------------------------------------------

    def _schedule_apply(self) -> None:
        if (
            self._applies_in_flight >= _APPLIES_IN_FLIGHT
            or self._stopped
            or self.snapshots.installing
        ):
            return
        first = max(self.applied_index, self._apply_submitted) + 1
        last = min(self.raft.commit_index, first + _APPLY_BATCH - 1)
        if last < first:
            return
        entries = self.raft.log.slice(first, last - first + 1)
        if len(entries) != last - first + 1:
            log.error("entries %d..%d to apply are not in memory", first, last)
            return
        batch, changes = operations(first, entries, self.proposals, self.codec)
        self._applies_in_flight += 1
        self._apply_submitted = last
        terms = [entry.term for entry in entries]
        assert self.committer is not None
        started = time.perf_counter()

        def on_done(results: list[Result | None] | None, exc: BaseException | None) -> None:
            self._applies_in_flight -= 1
            self.metrics.apply_seconds.observe(time.perf_counter() - started)
            if exc is not None or results is None:
                self._die(f"cannot apply entries {first}..{last}: {exc}", exc or RuntimeError())
                return
            self._applied(first, last, terms, results, changes)

        assert self._loop is not None
        work = apply_work(self.storage.data, first, last, batch, terms, self.proposals, self._loop)
        self.committer.submit(work, on_done, durable=False)  # the log can redo it

    def _applied(
        self,
        first: int,
        last: int,
        terms: list[int],
        results: list[Result | None],
        changes: list[tuple[int, Configuration]],
    ) -> None:
        self.applied_index = max(self.applied_index, last)
        for offset, result in enumerate(results):
            self.proposals.applied(first + offset, terms[offset], result)
        if changes:
            history = [self.applied_conf[0]] + [conf for _, conf in changes]
            self.removed = (self.removed | removed_members(history)) - {
                s.id for s in changes[-1][1]
            }
            index, conf = changes[-1]
            self.applied_conf = (conf, index)
            if self.transport is not None:
                self.transport.update_peers(
                    {s.id: s.address for s in conf if s.id != self.config.id}
                )
        self._space.refresh(self.applied_index)
        self._notify_configuration()
        self.applied_waiters.advance(self.applied_index)
        self.snapshots.maybe_take()
        self._schedule_apply()

    def _notify_configuration(self) -> None:
        """Tell raftcore a pending change committed once it is applied here (also
        for a change applied before a restart, which is not applied again)."""
        pending = self.raft.configuration_pending_index
        if pending and pending <= min(self.raft.commit_index, self.applied_index):
            self.step(
                Event.configuration(
                    self.now(), pending, self.raft.configuration, capacity=self.capacity
                )
            )

    @property
    def capacity(self) -> int:
        return self._space.value
