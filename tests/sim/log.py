"""A log as the simulator sees it: entries from ``start`` on.

Both a server's durable disk log and its in-memory view (what its updates
described so far) are ``Log`` objects, so the invariant checker can treat them
alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from raftcore import Entry


class Log:
    """Entries ``start``..``last_index``; ``base_term`` is the term of entry ``start - 1``."""

    __slots__ = ("base_term", "entries", "start")

    def __init__(self, start: int = 1, entries: Sequence[Entry] = (), base_term: int = 0) -> None:
        self.start = start
        self.entries: list[Entry] = list(entries)
        self.base_term = base_term

    @property
    def last_index(self) -> int:
        return self.start + len(self.entries) - 1

    def get(self, index: int) -> Entry | None:
        offset = index - self.start
        if 0 <= offset < len(self.entries):
            return self.entries[offset]
        return None

    def term_at(self, index: int) -> int:
        """The term of ``index``; ``base_term`` just before the start, 0 when unknown."""
        if index == self.start - 1:
            return self.base_term
        entry = self.get(index)
        return 0 if entry is None else entry.term

    def write(self, index: int, entries: Sequence[Entry]) -> None:
        """Replace everything from ``index`` on with ``entries`` (a C-Raft entries update)."""
        if not self.start <= index <= self.last_index + 1:
            raise ValueError(
                f"write at {index} outside {self.start}..{self.last_index + 1} (a gap in the log)"
            )
        del self.entries[index - self.start :]
        self.entries.extend(entries)

    def compact(self, first_kept: int) -> None:
        """Forget the entries before ``first_kept`` (a snapshot covers them)."""
        drop = min(first_kept, self.last_index + 1) - self.start
        if drop > 0:
            self.base_term = self.entries[drop - 1].term
            del self.entries[:drop]
            self.start += drop

    def copy(self) -> Log:
        return Log(self.start, self.entries, self.base_term)

    def __repr__(self) -> str:
        return f"Log({self.start}..{self.last_index})"
