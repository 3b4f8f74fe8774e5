"""Safety checks for runs with snapshots, membership changes and reads.

``ExtChecker`` adds to the ``Checker`` of ``tests/sim/invariants.py``:

- snapshots: a snapshot taken, received or restored holds exactly the state
  (the digest chained over the committed entries), term and configuration
  that the committed log has at its index, and installing one never takes a
  server's application back behind what it applied;
- configuration safety: a leader's log never holds more than one uncommitted
  CHANGE entry; a server whose removal committed in term T, once it has seen
  that commit, is never elected for a term above T in that life (ids are never
  reused, so it stays removed). A removed server that never learns of the commit (the
  leader stops sending to it) may still campaign in Raft as the dissertation
  has it (4.2.2: until it knows that the configuration leaving it out is
  committed), and then win: harmless, since it steps down when it applies it;
- linearizable reads: a read index is at least the highest index any
  application had applied (and so acknowledged to a client) when the read
  was asked.

The base checks already compare only what both sides still hold when logs are
compacted; the state digests cover the entries that snapshots replaced.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable

from raftcore import Configuration, Entry, EntryType
from tests.sim.app import INITIAL_STATE, Snapshot, chain
from tests.sim.invariants import Checker
from tests.sim.log import Log
from tests.sim.trace import Trace


class ExtChecker(Checker):
    def __init__(self, seed: int, trace: Trace, describe_state: Callable[[], str] | None = None):
        super().__init__(seed, trace, describe_state)
        # index -> the state after applying the committed entries up to it
        self._states: list[bytes | None] = [INITIAL_STATE]
        # the committed configurations, by index (first applications)
        self._conf_indexes: list[int] = []
        self._confs: list[Configuration] = []
        self._removed: dict[int, int] = {}  # server -> index of the change removing it
        self._aware: dict[int, int] = {}  # removed server -> life in which it saw that commit
        self._scanned: dict[int, tuple[int, int]] = {}  # leader -> (term, last index scanned)
        self._reads: dict[int, int] = {}  # read id -> the index it must reach
        self.reads_answered = 0
        self.snapshots: Counter[str] = Counter()  # how -> count

    # application state ----------------------------------------------------------------

    def applied(self, server_id: int, index: int, entry: Entry) -> None:
        super().applied(server_id, index, entry)
        states = self._states
        if index < len(states):
            return
        while len(states) < index:  # (cannot happen: somebody applied index - 1 first)
            states.append(None)
        before = states[index - 1]
        states.append(None if before is None else chain(before, index, entry))
        if entry.type == EntryType.CHANGE:
            conf = Configuration.decode(entry.data)
            if self._confs:
                for server in self._confs[-1]:
                    if server.id not in conf:
                        self._removed[server.id] = index
            self._conf_indexes.append(index)
            self._confs.append(conf)

    def snapshot(self, server_id: int, how: str, snapshot: Snapshot, applied: int) -> None:
        self.snapshots[how] += 1
        metadata = snapshot.metadata
        index = metadata.index
        what = f"s{server_id} {how} a snapshot at index {index}"
        if index < applied:
            self.fail(f"state machine safety: {what} after applying up to {applied}")
        state = self._states[index] if index < len(self._states) else None
        if state is not None and state != snapshot.state:
            self.fail(f"state machine safety: {what} with another state than the log's there")
        first = self._applied.get(index)
        if first is not None and first[1].term != metadata.term:
            self.fail(f"{what} of term {metadata.term}, the entry there has {first[1].term}")
        position = bisect.bisect_right(self._conf_indexes, index) - 1
        if position >= 0:
            expected = (self._conf_indexes[position], self._confs[position])
            found = (metadata.configuration_index, metadata.configuration)
            if found != expected:
                self.fail(f"{what} with configuration {found}, the log's is {expected}")

    # configuration safety -----------------------------------------------------------

    def after_step(
        self, server_id: int, life: int, is_leader: bool, term: int, commit: int, log: Log
    ) -> None:
        led = self._active.get(server_id)
        super().after_step(server_id, life, is_leader, term, commit, log)
        removal = self._removed.get(server_id)
        if removal is not None:
            if is_leader and (led is None or led[0] != term):
                self._check_not_removed(server_id, life, term, removal)
            if commit >= removal:
                self._aware[server_id] = life
        if not is_leader:
            return
        scanned_term, scanned = self._scanned.get(server_id, (0, 0))
        last = log.last_index
        if scanned_term == term and scanned >= last:
            return
        # Entries up to the highest index ever seen committed are committed.
        committed = len(self._committed) - 1
        first = max(committed + 1, log.start, scanned + 1 if scanned_term == term else 0)
        self._scanned[server_id] = (term, last)
        if scanned_term == term and not _changes(log, first, last):
            return
        uncommitted = _changes(log, max(committed + 1, log.start), last)
        if len(uncommitted) > 1:
            self.fail(
                f"configuration safety: s{server_id}, leader of term {term}, has uncommitted "
                f"changes at {uncommitted} (committed up to {committed})"
            )

    def _check_not_removed(self, server_id: int, life: int, term: int, removal: int) -> None:
        """``server_id`` was just elected for ``term``; the change at ``removal`` removed it."""
        known = self._committed[removal]
        if self._aware.get(server_id) == life and known is not None and known[0] < term:
            self.fail(
                f"configuration safety: s{server_id} was elected for term {term}, but it knew "
                f"that its removal at index {removal} was committed in term {known[0]}"
            )

    # reads ----------------------------------------------------------------------------

    def read_asked(self, read_id: int) -> None:
        """A read was just asked: its index must reach everything applied so far."""
        self._reads[read_id] = len(self._states) - 1

    def read_refused(self, read_id: int) -> None:
        del self._reads[read_id]

    def read(self, server_id: int, read_id: int, index: int) -> None:
        floor = self._reads.pop(read_id, None)
        if floor is None:
            self.fail(f"s{server_id} answered read {read_id}, asked of it once at most")
        elif index < floor:
            self.fail(
                f"linearizable reads: s{server_id} answered read {read_id} with index {index}, "
                f"but index {floor} was applied before the read was asked"
            )
        self.reads_answered += 1


def _changes(log: Log, first: int, last: int) -> list[int]:
    """Indexes of the CHANGE entries in ``log`` from ``first`` to ``last``."""
    entries, start = log.entries, log.start
    return [
        index for index in range(first, last + 1) if entries[index - start].type == EntryType.CHANGE
    ]
