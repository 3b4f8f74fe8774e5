"""Exactly-once: a retried (client_id, sequence) returns the original result."""

from __future__ import annotations

from pathlib import Path

from kvstore.storage import (
    CasResult,
    CompareAndSwap,
    Delete,
    KeyValue,
    Put,
    PutResult,
    Rejected,
    RequestId,
    Storage,
)

from .conftest import MAP_SIZE


def test_retry_returns_original_result_without_applying_again(storage: Storage) -> None:
    rid = RequestId(client_id=42, sequence=1)
    (first,) = storage.data.apply([(1, Put(b"k", b"v1", prev_kv=True, request_id=rid))])
    storage.data.apply([(2, Put(b"k", b"v2"))])  # someone else writes meanwhile
    (retry,) = storage.data.apply([(3, Put(b"k", b"v1", prev_kv=True, request_id=rid))])
    assert retry == first == PutResult(revision=1)
    kv = storage.data.get(b"k")
    assert kv == KeyValue(b"k", b"v2", 1, 2, 2)  # the retry did not overwrite
    assert storage.data.revision() == 2


def test_retried_cas_reports_its_original_success(storage: Storage) -> None:
    rid = RequestId(7, 1)
    op = CompareAndSwap(b"lock", b"me", expected_absent=True, request_id=rid)
    (first,) = storage.data.apply([(1, op)])
    assert isinstance(first, CasResult) and first.succeeded
    (retry,) = storage.data.apply([(2, op)])  # applied again it would fail
    assert retry == first


def test_next_sequence_applies_and_older_one_is_rejected(storage: Storage) -> None:
    storage.data.apply([(1, Put(b"k", b"a", request_id=RequestId(1, 1)))])
    (second,) = storage.data.apply([(2, Put(b"k", b"b", request_id=RequestId(1, 2)))])
    assert second == PutResult(revision=2)
    (stale,) = storage.data.apply([(3, Delete(b"k", request_id=RequestId(1, 1)))])
    assert isinstance(stale, Rejected) and stale.code == "SESSION_EXPIRED"
    assert storage.data.get(b"k") is not None


def test_table_is_bounded_lru_by_log_index(data_dir: Path) -> None:
    with Storage(data_dir, map_size=MAP_SIZE, max_clients=3) as s:
        for i, client in enumerate([1, 2, 3], start=1):
            s.data.apply([(i, Put(b"k%d" % client, b"v", request_id=RequestId(client, 1)))])
        # Client 1 retries: a use, so client 2 becomes the least recently used.
        s.data.apply([(4, Put(b"k1", b"v", request_id=RequestId(1, 1)))])
        s.data.apply([(5, Put(b"k4", b"v", request_id=RequestId(4, 1)))])
        with s.env.read() as txn:
            assert s.data.sessions.count(txn) == 3
            assert [x.client_id for x in s.data.sessions.sessions(txn)] == [1, 3, 4]
        # Client 2 was evicted: its retry applies again (the documented limit).
        (again,) = s.data.apply([(6, Put(b"k2", b"v", request_id=RequestId(2, 1)))])
        assert again == PutResult(revision=5)


def test_sessions_survive_restart(data_dir: Path) -> None:
    rid = RequestId(9, 3)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        (first,) = s.data.apply([(1, Put(b"k", b"v", request_id=rid))])
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        (retry,) = s.data.apply([(2, Put(b"k", b"v", request_id=rid))])
        assert retry == first
        assert s.data.revision() == 1
