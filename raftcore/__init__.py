"""raftcore: the Raft consensus algorithm as a pure, I/O-free state machine.

Modelled on the C-Raft v1 core API: feed events to ``Raft.step`` and carry
out the returned ``Update``. Standard library only.
"""

from raftcore.configuration import Configuration, Server
from raftcore.errors import (
    BadId,
    CantChange,
    Invalid,
    Malformed,
    NoSpace,
    NotFound,
    NotLeader,
    RaftError,
)
from raftcore.events import Event, EventType
from raftcore.messages import (
    AppendEntries,
    AppendEntriesResult,
    InstallSnapshot,
    Message,
    MessageType,
    RequestVote,
    RequestVoteResult,
    TimeoutNow,
)
from raftcore.raft import Raft
from raftcore.types import CatchUpStatus, Entry, EntryType, Role, SnapshotMetadata, State
from raftcore.update import SnapshotUpdate, Update, UpdateFlags

__all__ = [
    "AppendEntries",
    "AppendEntriesResult",
    "BadId",
    "CantChange",
    "CatchUpStatus",
    "Configuration",
    "Entry",
    "EntryType",
    "Event",
    "EventType",
    "InstallSnapshot",
    "Invalid",
    "Malformed",
    "Message",
    "MessageType",
    "NoSpace",
    "NotFound",
    "NotLeader",
    "Raft",
    "RaftError",
    "RequestVote",
    "RequestVoteResult",
    "Role",
    "Server",
    "SnapshotMetadata",
    "SnapshotUpdate",
    "State",
    "TimeoutNow",
    "Update",
    "UpdateFlags",
]
