"""The exactly-once session table (Raft dissertation 6.3), in LMDB.

Per client id: the last applied sequence and its encoded result, so that a
retry of that request returns the original answer instead of applying twice.
It lives in the ``sessions`` sub-database, so it is written in the same
transaction as the write it records, survives restarts, and travels inside
snapshots.

Bounded: at most ``max_clients`` clients; recording a new client beyond that
evicts the least recently used one. "Recently" is measured in log indexes,
not wall-clock time, so every replica evicts the same client at the same
point and the tables stay identical (a clock would make replicas diverge).
All replicas must therefore run with the same ``max_clients``.

Two kinds of keys share the sub-database, so one ordered scan finds the LRU
client without a second sub-database:

- ``b"c" + client_id`` -> sequence (u64), last_used index (u64), result bytes
- ``b"u" + last_used + client_id`` -> empty (the LRU order)
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from kvstore.storage.env import Env, Txn
from kvstore.storage.errors import InvalidArgument
from kvstore.storage.ops import RequestId, Result
from kvstore.storage.records import decode_result, encode_result

_CLIENT_KEY = struct.Struct(">cQ")
_LRU_KEY = struct.Struct(">cQQ")
_RECORD = struct.Struct(">QQ")

#: etcd keeps no sessions; Raft implementations commonly keep thousands.
DEFAULT_MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    client_id: int
    sequence: int
    last_used: int
    result: Result


class SessionTable:
    """Lookup and record of client sessions inside a caller's transaction."""

    def __init__(self, env: Env, max_clients: int = DEFAULT_MAX_CLIENTS) -> None:
        if max_clients < 1:
            raise InvalidArgument(f"max_clients must be at least 1, got {max_clients}")
        self._env = env
        self._db = env.sessions_db
        self.max_clients = max_clients

    def lookup(self, txn: Txn, client_id: int) -> Session | None:
        raw = txn.get(_CLIENT_KEY.pack(b"c", client_id), db=self._db)
        if raw is None:
            return None
        sequence, last_used = _RECORD.unpack_from(raw)
        return Session(client_id, sequence, last_used, decode_result(raw[_RECORD.size :]))

    def touch(self, txn: Txn, session: Session, now: int) -> None:
        """Mark a client as used at log index ``now`` (a duplicate counts as use)."""
        self._write(
            txn,
            session.client_id,
            session.sequence,
            encode_result(session.result),
            session.last_used,
            now,
        )

    def record(self, txn: Txn, request_id: RequestId, result: Result, now: int) -> None:
        """Remember ``result`` as the answer to ``request_id``, applied at index ``now``."""
        old = txn.get(_CLIENT_KEY.pack(b"c", request_id.client_id), db=self._db)
        if old is None:
            while self.count(txn) >= self.max_clients:
                self._evict_lru(txn)
            previous_use = None
        else:
            previous_use = _RECORD.unpack_from(old)[1]
        self._write(
            txn, request_id.client_id, request_id.sequence, encode_result(result), previous_use, now
        )

    def count(self, txn: Txn) -> int:
        """Number of clients: two keys per client, and LMDB keeps entry counts."""
        return int(txn.stat(self._db)["entries"]) // 2

    def sessions(self, txn: Txn) -> Iterator[Session]:
        """Every session in client id order (for tests and inspection)."""
        cur = txn.cursor(self._db)
        if not cur.set_range(b"c"):
            return
        for key, raw in cur.iternext():
            if not key.startswith(b"c"):
                return
            _, client_id = _CLIENT_KEY.unpack(key)
            sequence, last_used = _RECORD.unpack_from(raw)
            yield Session(client_id, sequence, last_used, decode_result(raw[_RECORD.size :]))

    def _write(
        self,
        txn: Txn,
        client_id: int,
        sequence: int,
        result: bytes,
        previous_use: int | None,
        now: int,
    ) -> None:
        if previous_use is not None:
            txn.delete(_LRU_KEY.pack(b"u", previous_use, client_id), db=self._db)
        txn.put(
            _CLIENT_KEY.pack(b"c", client_id), _RECORD.pack(sequence, now) + result, db=self._db
        )
        txn.put(_LRU_KEY.pack(b"u", now, client_id), b"", db=self._db)

    def _evict_lru(self, txn: Txn) -> None:
        cur = txn.cursor(self._db)
        if not cur.set_range(b"u"):  # pragma: no cover - count() > 0 implies a "u" key
            return
        _, _, client_id = _LRU_KEY.unpack(cur.key())
        cur.delete()
        txn.delete(_CLIENT_KEY.pack(b"c", client_id), db=self._db)
