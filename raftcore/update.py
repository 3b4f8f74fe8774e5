"""What a ``step`` asks the caller to do (C-Raft's ``struct raft_update``).

The caller persists term and vote before sending any message of the same
update, persists ``entries`` from ``entries_index`` (replacing any suffix
from there), persists ``snapshot``, sends ``messages`` and re-arms its timer
at ``Raft.timeout`` when TIMEOUT is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntFlag

from raftcore.messages import Message
from raftcore.types import Entry, SnapshotMetadata


class UpdateFlags(IntFlag):
    NONE = 0
    CURRENT_TERM = 1
    VOTED_FOR = 2
    ENTRIES = 4
    SNAPSHOT = 8
    MESSAGES = 16
    STATE = 32
    COMMIT_INDEX = 64
    TIMEOUT = 128
    READS = 256  # beyond C-Raft: read indexes are ready in Update.reads


@dataclass(frozen=True, slots=True)
class SnapshotUpdate:
    """A snapshot (received by InstallSnapshot) to persist; one chunk, offset 0, last."""

    metadata: SnapshotMetadata
    offset: int
    chunk: bytes
    last: bool


@dataclass(slots=True)
class Update:
    flags: UpdateFlags = UpdateFlags.NONE
    entries_index: int = 0
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotUpdate | None = None
    messages: list[Message] = field(default_factory=list)
    reads: list[tuple[int, int]] = field(default_factory=list)  # (read_id, read index)

    def add_entries(self, index: int, entries: list[Entry]) -> None:
        """Merge an append at ``index`` into this update (a later truncation wins)."""
        if not entries:
            return
        if not self.entries or index < self.entries_index:
            self.entries_index = index
            self.entries = list(entries)
            return
        del self.entries[index - self.entries_index :]
        self.entries.extend(entries)
