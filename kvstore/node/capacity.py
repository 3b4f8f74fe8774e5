"""The disk capacity a node reports to raftcore (C-Raft's ``capacity``).

Free map space minus what the log's unapplied entries will still take: each
is written to the log (unless already persisted) and to the data when
applied. Counting both copies until it is applied is conservative; counting
neither let a burst of writes near a full map be accepted and then fill the
map while being applied, which stops the node (a committed entry must be
applied).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from raftcore import Entry

# Map space an entry takes beyond its data (keys, record headers, B-tree slack).
ENTRY_OVERHEAD = 256
# Reading the map's fill level costs ~10 µs; a figure a few ms old is fine,
# since what was accepted since is counted in the unapplied bytes.
FREE_BYTES_MAX_AGE = 0.005  # seconds


class Capacity:
    def __init__(self, free_bytes: Callable[[], int]) -> None:
        self._read_free_bytes = free_bytes
        self.value = 0  # bytes, as last computed
        # (index, size) of the log entries not applied yet, and their total.
        self._unapplied: deque[tuple[int, int]] = deque()
        self._unapplied_bytes = 0
        self._free_bytes = 0
        self._free_read_at = float("-inf")

    def account(self, first: int, entries: Sequence[Entry], applied_index: int) -> None:
        """Entries from ``first`` on enter the log (replacing any suffix from there)."""
        unapplied = self._unapplied
        while unapplied and unapplied[-1][0] >= first:
            self._unapplied_bytes -= unapplied.pop()[1]
        for offset, entry in enumerate(entries):
            size = len(entry.data) + ENTRY_OVERHEAD
            unapplied.append((first + offset, size))
            self._unapplied_bytes += size
        self.refresh(applied_index)

    def refresh(self, applied_index: int) -> int:
        """Forget entries applied up to ``applied_index``; the capacity now."""
        unapplied = self._unapplied
        while unapplied and unapplied[0][0] <= applied_index:
            self._unapplied_bytes -= unapplied.popleft()[1]
        now = time.monotonic()
        if now - self._free_read_at > FREE_BYTES_MAX_AGE:
            self._free_bytes = self._read_free_bytes()
            self._free_read_at = now
        self.value = max(0, self._free_bytes - 2 * self._unapplied_bytes)
        return self.value
