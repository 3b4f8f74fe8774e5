"""The in-memory log: entries from the last snapshot's trailing point on.

It also tracks which prefix is durable. The I/O layer reports persistence by
index only, and a report may concern entries that a later truncation has
already replaced; so the log remembers the writes it asked for, in order, and
never counts an index as durable while a write that replaces it is pending.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftcore.types import Entry, EntryType


@dataclass(slots=True)
class _PendingWrite:
    first: int
    last: int
    last_term: int


class RaftLog:
    """Entries ``start .. last_index``; a snapshot may cover indexes up to ``snapshot_index``."""

    __slots__ = ("_pending", "entries", "persisted", "snapshot_index", "snapshot_term", "start")

    def __init__(self) -> None:
        self.start = 1
        self.entries: list[Entry] = []
        self.snapshot_index = 0
        self.snapshot_term = 0
        self.persisted = 0
        self._pending: list[_PendingWrite] = []

    # -- queries -------------------------------------------------------------

    @property
    def last_index(self) -> int:
        if self.entries:
            return self.start + len(self.entries) - 1
        return max(self.start - 1, self.snapshot_index)

    @property
    def last_term(self) -> int:
        return self.term_of(self.last_index) or 0

    def term_of(self, index: int) -> int | None:
        """The term of the entry at ``index``, or None when it is not known here."""
        position = index - self.start
        if 0 <= position < len(self.entries):
            return self.entries[position].term
        if index == self.snapshot_index:
            return self.snapshot_term
        if index == 0:
            return 0
        return None

    def get(self, index: int) -> Entry | None:
        position = index - self.start
        if 0 <= position < len(self.entries):
            return self.entries[position]
        return None

    def slice(self, first: int, limit: int) -> list[Entry]:
        """Up to ``limit`` entries from ``first`` on (``first`` must be kept)."""
        position = first - self.start
        return self.entries[position : position + limit]

    def has_entries_from(self, first: int) -> bool:
        """Whether entries from ``first`` on are all still kept (not compacted away)."""
        return first >= self.start or first > self.last_index

    def last_change_before(self, end: int) -> tuple[int, Entry] | None:
        """The last CHANGE entry with index < ``end`` that is still kept, if any."""
        position = min(end - self.start, len(self.entries)) - 1
        while position >= 0:
            entry = self.entries[position]
            if entry.type == EntryType.CHANGE:
                return self.start + position, entry
            position -= 1
        return None

    # -- changes -------------------------------------------------------------

    def restore(
        self,
        start: int,
        entries: list[Entry],
        snapshot_index: int,
        snapshot_term: int,
    ) -> None:
        """Load persisted state: everything given is durable."""
        self.start = start
        self.entries = list(entries)
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        if not self.entries:
            self.start = snapshot_index + 1
        self.persisted = self.last_index
        self._pending.clear()

    def append(self, entries: list[Entry]) -> int:
        """Append after the last entry; returns the index of the first one."""
        first = self.last_index + 1
        if not self.entries:
            self.start = first
        self.entries.extend(entries)
        self._pending.append(_PendingWrite(first, first + len(entries) - 1, entries[-1].term))
        return first

    def truncate(self, index: int) -> None:
        """Drop entries from ``index`` on; they are no longer durable either."""
        del self.entries[max(index - self.start, 0) :]
        self.persisted = min(self.persisted, index - 1)

    def compact(self, snapshot_index: int, snapshot_term: int, trailing: int) -> None:
        """Record a snapshot at ``snapshot_index`` and keep ``trailing`` entries before it."""
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        new_start = max(snapshot_index - trailing + 1, self.start)
        if new_start > self.start:
            del self.entries[: new_start - self.start]
            self.start = new_start
        if not self.entries:
            self.start = max(self.start, snapshot_index + 1)

    def install(self, snapshot_index: int, snapshot_term: int) -> None:
        """Replace the whole log with a snapshot received from the leader (now durable)."""
        self.entries = []
        self.start = snapshot_index + 1
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.persisted = snapshot_index
        self._pending.clear()

    def mark_persisted(self, index: int, term: int = 0) -> bool:
        """Record that the write ending at ``index`` (whose entry there has ``term``,
        if known) is durable, and so are the writes before it. True when
        ``persisted`` moved.

        Two pending writes may end at the same index when the second replaced
        the first's entries; the term tells them apart. Writes with the same
        last index and term hold the same entries (log matching), so taking
        the latest of them is safe. Without a term, the oldest write covering
        ``index`` is taken (reports come in order): at worst persistence is
        recognised late, never early.
        """
        covering = None
        if term:
            for position in range(len(self._pending) - 1, -1, -1):
                write = self._pending[position]
                if write.last == index and write.last_term == term:
                    covering = position
                    break
        else:
            for position, write in enumerate(self._pending):
                if write.first <= index <= write.last:
                    covering = position
                    break
        if covering is None and term and self.term_of(index) != term:
            return False  # the reported entries were replaced since
        if covering is not None:
            write = self._pending[covering]
            del self._pending[:covering]
            if index == write.last:
                del self._pending[0]
            else:
                write.first = index + 1
        bound = min(index, self.last_index)
        for write in self._pending:
            bound = min(bound, write.first - 1)
        if bound > self.persisted:
            self.persisted = bound
            return True
        return False
