"""A simulated disk for one server: what survives a crash, and when.

Term and vote are written synchronously (before the update's messages leave),
as C-Raft requires. Entry writes complete in order after a random delay; a
crash loses every write that has not completed, which is exactly the window a
real fsync-based store has.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from raftcore import Entry, SnapshotMetadata
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


class Disk:
    """Durable term, vote, log and snapshot metadata, plus the writes still in flight."""

    def __init__(self, rng: random.Random, min_delay: int = 1, max_delay: int = 15) -> None:
        self._rng = rng
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.term = 0
        self.voted_for = 0
        self.log = Log()
        # Issue 3 (snapshots) will fill this in; restart already passes it to START.
        self.snapshot: SnapshotMetadata | None = None
        self._pending: deque[PendingWrite] = deque()

    def bootstrap(self, term: int, voted_for: int, entries: Sequence[Entry]) -> None:
        """Format the disk as a fresh cluster member would be."""
        self.term, self.voted_for = term, voted_for
        self.log = Log(1, entries)

    def save_term_vote(self, term: int, voted_for: int) -> None:
        self.term, self.voted_for = term, voted_for

    def queue_write(self, now: int, index: int, entries: Sequence[Entry]) -> PendingWrite:
        """Start an entries write; it completes no earlier than the writes before it."""
        done_at = now + self._rng.randint(self.min_delay, self.max_delay)
        if self._pending:
            done_at = max(done_at, self._pending[-1].done_at)
        write = PendingWrite(done_at, index, tuple(entries))
        self._pending.append(write)
        return write

    def complete_next(self) -> PendingWrite:
        """Make the oldest write durable and return it."""
        write = self._pending.popleft()
        self.log.write(write.index, write.entries)
        return write

    @property
    def pending(self) -> int:
        return len(self._pending)

    def crash(self) -> None:
        """Lose every write that has not completed."""
        self._pending.clear()
