"""Plain value types shared by every part of raftcore.

Enum numbers are the C-Raft values, so that traces and wire formats line up
with the C implementation's documentation.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftcore.configuration import Configuration


class EntryType(IntEnum):
    COMMAND = 1
    BARRIER = 2
    CHANGE = 3


class Role(IntEnum):
    STANDBY = 0
    VOTER = 1
    SPARE = 2


class State(IntEnum):
    FOLLOWER = 1
    CANDIDATE = 2
    LEADER = 3


class CatchUpStatus(IntEnum):
    NONE = 0
    RUNNING = 1
    ABORTED = 2
    FINISHED = 3


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is shared, never copied, on its way through raftcore."""

    term: int
    type: EntryType
    data: bytes


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    """What raftcore needs to know of a snapshot: where it ends and its configuration."""

    index: int
    term: int
    configuration: Configuration
    configuration_index: int
