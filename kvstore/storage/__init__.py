"""A node's durable state in one LMDB environment.

Start with :class:`Storage` (log, stable, data stores and snapshots over one
environment) and :class:`GroupCommitter` (the node loop's single writer,
coalescing persist and apply requests into one fsync per transaction).
"""

from kvstore.storage.data import DataReader, DataStore, RangeResult
from kvstore.storage.env import DEFAULT_MAP_SIZE, Env
from kvstore.storage.errors import (
    CorruptSnapshot,
    InvalidArgument,
    LogError,
    NoSpace,
    SnapshotMismatch,
    StorageError,
)
from kvstore.storage.groupcommit import CommitStats, GroupCommitter
from kvstore.storage.log import LogStore
from kvstore.storage.ops import (
    MAX_KEY_SIZE,
    BinaryCodec,
    CasResult,
    CommandCodec,
    CompareAndSwap,
    Delete,
    DeleteResult,
    KeyValue,
    Operation,
    Put,
    PutResult,
    Rejected,
    RequestId,
    Result,
    check_key,
    validate,
)
from kvstore.storage.sessions import DEFAULT_MAX_CLIENTS, Session, SessionTable
from kvstore.storage.snapshot import SnapshotInfo, SnapshotInstaller, SnapshotSource
from kvstore.storage.stable import HardState, StableStore
from kvstore.storage.storage import LoadedState, Persist, Storage

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_MAX_CLIENTS",
    "MAX_KEY_SIZE",
    "BinaryCodec",
    "CasResult",
    "CommandCodec",
    "CommitStats",
    "CompareAndSwap",
    "CorruptSnapshot",
    "DataReader",
    "DataStore",
    "Delete",
    "DeleteResult",
    "Env",
    "GroupCommitter",
    "HardState",
    "InvalidArgument",
    "KeyValue",
    "LoadedState",
    "LogError",
    "LogStore",
    "NoSpace",
    "Operation",
    "Persist",
    "Put",
    "PutResult",
    "RangeResult",
    "Rejected",
    "RequestId",
    "Result",
    "Session",
    "SessionTable",
    "SnapshotInfo",
    "SnapshotInstaller",
    "SnapshotMismatch",
    "SnapshotSource",
    "StableStore",
    "Storage",
    "StorageError",
    "check_key",
    "validate",
]
