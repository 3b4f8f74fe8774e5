"""A simulated disk for one server: what survives a crash, and when.

Term and vote are written synchronously (before the update's messages leave),
as C-Raft requires. Entry writes complete in order after a random delay; a
crash loses every write that has not completed, which is exactly the window a
real fsync-based store has. Snapshot writes queue behind the entry writes
before them, so the disk always holds a state the server once had in memory:
a received snapshot replaces the log, a snapshot the application took drops
the entries before it but ``trailing``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from raftcore import Entry
from tests.sim.app import Snapshot
from tests.sim.log import Log


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """An entries write in flight: replace the log from ``index`` with ``entries``."""

    done_at: int
    index: int
    entries: tuple[Entry, ...]

    @property
    def last_index(self) -> int:
        return self.index + len(self.entries) - 1


@dataclass(frozen=True, slots=True)
class SnapshotWrite:
    """A snapshot write in flight; ``trailing`` None: received, it replaces the log."""

    done_at: int
    snapshot: Snapshot
    trailing: int | None


class Disk:
    """Durable term, vote, log and snapshot metadata, plus the writes still in flight."""

    def __init__(self, rng: random.Random, min_delay: int = 1, max_delay: int = 15) -> None:
        self._rng = rng
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.term = 0
        self.voted_for = 0
        self.log = Log()
        self.snapshot: Snapshot | None = None
        self._pending: deque[PendingWrite | SnapshotWrite] = deque()

    def bootstrap(self, term: int, voted_for: int, entries: Sequence[Entry]) -> None:
        """Format the disk as a fresh cluster member would be."""
        self.term, self.voted_for = term, voted_for
        self.log = Log(1, entries)

    def save_term_vote(self, term: int, voted_for: int) -> None:
        self.term, self.voted_for = term, voted_for

    def queue_write(self, now: int, index: int, entries: Sequence[Entry]) -> PendingWrite:
        """Start an entries write; it completes no earlier than the writes before it."""
        write = PendingWrite(self._done_at(now), index, tuple(entries))
        self._pending.append(write)
        return write

    def queue_snapshot(self, now: int, snapshot: Snapshot, trailing: int | None) -> SnapshotWrite:
        """Start a snapshot write (``trailing`` None for a received one)."""
        write = SnapshotWrite(self._done_at(now), snapshot, trailing)
        self._pending.append(write)
        return write

    def _done_at(self, now: int) -> int:
        done_at = now + self._rng.randint(self.min_delay, self.max_delay)
        if self._pending:
            done_at = max(done_at, self._pending[-1].done_at)
        return done_at

    def complete_next(self) -> PendingWrite | SnapshotWrite:
        """Make the oldest write durable and return it."""
        write = self._pending.popleft()
        if type(write) is PendingWrite:
            self.log.write(write.index, write.entries)
            return write
        assert type(write) is SnapshotWrite
        metadata = write.snapshot.metadata
        if write.trailing is None:
            self.snapshot = write.snapshot
            self.log = Log(metadata.index + 1, (), metadata.term)
        elif self.snapshot is None or self.snapshot.index < metadata.index:
            # (A snapshot taken while a newer one was being received is stale.)
            self.snapshot = write.snapshot
            self.log.compact(metadata.index - write.trailing + 1)
        return write

    def holds(self, index: int, term: int) -> bool:
        """Whether entry ``index`` (of ``term``; 0: unknown) is durable, maybe in the snapshot."""
        if self.snapshot is not None and index <= self.snapshot.index:
            return True
        log = self.log
        return log.start - 1 <= index <= log.last_index and term in (0, log.term_at(index))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def crash(self) -> None:
        """Lose every write that has not completed."""
        self._pending.clear()
