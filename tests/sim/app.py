"""The replicated application of one simulated server, and its snapshots.

The state is a digest chained over every applied entry (index, term, type,
data): two servers hold the same digest at an index exactly when they applied
the same entries up to it. A snapshot is that digest plus the metadata raftcore
needs (index, term, and the configuration in force at the index); its digest
is what travels as ``InstallSnapshot.data``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from raftcore import Configuration, Entry, EntryType, SnapshotMetadata

INITIAL_STATE = b"\0" * 16


def chain(state: bytes, index: int, entry: Entry) -> bytes:
    """The state after applying ``entry`` at ``index`` to ``state``."""
    digest = hashlib.blake2b(state, digest_size=16)
    digest.update(b"%d/%d/%d/" % (index, entry.term, entry.type))
    digest.update(entry.data)
    return digest.digest()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The application state at ``metadata.index``; ``state`` is the snapshot's data."""

    metadata: SnapshotMetadata
    state: bytes

    @property
    def index(self) -> int:
        return self.metadata.index


class App:
    """Applies committed entries in order and can snapshot what it applied."""

    __slots__ = ("configuration", "configuration_index", "index", "state", "term")

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        if snapshot is None:
            self.index = self.term = self.configuration_index = 0
            self.state = INITIAL_STATE
            self.configuration = Configuration()
            return
        metadata = snapshot.metadata
        self.index, self.term = metadata.index, metadata.term
        self.state = snapshot.state
        self.configuration = metadata.configuration
        self.configuration_index = metadata.configuration_index

    def apply(self, index: int, entry: Entry) -> None:
        if index != self.index + 1:
            raise AssertionError(f"applying index {index} after {self.index}")
        self.index, self.term = index, entry.term
        self.state = chain(self.state, index, entry)
        if entry.type == EntryType.CHANGE:
            self.configuration = Configuration.decode(entry.data)
            self.configuration_index = index

    def snapshot(self) -> Snapshot:
        """A snapshot of everything applied so far."""
        metadata = SnapshotMetadata(
            self.index, self.term, self.configuration, self.configuration_index
        )
        return Snapshot(metadata, self.state)
