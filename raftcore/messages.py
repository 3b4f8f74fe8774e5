"""The six Raft messages (C-Raft's ``struct raft_message``).

On a sent message ``server_id`` is the destination; on a received one, the
sender.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import ClassVar

from raftcore.configuration import Configuration
from raftcore.types import Entry


class MessageType(IntEnum):
    APPEND_ENTRIES = 1
    APPEND_ENTRIES_RESULT = 2
    REQUEST_VOTE = 3
    REQUEST_VOTE_RESULT = 4
    INSTALL_SNAPSHOT = 5
    TIMEOUT_NOW = 6


@dataclass(frozen=True, slots=True)
class AppendEntries:
    type: ClassVar[MessageType] = MessageType.APPEND_ENTRIES
    term: int
    prev_log_index: int
    prev_log_term: int
    leader_commit: int
    entries: Sequence[Entry] = ()
    # Beyond C-Raft: the leader's read round (ReadIndex); echoed in the result.
    context: int = 0


@dataclass(frozen=True, slots=True)
class AppendEntriesResult:
    """``rejected`` is, as in C-Raft, the rejected prev_log_index, or 0 on success."""

    type: ClassVar[MessageType] = MessageType.APPEND_ENTRIES_RESULT
    term: int
    rejected: int
    last_log_index: int
    features: int = 0
    capacity: int = 0
    context: int = 0  # the read round of the AppendEntries answered


@dataclass(frozen=True, slots=True)
class RequestVote:
    type: ClassVar[MessageType] = MessageType.REQUEST_VOTE
    term: int
    candidate_id: int
    last_log_index: int
    last_log_term: int
    disrupt_leader: bool = False
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResult:
    type: ClassVar[MessageType] = MessageType.REQUEST_VOTE_RESULT
    term: int
    vote_granted: bool
    pre_vote: bool = False
    features: int = 0
    capacity: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    """raftcore leaves ``data`` empty; the I/O layer fills it from its snapshot."""

    type: ClassVar[MessageType] = MessageType.INSTALL_SNAPSHOT
    term: int
    last_index: int
    last_term: int
    conf: Configuration
    conf_index: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    type: ClassVar[MessageType] = MessageType.TIMEOUT_NOW
    term: int
    last_log_index: int
    last_log_term: int


Payload = (
    AppendEntries
    | AppendEntriesResult
    | RequestVote
    | RequestVoteResult
    | InstallSnapshot
    | TimeoutNow
)


@dataclass(frozen=True, slots=True)
class Message:
    server_id: int
    server_address: str
    payload: Payload = field()

    @property
    def type(self) -> MessageType:
        return self.payload.type
