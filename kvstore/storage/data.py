"""Data store: the replicated state machine's data, in LMDB.

Sub-database ``kv`` holds the keys (see records.py for the value layout),
``sessions`` the exactly-once table, and ``meta`` the applied index and the
store revision. :meth:`DataStore.apply_in` applies a batch of committed
operations and records the applied index in the same write transaction, so
after a crash either the whole batch and its index are there or neither is:
a restart resumes at the applied index without replaying anything.

Revisions follow etcd (DESIGN 3.1): the store revision rises by one per
write that changes the store (every put, a delete of an existing key, a
successful compare-and-swap); a key's ``mod_revision``/``create_revision``
are revisions; ``version`` counts changes since (re)creation.

Applying is idempotent by index: entries at or below the applied index are
skipped. That makes an installed snapshot newer than its metadata harmless
(the entries it already contains are skipped when they arrive).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from kvstore.storage.env import Env, Txn
from kvstore.storage.errors import InvalidArgument
from kvstore.storage.ops import (
    MAX_KEY_SIZE,
    CasResult,
    CompareAndSwap,
    Delete,
    DeleteResult,
    KeyValue,
    Operation,
    Put,
    PutResult,
    Rejected,
    Result,
    check_key,
    validate,
)
from kvstore.storage.records import decode_kv, encode_kv
from kvstore.storage.sessions import DEFAULT_MAX_CLIENTS, SessionTable
from kvstore.storage.stable import get_u64, put_u64

KEY_APPLIED_INDEX = b"fsm/applied_index"
KEY_REVISION = b"fsm/revision"


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KeyValue]
    more: bool  # the limit cut the result
    revision: int  # the store revision the read saw


class DataReader:
    """Reads in one read transaction: a consistent (serializable) view."""

    def __init__(self, env: Env, txn: Txn) -> None:
        self._env = env
        self._txn = txn

    @property
    def revision(self) -> int:
        return get_u64(self._txn, self._env.meta_db, KEY_REVISION)

    @property
    def applied_index(self) -> int:
        return get_u64(self._txn, self._env.meta_db, KEY_APPLIED_INDEX)

    def get(self, key: bytes) -> KeyValue | None:
        check_key(key)
        raw = self._txn.get(key, db=self._env.kv_db)
        return None if raw is None else decode_kv(key, raw)

    def range(
        self, start: bytes = b"", end: bytes = b"", prefix: bytes = b"", limit: int = 0
    ) -> RangeResult:
        """Keys in ascending byte order: ``start <= k < end`` or with ``prefix``.

        Empty ``end``: to the last key; nothing set: all keys. ``limit`` 0 is
        no limit; ``more`` tells that keys beyond the limit exist.
        """
        if prefix and (start or end):
            raise InvalidArgument("range: prefix and start/end are exclusive, set one of them")
        for name, bound in (("start", start), ("end", end), ("prefix", prefix)):
            if len(bound) > MAX_KEY_SIZE:
                raise InvalidArgument(
                    f"range {name} is {len(bound)} bytes; keys are at most {MAX_KEY_SIZE} bytes"
                )
        if limit < 0:
            raise InvalidArgument(f"range limit must not be negative, got {limit}")
        first = prefix or start
        kvs: list[KeyValue] = []
        more = False
        cur = self._txn.cursor(self._env.kv_db)
        positioned = cur.set_range(first) if first else cur.first()
        if positioned:
            for key, raw in cur.iternext():
                if (prefix and not key.startswith(prefix)) or (end and key >= end):
                    break
                if limit and len(kvs) == limit:
                    more = True
                    break
                kvs.append(decode_kv(key, raw))
        return RangeResult(kvs, more, self.revision)


class DataStore:
    """Applies committed operations and serves reads of the key-value data."""

    def __init__(self, env: Env, *, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        self._env = env
        self._kv = env.kv_db
        self._meta = env.meta_db
        self.sessions = SessionTable(env, max_clients)

    # -- reads -----------------------------------------------------------

    @contextlib.contextmanager
    def reader(self) -> Iterator[DataReader]:
        """Several reads that see the same committed state."""
        with self._env.read() as txn:
            yield DataReader(self._env, txn)

    def get(self, key: bytes) -> KeyValue | None:
        with self.reader() as r:
            return r.get(key)

    def range(
        self, start: bytes = b"", end: bytes = b"", prefix: bytes = b"", limit: int = 0
    ) -> RangeResult:
        with self.reader() as r:
            return r.range(start, end, prefix, limit)

    def applied_index(self, txn: Txn | None = None) -> int:
        if txn is not None:
            return get_u64(txn, self._meta, KEY_APPLIED_INDEX)
        with self._env.read() as t:
            return get_u64(t, self._meta, KEY_APPLIED_INDEX)

    def revision(self, txn: Txn | None = None) -> int:
        if txn is not None:
            return get_u64(txn, self._meta, KEY_REVISION)
        with self._env.read() as t:
            return get_u64(t, self._meta, KEY_REVISION)

    # -- apply -------------------------------------------------------------

    def apply(
        self, batch: Sequence[tuple[int, Operation | None]], *, last_index: int = 0
    ) -> list[Result | None]:
        """:meth:`apply_in` in a transaction of its own (one fsync)."""
        with self._env.write() as txn:
            return self.apply_in(txn, batch, last_index=last_index)

    def apply_in(
        self,
        txn: Txn,
        batch: Sequence[tuple[int, Operation | None]],
        *,
        last_index: int = 0,
        follows: int = 0,
    ) -> list[Result | None]:
        """Apply ``(log index, operation)`` pairs in order; record the applied index.

        ``None`` as operation stands for an entry without data effect (barrier,
        configuration change): it only advances the applied index, as does
        ``last_index`` (for a batch whose last entries are not commands).
        Returns one result per pair; ``None`` for skipped (already applied) or
        operation-less entries. Raises only for a malformed batch (indexes not
        increasing, or following ``follows`` when less than that is applied: a
        batch queued after one that failed); bad operations become
        :class:`Rejected` results.
        """
        applied = get_u64(txn, self._meta, KEY_APPLIED_INDEX)
        if applied < follows:
            raise InvalidArgument(
                f"apply: the batch follows entry {follows} but only {applied} is applied"
            )
        revision = start_revision = get_u64(txn, self._meta, KEY_REVISION)
        results: list[Result | None] = []
        previous = applied
        for index, op in batch:
            if index <= applied:
                results.append(None)
                continue
            if index <= previous:
                raise InvalidArgument(f"apply: index {index} after {previous}, must increase")
            previous = index
            if op is None:
                results.append(None)
                continue
            result, revision = self._apply_one(txn, index, op, revision)
            results.append(result)
        new_applied = max(previous, last_index)
        if new_applied > applied:
            put_u64(txn, self._meta, KEY_APPLIED_INDEX, new_applied)
        if revision != start_revision:
            put_u64(txn, self._meta, KEY_REVISION, revision)
        return results

    def _apply_one(self, txn: Txn, index: int, op: Operation, revision: int) -> tuple[Result, int]:
        try:
            validate(op)
        except InvalidArgument as exc:
            return Rejected(revision, "INVALID_ARGUMENT", str(exc)), revision
        rid = op.request_id
        if rid is not None:
            session = self.sessions.lookup(txn, rid.client_id)
            if session is not None and rid.sequence == session.sequence:
                self.sessions.touch(txn, session, index)
                return session.result, revision
            if session is not None and rid.sequence < session.sequence:
                return Rejected(
                    revision,
                    "SESSION_EXPIRED",
                    f"request {rid.client_id}/{rid.sequence} is older than the last one "
                    f"applied for this client ({session.sequence}); its result is gone",
                ), revision
        result: Result
        if isinstance(op, Put):
            result, revision = self._put(txn, op.key, op.value, op.prev_kv, revision)
        elif isinstance(op, Delete):
            result, revision = self._delete(txn, op, revision)
        else:
            result, revision = self._cas(txn, op, revision)
        if rid is not None:
            self.sessions.record(txn, rid, result, index)
        return result, revision

    def _put(
        self, txn: Txn, key: bytes, value: bytes, want_prev: bool, revision: int
    ) -> tuple[PutResult, int]:
        revision += 1
        raw = txn.get(key, db=self._kv)
        prev = None if raw is None else decode_kv(key, raw)
        if prev is None:
            txn.put(key, encode_kv(revision, revision, 1, value), db=self._kv)
        else:
            txn.put(
                key,
                encode_kv(prev.create_revision, revision, prev.version + 1, value),
                db=self._kv,
            )
        return PutResult(revision, prev if want_prev else None), revision

    def _delete(self, txn: Txn, op: Delete, revision: int) -> tuple[DeleteResult, int]:
        raw = txn.pop(op.key, db=self._kv)
        if raw is None:
            return DeleteResult(revision, deleted=False), revision
        revision += 1
        prev = decode_kv(op.key, raw) if op.prev_kv else None
        return DeleteResult(revision, deleted=True, prev_kv=prev), revision

    def _cas(self, txn: Txn, op: CompareAndSwap, revision: int) -> tuple[CasResult, int]:
        raw = txn.get(op.key, db=self._kv)
        current = None if raw is None else decode_kv(op.key, raw)
        if op.expected_absent:
            ok = current is None
        elif op.expected_value is not None:
            ok = current is not None and current.value == op.expected_value
        else:
            ok = current is not None and current.mod_revision == op.expected_mod_revision
        if not ok:
            return CasResult(revision, succeeded=False, kv=current), revision
        _, revision = self._put(txn, op.key, op.new_value, False, revision)
        after = KeyValue(
            op.key,
            op.new_value,
            revision if current is None else current.create_revision,
            revision,
            1 if current is None else current.version + 1,
        )
        return CasResult(revision, succeeded=True, kv=after), revision
