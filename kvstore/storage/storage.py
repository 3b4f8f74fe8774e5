"""``Storage``: a node's whole durable state, one LMDB environment.

This bundles the narrow stores (hashicorp/raft style) over a shared
environment so that callers that need atomicity across them (group commit,
snapshot install, taking a snapshot) can use one transaction:

- ``storage.log``: :class:`~kvstore.storage.log.LogStore`
- ``storage.stable``: :class:`~kvstore.storage.stable.StableStore`
- ``storage.data``: :class:`~kvstore.storage.data.DataStore`
- snapshots: :meth:`Storage.snapshot_source`, :meth:`Storage.snapshot_installer`

Opening an existing directory resumes everything (log, term and vote,
snapshot metadata, applied index, data) with no replay: :meth:`Storage.load`
returns what raftcore's START needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kvstore.storage.data import DataStore
from kvstore.storage.env import DEFAULT_MAP_SIZE, Env, Txn
from kvstore.storage.errors import InvalidArgument
from kvstore.storage.log import LogStore
from kvstore.storage.sessions import DEFAULT_MAX_CLIENTS
from kvstore.storage.snapshot import (
    DEFAULT_CHUNK_SIZE,
    SnapshotInfo,
    SnapshotInstaller,
    SnapshotSource,
    install_snapshot,
    remove_stale_spools,
)
from kvstore.storage.stable import StableStore
from raftcore.types import Entry, SnapshotMetadata


@dataclass(frozen=True, slots=True)
class Persist:
    """What one raftcore Update asks to persist (the CURRENT_TERM, VOTED_FOR
    and ENTRIES flags): ``None`` fields are left as they are. ``entries``
    replace the log from ``entries_index`` on (a conflicting suffix is
    deleted); ``entries_index`` with no entries only truncates.
    """

    term: int | None = None
    voted_for: int | None = None
    entries_index: int | None = None
    entries: Sequence[Entry] = ()


@dataclass(frozen=True, slots=True)
class LoadedState:
    """A node's state after (re)opening; feed it to ``Event.start``."""

    term: int
    voted_for: int
    snapshot: SnapshotMetadata | None
    start_index: int  # index of the first log entry (or of the next one, if none)
    last_index: int
    applied_index: int
    revision: int


class Storage:
    """One node's LMDB environment with its log, stable and data stores."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_clients: int = DEFAULT_MAX_CLIENTS,
    ) -> None:
        self.env = Env(path, map_size=map_size)
        self.stable = StableStore(self.env)
        self.log = LogStore(self.env, self.stable)
        self.data = DataStore(self.env, max_clients=max_clients)
        remove_stale_spools(self.env)

    # -- startup -----------------------------------------------------------

    def load(self) -> LoadedState:
        """Term, vote, snapshot and log bounds in one consistent read.

        Entries come separately, in batches, from ``storage.log.iter_batches()``.
        """
        with self.env.read() as txn:
            return LoadedState(
                term=self.stable.current_term(txn),
                voted_for=self.stable.voted_for(txn),
                snapshot=self.stable.snapshot_metadata(txn),
                start_index=self.log.first_index(txn),
                last_index=self.log.last_index(txn),
                applied_index=self.data.applied_index(txn),
                revision=self.data.revision(txn),
            )

    # -- Raft persistence ----------------------------------------------------

    def persist_in(self, txn: Txn, request: Persist) -> int:
        """Write one Persist into ``txn``; returns the log's last index after it."""
        if request.term is not None:
            self.stable.put_term(txn, request.term)
        if request.voted_for is not None:
            self.stable.put_voted_for(txn, request.voted_for)
        if request.entries_index is not None:
            return self.log.append_in(txn, request.entries_index, request.entries)
        if request.entries:
            raise InvalidArgument("Persist with entries needs entries_index")
        return self.log.last_index(txn)

    def persist(self, request: Persist) -> int:
        """:meth:`persist_in` in a transaction of its own (durable on return)."""
        with self.env.write() as txn:
            return self.persist_in(txn, request)

    def take_snapshot_in(self, txn: Txn, metadata: SnapshotMetadata, trailing: int) -> None:
        """Record a snapshot at ``metadata.index`` and drop log entries before the
        trailing ones (keeps ``trailing`` entries up to the snapshot index, as
        raftcore's SNAPSHOT event does). The data needs no copy: it is the
        ``kv`` sub-database, already at or past the snapshot index.
        """
        applied = self.data.applied_index(txn)
        if metadata.index > applied:
            raise InvalidArgument(
                f"snapshot index {metadata.index} is past the applied index {applied}"
            )
        if trailing < 0:
            raise InvalidArgument(f"trailing must not be negative, got {trailing}")
        self.stable.put_snapshot(txn, metadata)
        upto = metadata.index - trailing + 1
        if upto > self.log.first_index(txn):
            self.log.compact_in(txn, min(upto, self.log.last_index(txn) + 1))

    def take_snapshot(self, metadata: SnapshotMetadata, trailing: int) -> None:
        with self.env.write() as txn:
            self.take_snapshot_in(txn, metadata, trailing)

    # -- snapshot transfer --------------------------------------------------

    def snapshot_source(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> SnapshotSource:
        """A consistent read of the data to stream to a follower (close it after)."""
        return SnapshotSource(self.env, chunk_size=chunk_size)

    def snapshot_installer(self) -> SnapshotInstaller:
        return SnapshotInstaller(self.env, self.log, self.stable)

    def install_snapshot(
        self, chunks: Iterable[bytes], metadata: SnapshotMetadata | None = None
    ) -> SnapshotInfo:
        return install_snapshot(self.env, self.log, self.stable, chunks, metadata)

    # -- sizes (metrics, raftcore capacity) -----------------------------------

    @property
    def map_size(self) -> int:
        return self.env.map_size

    def used_bytes(self) -> int:
        return self.env.used_bytes()

    def free_bytes(self) -> int:
        return self.env.free_bytes()

    def db_size_bytes(self) -> int:
        """Size of the database file on disk (``kvstore_db_size_bytes``)."""
        return self.env.file_size_bytes()

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
