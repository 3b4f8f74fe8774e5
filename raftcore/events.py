"""Events fed to ``Raft.step`` (C-Raft's ``struct raft_event``).

Every event carries ``time`` (milliseconds; raftcore reads no clock) and
``capacity`` (disk capacity the server has reserved, for the NoSpace check).
Build events with the class-method constructors, one per type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from raftcore.configuration import Configuration
from raftcore.messages import Message
from raftcore.types import Entry, SnapshotMetadata


class EventType(IntEnum):
    START = 1
    RECEIVE = 2
    PERSISTED_ENTRIES = 3
    PERSISTED_SNAPSHOT = 4
    CONFIGURATION = 5
    SNAPSHOT = 6
    TIMEOUT = 7
    SUBMIT = 8
    CATCH_UP = 9
    TRANSFER = 10
    READ_INDEX = 11  # beyond C-Raft: a linearizable read without a log entry


@dataclass(frozen=True, slots=True)
class Event:
    """One input to ``Raft.step``; only the fields of its ``type`` are meaningful."""

    type: EventType
    time: int
    capacity: int = 0
    term: int = 0
    voted_for: int = 0
    metadata: SnapshotMetadata | None = None
    start_index: int = 1
    entries: tuple[Entry, ...] = ()
    message: Message | None = None
    index: int = 0
    offset: int = 0
    last: bool = False
    conf: Configuration | None = None
    trailing: int = 0
    server_id: int = 0

    @classmethod
    def start(
        cls,
        time: int,
        term: int,
        voted_for: int,
        metadata: SnapshotMetadata | None,
        start_index: int,
        entries: Sequence[Entry],
        *,
        capacity: int = 0,
    ) -> Event:
        """All persisted state. ``entries[0]`` has index ``start_index``."""
        return cls(
            EventType.START,
            time,
            capacity,
            term=term,
            voted_for=voted_for,
            metadata=metadata,
            start_index=start_index,
            entries=tuple(entries),
        )

    @classmethod
    def receive(cls, time: int, message: Message, *, capacity: int = 0) -> Event:
        return cls(EventType.RECEIVE, time, capacity, message=message)

    @classmethod
    def persisted_entries(cls, time: int, index: int, *, term: int = 0, capacity: int = 0) -> Event:
        """The write of entries ending at ``index`` is durable.

        ``term`` (beyond C-Raft, as etcd's storage acknowledgement) is the term
        of the entry at ``index`` in that write. With it, a report about a
        write that a later truncation replaced by other entries ending at the
        same index is told apart; without it (0), the latest write covering
        ``index`` is taken to be the one reported.
        """
        return cls(EventType.PERSISTED_ENTRIES, time, capacity, index=index, term=term)

    @classmethod
    def persisted_snapshot(
        cls,
        time: int,
        metadata: SnapshotMetadata,
        offset: int,
        last: bool,
        *,
        capacity: int = 0,
    ) -> Event:
        return cls(
            EventType.PERSISTED_SNAPSHOT,
            time,
            capacity,
            metadata=metadata,
            offset=offset,
            last=last,
        )

    @classmethod
    def configuration(
        cls, time: int, index: int, conf: Configuration, *, capacity: int = 0
    ) -> Event:
        """The application applied the committed CHANGE entry at ``index``."""
        return cls(EventType.CONFIGURATION, time, capacity, index=index, conf=conf)

    @classmethod
    def snapshot(
        cls, time: int, metadata: SnapshotMetadata, trailing: int, *, capacity: int = 0
    ) -> Event:
        """The application took a snapshot; keep ``trailing`` entries before its index."""
        return cls(EventType.SNAPSHOT, time, capacity, metadata=metadata, trailing=trailing)

    @classmethod
    def timeout(cls, time: int, *, capacity: int = 0) -> Event:
        return cls(EventType.TIMEOUT, time, capacity)

    @classmethod
    def submit(cls, time: int, entries: Sequence[Entry], *, capacity: int = 0) -> Event:
        return cls(EventType.SUBMIT, time, capacity, entries=tuple(entries))

    @classmethod
    def catch_up(cls, time: int, server_id: int, *, capacity: int = 0) -> Event:
        return cls(EventType.CATCH_UP, time, capacity, server_id=server_id)

    @classmethod
    def read_index(cls, time: int, read_id: int, *, capacity: int = 0) -> Event:
        """Ask the leader for a read index (dissertation 6.4); the answer comes in
        ``Update.reads`` as (read_id, index) once a majority confirmed leadership."""
        return cls(EventType.READ_INDEX, time, capacity, index=read_id)

    @classmethod
    def transfer(cls, time: int, server_id: int, *, capacity: int = 0) -> Event:
        """Transfer leadership to ``server_id`` (0: the most up-to-date voter)."""
        return cls(EventType.TRANSFER, time, capacity, server_id=server_id)
