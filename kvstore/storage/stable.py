"""Stable store: the small durable facts Raft keeps beside its log.

Sub-database ``meta``: current term, voted-for, the first index of the log
(needed when the log is empty after a snapshot), and the last snapshot's
metadata. Each ``set_*`` method commits its own transaction, so the value is
on disk (fsynced) when it returns; each ``put_*`` method writes inside a
transaction the caller owns, which is how the group commit writer puts term,
vote and entries under one fsync.

Integers are stored big-endian u64, the encoding every other part uses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kvstore.storage.env import Db, Env, Txn
from raftcore.configuration import Configuration
from raftcore.types import SnapshotMetadata

_U64 = struct.Struct(">Q")
_SNAPSHOT = struct.Struct(">QQQ")  # index, term, configuration_index; then configuration

KEY_TERM = b"raft/term"
KEY_VOTED_FOR = b"raft/voted_for"
KEY_FIRST_INDEX = b"raft/first_index"
KEY_SNAPSHOT = b"raft/snapshot"


def get_u64(txn: Txn, db: Db, key: bytes, default: int = 0) -> int:
    """Read a big-endian u64 value, ``default`` when absent."""
    raw = txn.get(key, db=db)
    return default if raw is None else int(_U64.unpack(raw)[0])


def put_u64(txn: Txn, db: Db, key: bytes, value: int) -> None:
    txn.put(key, _U64.pack(value), db=db)


@dataclass(frozen=True, slots=True)
class HardState:
    """What raftcore's START needs besides the log: term, vote, snapshot."""

    term: int
    voted_for: int
    snapshot: SnapshotMetadata | None
    first_index: int


class StableStore:
    """Term, vote, first index and snapshot metadata in the ``meta`` sub-database."""

    def __init__(self, env: Env) -> None:
        self._env = env
        self._db = env.meta_db

    # -- reads -----------------------------------------------------------

    def current_term(self, txn: Txn | None = None) -> int:
        if txn is not None:
            return get_u64(txn, self._db, KEY_TERM)
        with self._env.read() as t:
            return get_u64(t, self._db, KEY_TERM)

    def voted_for(self, txn: Txn | None = None) -> int:
        """The id voted for in the current term; 0 means none (as in raftcore)."""
        if txn is not None:
            return get_u64(txn, self._db, KEY_VOTED_FOR)
        with self._env.read() as t:
            return get_u64(t, self._db, KEY_VOTED_FOR)

    def first_index(self, txn: Txn) -> int:
        """Where the log starts when it is empty: 1, or one past the snapshot."""
        return get_u64(txn, self._db, KEY_FIRST_INDEX, default=1)

    def snapshot_metadata(self, txn: Txn | None = None) -> SnapshotMetadata | None:
        if txn is None:
            with self._env.read() as t:
                return self.snapshot_metadata(t)
        raw = txn.get(KEY_SNAPSHOT, db=self._db)
        if raw is None:
            return None
        index, term, conf_index = _SNAPSHOT.unpack_from(raw)
        conf = Configuration.decode(bytes(raw[_SNAPSHOT.size :]))
        return SnapshotMetadata(index, term, conf, conf_index)

    def hard_state(self) -> HardState:
        """Everything in one consistent read, for START after a restart."""
        with self._env.read() as t:
            return HardState(
                term=self.current_term(t),
                voted_for=self.voted_for(t),
                snapshot=self.snapshot_metadata(t),
                first_index=self.first_index(t),
            )

    # -- writes inside the caller's transaction ----------------------------

    def put_term(self, txn: Txn, term: int) -> None:
        put_u64(txn, self._db, KEY_TERM, term)

    def put_voted_for(self, txn: Txn, voted_for: int) -> None:
        put_u64(txn, self._db, KEY_VOTED_FOR, voted_for)

    def put_first_index(self, txn: Txn, index: int) -> None:
        put_u64(txn, self._db, KEY_FIRST_INDEX, index)

    def put_snapshot(self, txn: Txn, metadata: SnapshotMetadata) -> None:
        raw = (
            _SNAPSHOT.pack(metadata.index, metadata.term, metadata.configuration_index)
            + metadata.configuration.encode()
        )
        txn.put(KEY_SNAPSHOT, raw, db=self._db)

    # -- durable when they return --------------------------------------------

    def set_term_vote(self, term: int, voted_for: int) -> None:
        """Persist term and vote together; fsynced before returning."""
        with self._env.write() as txn:
            self.put_term(txn, term)
            self.put_voted_for(txn, voted_for)

    def set_term(self, term: int) -> None:
        with self._env.write() as txn:
            self.put_term(txn, term)

    def set_voted_for(self, voted_for: int) -> None:
        with self._env.write() as txn:
            self.put_voted_for(txn, voted_for)

    def set_snapshot(self, metadata: SnapshotMetadata) -> None:
        with self._env.write() as txn:
            self.put_snapshot(txn, metadata)
