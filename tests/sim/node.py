"""The simulated I/O layer of one server: what a real node loop does around ``Raft.step``.

For every update it persists term and vote (synchronously, before any message
of that update leaves), queues entry writes on the simulated disk, sends the
messages, re-arms the timer and applies newly committed entries, stepping a
CONFIGURATION event for each applied CHANGE entry. It also checks the parts of
the update contract that a real I/O layer silently relies on (e.g. that a
changed vote is flagged, or it would never reach the disk), and durability
against the simulated disks: a follower acknowledges only entries it holds on
disk, and a leader commits only an entry that a majority of voters hold on disk.

Snapshots: the application (``tests.sim.app``) takes them when the scenario
says (``take_snapshot``), and a received one is written to the disk and
stepped back as PERSISTED_SNAPSHOT once durable; the application then starts
over from its state, as it does at restart from the disk's snapshot.
"""

from __future__ import annotations

import time as wallclock
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from raftcore import (
    Entry,
    EntryType,
    Event,
    InstallSnapshot,
    Raft,
    SnapshotMetadata,
    SnapshotUpdate,
    State,
    Update,
    UpdateFlags,
)
from tests.sim.app import App, Snapshot
from tests.sim.disk import Disk, SnapshotWrite
from tests.sim.log import Log

if TYPE_CHECKING:
    from tests.sim.cluster import Cluster

# Plain ints: testing IntFlag members costs more than the rest of carrying out an update.
_TERM_OR_VOTE = int(UpdateFlags.CURRENT_TERM | UpdateFlags.VOTED_FOR)
_ENTRIES = int(UpdateFlags.ENTRIES)
_SNAPSHOT = int(UpdateFlags.SNAPSHOT)
_MESSAGES = int(UpdateFlags.MESSAGES)
_STATE = int(UpdateFlags.STATE)
_COMMIT_INDEX = int(UpdateFlags.COMMIT_INDEX)
_TIMEOUT = int(UpdateFlags.TIMEOUT)
_READS = int(UpdateFlags.READS)


class Node:
    """One server: its disk survives crashes, everything else is one ``life``."""

    def __init__(self, cluster: Cluster, server_id: int, disk: Disk) -> None:
        self.cluster = cluster
        self.id = server_id
        self.address = f"s{server_id}"
        self.disk = disk
        self.raft: Raft | None = None
        self.life = 0
        self.log = Log()  # the in-memory log, as this life's updates described it
        self.applied: list[tuple[int, int, EntryType, bytes]] = []
        self.last_applied = 0
        self.app = App()
        self.snapshot: Snapshot | None = None  # the last one taken or installed
        self.step_seconds = 0.0  # CPU time inside Raft.step (for the benchmark)
        self._timer = 0  # token of the one armed timer; older timer events are stale
        self._deadline: int | None = None  # what the armed timer was set to; None once fired
        self._commit = 0
        self._applying = False
        self.paused_until = 0

    @property
    def alive(self) -> bool:
        return self.raft is not None

    @property
    def paused(self) -> bool:
        return self.paused_until > self.cluster.now

    def pause(self, until: int) -> None:
        """Stop processing (a GC pause, SIGSTOP) until ``until``: nothing is lost, all is late."""
        self.paused_until = max(self.paused_until, until)
        self.cluster.trace.add(self.cluster.now, "s{} PAUSE until {}", self.id, until)

    def defer_while_paused(self, action: Callable[..., None], *args: Any) -> bool:
        """Queue ``action`` again for when the pause ends; True if it was deferred."""
        if self.paused_until <= self.cluster.now:
            return False
        self.cluster.schedule(self.paused_until, action, *args)
        return True

    @property
    def state(self) -> State | None:
        return None if self.raft is None else self.raft.state

    # life cycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Boot from what the disk holds, as a restarted process would."""
        cluster = self.cluster
        self.life += 1
        self.raft = Raft(
            id=self.id,
            address=self.address,
            seed=cluster.raft_seed(self.id, self.life),
            **cluster.options.raft_kwargs(),
        )
        disk = self.disk
        self.log = disk.log.copy()
        self.applied = []
        self.snapshot = disk.snapshot
        self.app = App(self.snapshot)
        self.last_applied = self.app.index
        self._commit = 0
        if self.snapshot is not None:
            cluster.observer.snapshot(self.id, "restored", self.snapshot, 0)
        cluster.trace.add(
            cluster.now,
            "s{} start life {} term {} vote {} log {} snapshot {}",
            self.id,
            self.life,
            disk.term,
            disk.voted_for,
            repr(disk.log),  # now: the disk changes later
            0 if disk.snapshot is None else disk.snapshot.index,
        )
        self.step(
            Event.start(
                cluster.now,
                disk.term,
                disk.voted_for,
                None if disk.snapshot is None else disk.snapshot.metadata,
                disk.log.start,
                disk.log.entries,
            )
        )

    def crash(self) -> None:
        """Lose memory and unfinished writes; pending timer and disk events go stale."""
        self.raft = None
        self.disk.crash()
        self.paused_until = 0
        self._timer += 1
        self.cluster.observer.crashed(self.id)
        self.cluster.trace.add(self.cluster.now, "s{} CRASH", self.id)

    # stepping -----------------------------------------------------------------------

    def step(self, event: Event) -> None:
        """Step ``event`` and carry out its update; RaftError propagates, changing nothing."""
        raft = self.raft
        assert raft is not None, "stepping a crashed server"
        state, term = raft.state, raft.current_term
        started = wallclock.process_time()
        update = raft.step(event)
        self.step_seconds += wallclock.process_time() - started
        self._carry_out(update, state, term)

    def _carry_out(self, update: Update, state: State, term: int) -> None:
        raft = self.raft
        assert raft is not None
        cluster = self.cluster
        observer = cluster.observer
        flags = int(update.flags)
        if flags & _TERM_OR_VOTE:
            self.disk.save_term_vote(raft.current_term, raft.voted_for)
            observer.voted(self.id, raft.current_term, raft.voted_for)
        if (raft.current_term, raft.voted_for) != (self.disk.term, self.disk.voted_for):
            cluster.fail(
                f"contract: s{self.id} term/vote is {raft.current_term}/{raft.voted_for} but the "
                f"update did not flag it (disk has {self.disk.term}/{self.disk.voted_for})"
            )
        if flags & _SNAPSHOT and update.snapshot is not None:
            self._persist_snapshot(update.snapshot)
        if flags & _ENTRIES and update.entries:
            self._write_entries(update.entries_index, update.entries, state, term)
        if flags & _MESSAGES:
            for message in update.messages:
                cluster.send(self, message)
        if flags & _READS:
            for read_id, index in update.reads:
                observer.read(self.id, read_id, index)
        if flags & _TIMEOUT:
            self._arm(raft.timeout)
        elif raft.timeout != self._deadline:
            cluster.fail(
                f"contract: s{self.id} timeout is {raft.timeout}, the timer is armed at "
                f"{self._deadline} and the update has no TIMEOUT flag"
            )
        if raft.state != state or raft.current_term != term:
            cluster.trace.add(
                cluster.now, "s{} is {} in term {}", self.id, raft.state.name, raft.current_term
            )
            if raft.state != state and not flags & _STATE:
                cluster.fail(f"contract: s{self.id} changed state without the STATE flag")
        if raft.last_index != self.log.last_index:
            cluster.fail(
                f"contract: s{self.id} reports last index {raft.last_index}, its updates "
                f"described {self.log.last_index}"
            )
        commit = raft.commit_index
        if commit != self._commit:
            if not flags & _COMMIT_INDEX:
                cluster.fail(
                    f"contract: s{self.id} commit index {self._commit} -> {commit} unflagged"
                )
            if commit > self._commit and raft.state == State.LEADER:
                self._check_durable_majority(commit)
        self._commit = commit
        observer.after_step(
            self.id, self.life, raft.state == State.LEADER, raft.current_term, commit, self.log
        )
        if not self._applying:
            self._apply()

    def _write_entries(
        self, index: int, entries: list[Entry], state_before: State, term_before: int
    ) -> None:
        raft = self.raft
        assert raft is not None
        cluster = self.cluster
        log = self.log
        if (
            index <= log.last_index
            and state_before == State.LEADER == raft.state
            and term_before == raft.current_term
        ):
            cluster.observer.leader_wrote(
                self.id, term_before, index, log.entries[index - log.start :], entries
            )
        try:
            log.write(index, entries)
        except ValueError as exc:
            cluster.fail(f"contract: s{self.id} entries update: {exc}")
        cluster.observer.wrote(f"s{self.id} memory", log, index, len(entries))
        write = self.disk.queue_write(cluster.now, index, entries)
        cluster.schedule(write.done_at, self._write_done, self.life)

    def _check_durable_majority(self, index: int) -> None:
        raft = self.raft
        assert raft is not None
        term = self.log.term_at(index)
        voters = raft.configuration.voter_ids()
        holders = [i for i in voters if term and self.cluster.nodes[i].disk.holds(index, term)]
        if 2 * len(holders) <= len(voters):
            self.cluster.fail(
                f"durability: s{self.id} committed index {index} (term {term}) but only "
                f"{holders or 'none'} of voters {voters} have it on disk"
            )

    def check_acknowledged(self, index: int) -> None:
        """A success AppendEntriesResult up to ``index`` is about to leave this server."""
        disk_log = self.disk.log
        if not self.disk.holds(index, self.log.term_at(index)):
            self.cluster.fail(
                f"durability: s{self.id} acknowledged entries up to {index} (term "
                f"{self.log.term_at(index)}), its disk holds {disk_log} with term "
                f"{disk_log.term_at(index)} there"
            )

    # snapshots ----------------------------------------------------------------------

    def _persist_snapshot(self, update: SnapshotUpdate) -> None:
        """Queue the received snapshot's write; PERSISTED_SNAPSHOT follows once durable."""
        if not (update.offset == 0 and update.last):
            self.cluster.fail(f"contract: s{self.id} snapshot update in chunks: {update}")
        snapshot = Snapshot(update.metadata, update.chunk)
        write = self.disk.queue_snapshot(self.cluster.now, snapshot, None)
        self.cluster.schedule(write.done_at, self._write_done, self.life)

    def _installed(self, life: int, snapshot: Snapshot) -> None:
        """The received snapshot is durable: the application and the log start over from it."""
        if life != self.life or self.raft is None:
            return
        if self.defer_while_paused(self._installed, life, snapshot):
            return
        metadata = snapshot.metadata
        self.cluster.observer.snapshot(self.id, "installed", snapshot, self.last_applied)
        self.log = Log(metadata.index + 1, (), metadata.term)
        self.snapshot = snapshot
        self.app = App(snapshot)
        self.last_applied = metadata.index
        self.step(Event.persisted_snapshot(self.cluster.now, metadata, 0, True))

    def take_snapshot(self, trailing: int) -> None:
        """The application snapshots what it applied; raftcore keeps ``trailing`` entries."""
        snapshot = self.app.snapshot()
        cluster = self.cluster
        cluster.trace.add(cluster.now, "s{} snapshot at {}", self.id, snapshot.index)
        self.step(Event.snapshot(cluster.now, snapshot.metadata, trailing))
        cluster.observer.snapshot(self.id, "took", snapshot, self.last_applied)
        self.snapshot = snapshot
        self.log.compact(snapshot.index - trailing + 1)
        write = self.disk.queue_snapshot(cluster.now, snapshot, trailing)
        cluster.schedule(write.done_at, self._write_done, self.life)

    def fill_snapshot(self, message: InstallSnapshot) -> InstallSnapshot:
        """The data of an InstallSnapshot raftcore is sending: this server's snapshot."""
        snapshot = self.snapshot
        if snapshot is None or snapshot.metadata != SnapshotMetadata(
            message.last_index, message.last_term, message.conf, message.conf_index
        ):
            self.cluster.fail(
                f"contract: s{self.id} sends {message} but its snapshot is "
                f"{None if snapshot is None else snapshot.metadata}"
            )
            raise AssertionError("unreachable")
        return replace(message, data=snapshot.state)

    # writes and timers ----------------------------------------------------------------

    def _write_done(self, life: int) -> None:
        if life != self.life or self.raft is None:
            return
        write = self.disk.complete_next()
        cluster = self.cluster
        if type(write) is SnapshotWrite:
            cluster.trace.add(
                cluster.now, "s{} persisted snapshot {}", self.id, write.snapshot.index
            )
            if write.trailing is None:
                self._installed(self.life, write.snapshot)
            return
        cluster.observer.wrote(f"s{self.id} disk", self.disk.log, write.index, len(write.entries))
        cluster.trace.add(
            cluster.now, "s{} persisted {}..{}", self.id, write.index, write.last_index
        )
        self._persisted(self.life, write.last_index, write.entries[-1].term)

    def _persisted(self, life: int, index: int, term: int) -> None:
        """Tell raftcore a write landed (the write itself does not wait for a pause)."""
        if life != self.life or self.raft is None:
            return
        if not self.defer_while_paused(self._persisted, life, index, term):
            self.step(Event.persisted_entries(self.cluster.now, index, term=term))

    def _arm(self, deadline: int) -> None:
        self._timer += 1
        self._deadline = deadline
        cluster = self.cluster
        cluster.schedule(max(deadline, cluster.now), self._fire, self.life, self._timer)

    def _fire(self, life: int, token: int) -> None:
        if life != self.life or token != self._timer or self.raft is None:
            return
        if self.defer_while_paused(self._fire, life, token):
            return
        self.cluster.trace.add(self.cluster.now, "s{} timeout", self.id)
        self._deadline = None
        self.step(Event.timeout(self.cluster.now))

    # application --------------------------------------------------------------------

    def _apply(self) -> None:
        """Apply committed entries in order; a CHANGE entry is stepped back as CONFIGURATION."""
        raft = self.raft
        assert raft is not None
        cluster = self.cluster
        self._applying = True
        try:
            while self.last_applied < raft.commit_index:
                index = self.last_applied + 1
                entry = self.log.get(index)
                if entry is None:
                    cluster.fail(f"s{self.id} must apply index {index}, missing from {self.log}")
                    return
                self.last_applied = index
                self.app.apply(index, entry)
                self.applied.append((index, entry.term, entry.type, entry.data))
                cluster.observer.applied(self.id, index, entry)
                if entry.type == EntryType.CHANGE:
                    self.step(Event.configuration(cluster.now, index, self.app.configuration))
                cluster.on_applied(self, index, entry)
        finally:
            self._applying = False

    def describe(self) -> str:
        raft = self.raft
        snapshot = "" if self.disk.snapshot is None else f" snapshot {self.disk.snapshot.index}"
        if raft is None:
            return (
                f"s{self.id} DOWN     disk term {self.disk.term} vote {self.disk.voted_for} "
                f"log {self.disk.log}{snapshot}"
            )
        leader = raft.leader[0]
        role = "-" if raft.role is None else raft.role.name
        return (
            f"s{self.id} {raft.state.name:<9} term {raft.current_term} vote {raft.voted_for} "
            f"leader {leader} last {raft.last_index} commit {raft.commit_index} applied "
            f"{self.last_applied} persisted {self.disk.log.last_index} (+{self.disk.pending} "
            f"writes){snapshot} {role}"
        )
