"""The LMDB environment of one node and its sub-databases.

One environment holds everything a node must keep (log, metadata, key-value
data, sessions) so that a single write transaction can change any mix of them
atomically: the applied index moves together with the data, a received
snapshot replaces the data and the log prefix together, and the group commit
writer puts term, vote and entries under one fsync.

Durability: a write transaction is durable when :meth:`Env.write` returns,
unless the caller says it need not be (``durable=False``). LMDB runs with
``sync=True`` and ``metasync=False``: every commit flushes its data pages,
then writes the meta page that makes them current without flushing it
(MDB_NOMETASYNC, which LMDB documents as keeping the database intact: a
machine crash may undo the last transactions, never corrupt the file); a
durable write then flushes the file once more, meta page included. Only the
apply of committed entries skips that flush: its result can be computed again
from the log, which is durable, and its applied index moves in the same
transaction (so a crash that undoes it undoes the index too, and the entries
apply again at restart); any later durable write makes it durable as well.
``writemap``/``map_async`` stay off because with them a crash can lose
acknowledged transactions or, with a stray pointer, corrupt the map.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

import lmdb

from kvstore.storage.errors import InvalidArgument, NoSpace, StorageError

if TYPE_CHECKING:
    Txn: TypeAlias = lmdb.Transaction[bytes]
    Db: TypeAlias = lmdb._Database
else:
    Txn = lmdb.Transaction
    Db = object

#: 1 GiB: large enough for a development cluster. LMDB reserves address
#: space, not disk, so a generous value costs nothing until it is used.
DEFAULT_MAP_SIZE = 1 << 30

#: Names of the sub-databases. Fixed: an existing directory is opened by them.
LOG_DB = b"log"
META_DB = b"meta"
KV_DB = b"kv"
SESSIONS_DB = b"sessions"

# Room for a few more sub-databases in later versions without a migration:
# max_dbs is read at open time only, so it costs nothing to reserve.
_MAX_DBS = 16


class Env:
    _page_size: int | None = None
    """An open LMDB environment with the node's four sub-databases.

    Write transactions come from :meth:`write`, which turns LMDB's
    ``MapFullError`` into :class:`NoSpace` after aborting the transaction, so
    a full map never leaves half a write behind and the environment stays
    usable for reads.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        max_readers: int = 126,
        readonly: bool = False,
    ) -> None:
        if map_size <= 0:
            raise InvalidArgument(f"map size must be positive, got {map_size}")
        self.path = Path(path)
        if not readonly:
            self.path.mkdir(parents=True, exist_ok=True)
        # LMDB grows a smaller requested map_size to the data file's size when
        # it opens an existing environment, so reopening with a too-small
        # value never loses data; a larger one takes effect at once.
        self._env = lmdb.open(
            str(self.path),
            map_size=map_size,
            max_dbs=_MAX_DBS,
            max_readers=max_readers,
            subdir=True,
            readonly=readonly,
            sync=True,
            metasync=False,  # see the module docstring: durable writes sync it
            writemap=False,
            map_async=False,
            # Spare read transactions make the many small serializable reads
            # cheaper (no reader-slot acquisition per read).
            max_spare_txns=4,
        )
        self._readonly = readonly
        create = not readonly
        with self._env.begin(write=create) as txn:
            self.log_db = self._env.open_db(LOG_DB, txn=txn, create=create)
            self.meta_db = self._env.open_db(META_DB, txn=txn, create=create)
            self.kv_db = self._env.open_db(KV_DB, txn=txn, create=create)
            self.sessions_db = self._env.open_db(SESSIONS_DB, txn=txn, create=create)
        self._closed = False

    # -- transactions ---------------------------------------------------

    @contextlib.contextmanager
    def write(self, durable: bool = True) -> Iterator[Txn]:
        """A write transaction, committed (and, if ``durable``, fsynced with
        its meta page) when the block ends.

        Any exception aborts it: nothing of the block is written. LMDB's
        ``MapFullError`` (from a put or from the commit itself) becomes
        :class:`NoSpace`; a key LMDB refuses becomes :class:`InvalidArgument`.
        A failed sync raises :class:`StorageError` after the commit: the
        transaction is then visible but may not survive a machine crash.
        """
        txn = self._env.begin(write=True)
        try:
            yield txn
            txn.commit()
        except lmdb.MapFullError as exc:
            txn.abort()
            raise NoSpace(self.map_size, self.used_bytes()) from exc
        except lmdb.BadValsizeError as exc:
            txn.abort()
            raise InvalidArgument(
                f"LMDB refused a key or value size: keys must be 1 to "
                f"{self.max_key_size} bytes ({exc})"
            ) from exc
        except lmdb.Error as exc:
            txn.abort()
            raise StorageError(f"LMDB write failed: {exc}") from exc
        except BaseException:
            txn.abort()
            raise
        if durable:
            try:
                self._env.sync(True)
            except lmdb.Error as exc:
                raise StorageError(f"LMDB sync failed: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Txn]:
        """A read-only snapshot of the last committed state (MVCC, no locks)."""
        txn = self._env.begin(write=False)
        try:
            yield txn
        finally:
            txn.abort()

    def begin_read(self) -> Txn:
        """A read transaction the caller must ``abort()``; for long streaming reads."""
        return self._env.begin(write=False)

    # -- sizes, for metrics and for raftcore's capacity -------------------

    @property
    def map_size(self) -> int:
        """The current map size in bytes (may exceed the requested one, see __init__)."""
        return int(self._env.info()["map_size"])

    @property
    def page_size(self) -> int:
        return int(self._env.stat()["psize"])

    @property
    def max_key_size(self) -> int:
        return int(self._env.max_key_size())

    def used_bytes(self) -> int:
        """High-water mark of pages in use: what counts against the map size.

        Freed pages are reused by later writes but not returned, so this only
        grows; it is the figure to compare with :attr:`map_size`.
        """
        info = self._env.info()
        return (int(info["last_pgno"]) + 1) * self.page_size

    def free_bytes(self) -> int:
        """A lower bound on the bytes still writable before NoSpace (one info() call)."""
        info = self._env.info()
        if self._page_size is None:
            self._page_size = self.page_size
        used = (int(info["last_pgno"]) + 1) * self._page_size
        return max(0, int(info["map_size"]) - used)

    def file_size_bytes(self) -> int:
        """Size of ``data.mdb`` on disk: the database size to export as a metric."""
        try:
            return (self.path / "data.mdb").stat().st_size
        except FileNotFoundError:
            return 0

    def readers(self) -> int:
        """Reader slots in use (a leaked read transaction shows up here)."""
        return int(self._env.info()["num_readers"])

    # -- lifetime ------------------------------------------------------

    def close(self) -> None:
        """Close, after making durable what was committed without a sync."""
        if not self._closed:
            self._closed = True
            if not self._readonly:
                self._env.sync(True)
            self._env.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Env:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
