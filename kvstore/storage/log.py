"""Log store: Raft log entries in the ``log`` sub-database.

Key: the entry's index as a big-endian u64, so LMDB's byte order is index
order and appends can use ``MDB_APPEND`` (no B-tree search, densely packed
pages). Value: term (u64), entry type (u8), then the entry's data verbatim, so
a payload goes from the wire to disk and back without being re-encoded.

The log is contiguous: entries ``first_index() .. last_index()``. An empty log
still has a first index (kept in ``meta``, set by compaction or a snapshot
install), so that after a snapshot the next append is known to start at
``snapshot.index + 1``; then ``last_index() == first_index() - 1``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from kvstore.storage.env import Env, Txn
from kvstore.storage.errors import LogError
from kvstore.storage.stable import StableStore
from raftcore.types import Entry, EntryType

_KEY = struct.Struct(">Q")
_HEADER = struct.Struct(">QB")  # term, type


def encode_key(index: int) -> bytes:
    return _KEY.pack(index)


def decode_key(key: bytes) -> int:
    return int(_KEY.unpack(key)[0])


def encode_entry(entry: Entry) -> bytes:
    return _HEADER.pack(entry.term, int(entry.type)) + entry.data


def decode_entry(raw: bytes) -> Entry:
    term, type_ = _HEADER.unpack_from(raw)
    return Entry(term, EntryType(type_), raw[_HEADER.size :])


class LogStore:
    """Append, read and compact the Raft log.

    Reads take an optional transaction so a caller can combine them with other
    reads (or with the writes of a group commit) in one consistent view.
    """

    def __init__(self, env: Env, stable: StableStore) -> None:
        self._env = env
        self._db = env.log_db
        self._stable = stable

    # -- reads -----------------------------------------------------------

    def first_index(self, txn: Txn | None = None) -> int:
        """Index of the first entry; when empty, the index the next append must have."""
        if txn is None:
            with self._env.read() as t:
                return self.first_index(t)
        cur = txn.cursor(self._db)
        if cur.first():
            return decode_key(cur.key())
        return self._stable.first_index(txn)

    def last_index(self, txn: Txn | None = None) -> int:
        """Index of the last entry; ``first_index() - 1`` when the log is empty."""
        if txn is None:
            with self._env.read() as t:
                return self.last_index(t)
        cur = txn.cursor(self._db)
        if cur.last():
            return decode_key(cur.key())
        return self._stable.first_index(txn) - 1

    def get(self, index: int, txn: Txn | None = None) -> Entry | None:
        if txn is None:
            with self._env.read() as t:
                return self.get(index, t)
        raw = txn.get(encode_key(index), db=self._db)
        return None if raw is None else decode_entry(raw)

    def term_at(self, index: int, txn: Txn | None = None) -> int | None:
        """The term of the entry at ``index``, None when there is none."""
        entry = self.get(index, txn)
        return None if entry is None else entry.term

    def entries(self, lo: int, hi: int | None = None, txn: Txn | None = None) -> list[Entry]:
        """Entries with ``lo <= index <= hi`` (``hi`` None: to the end), in order.

        Missing indexes are not filled in: the result is the stored run that
        starts at ``lo``; a caller that asks for compacted entries gets [].
        """
        if txn is None:
            with self._env.read() as t:
                return self.entries(lo, hi, t)
        out: list[Entry] = []
        cur = txn.cursor(self._db)
        if not cur.set_key(encode_key(lo)):
            return out
        expected = lo
        for key, raw in cur.iternext():
            index = decode_key(key)
            if (hi is not None and index > hi) or index != expected:
                break
            out.append(decode_entry(raw))
            expected += 1
        return out

    def iter_batches(
        self, lo: int | None = None, max_bytes: int = 4 << 20
    ) -> Iterator[tuple[int, list[Entry]]]:
        """The whole log from ``lo`` as ``(start_index, entries)`` batches.

        For raftcore's START, which accepts entries in several batches: a big
        log is loaded without building one huge list, and each batch is read
        in its own short read transaction (no long-lived reader pinning pages).
        """
        next_index = self.first_index() if lo is None else lo
        while True:
            batch: list[Entry] = []
            size = 0
            with self._env.read() as txn:
                cur = txn.cursor(self._db)
                if cur.set_key(encode_key(next_index)):
                    for key, raw in cur.iternext():
                        if decode_key(key) != next_index + len(batch):
                            break
                        batch.append(decode_entry(raw))
                        size += len(raw)
                        if size >= max_bytes:
                            break
            if not batch:
                return
            yield next_index, batch
            next_index += len(batch)

    # -- writes inside the caller's transaction ----------------------------

    def append_in(self, txn: Txn, index: int, entries: Sequence[Entry]) -> int:
        """Write ``entries`` from ``index`` on, replacing any suffix from ``index``.

        Returns the new last index. ``index`` must be within
        ``first_index() .. last_index() + 1``: a gap or a rewrite of compacted
        entries is a bug in the caller and raises :class:`LogError` (the
        transaction is then aborted by its owner, nothing is written).
        """
        first = self.first_index(txn)
        last = self.last_index(txn)
        if index < first or index > last + 1:
            raise LogError(
                f"cannot append at index {index}: the log holds {first}..{last}, "
                f"so an append must start between {first} and {last + 1}"
            )
        cur = txn.cursor(self._db)
        if index <= last and cur.set_key(encode_key(index)):
            # Delete the conflicting suffix; delete() moves to the next item and
            # returns False once the cursor has run off the end.
            while cur.delete():
                pass
        if entries:
            items = [(encode_key(index + i), encode_entry(e)) for i, e in enumerate(entries)]
            _consumed, added = cur.putmulti(items, append=True)
            if added != len(items):  # pragma: no cover - guarded by the checks above
                raise LogError(f"append at {index}: wrote {added} of {len(items)} entries")
        return index + len(entries) - 1

    def compact_in(self, txn: Txn, upto: int) -> None:
        """Delete every entry with index < ``upto``; the log then starts at ``upto``.

        ``upto`` past the last entry empties the log (a snapshot beyond it).
        Compacting to a point already compacted is a no-op.
        """
        first = self.first_index(txn)
        if upto <= first:
            return
        cur = txn.cursor(self._db)
        if cur.first():
            while cur.key() and decode_key(cur.key()) < upto:
                cur.delete()
        self._stable.put_first_index(txn, upto)

    def reset_in(self, txn: Txn, first_index: int) -> None:
        """Delete all entries; the next append must be at ``first_index``."""
        txn.drop(self._db, delete=False)
        self._stable.put_first_index(txn, first_index)

    # -- durable when they return --------------------------------------------

    def append(self, index: int, entries: Sequence[Entry]) -> int:
        """:meth:`append_in` in a transaction of its own; returns the new last index."""
        with self._env.write() as txn:
            return self.append_in(txn, index, entries)

    def compact(self, upto: int) -> None:
        with self._env.write() as txn:
            self.compact_in(txn, upto)
