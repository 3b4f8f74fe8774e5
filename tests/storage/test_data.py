"""Data store: etcd revision semantics, CAS variants, ranges, key limits, atomic apply."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.storage import (
    CasResult,
    CompareAndSwap,
    Delete,
    DeleteResult,
    InvalidArgument,
    KeyValue,
    Operation,
    Put,
    PutResult,
    Rejected,
    Result,
    Storage,
)
from kvstore.storage.data import DataStore

from .conftest import MAP_SIZE


class Applier:
    """Applies one operation per log index, as the node will."""

    def __init__(self, data: DataStore) -> None:
        self.data = data
        self.index = data.applied_index()

    def __call__(self, op: Operation) -> Result:
        self.index += 1
        (result,) = self.data.apply([(self.index, op)])
        assert result is not None
        return result


@pytest.fixture
def apply(storage: Storage) -> Applier:
    return Applier(storage.data)


def test_put_creates_then_updates(storage: Storage, apply: Applier) -> None:
    assert apply(Put(b"a", b"1")) == PutResult(revision=1)
    assert apply(Put(b"b", b"x")) == PutResult(revision=2)
    assert apply(Put(b"a", b"2", prev_kv=True)) == PutResult(3, KeyValue(b"a", b"1", 1, 1, 1))
    assert storage.data.get(b"a") == KeyValue(b"a", b"2", 1, 3, 2)
    # A put of the same value still changes the store (etcd).
    assert apply(Put(b"a", b"2")) == PutResult(revision=4)
    assert storage.data.get(b"a") == KeyValue(b"a", b"2", 1, 4, 3)
    assert storage.data.revision() == 4


def test_prev_kv_only_when_asked_and_existing(apply: Applier) -> None:
    assert apply(Put(b"k", b"1", prev_kv=True)).prev_kv is None  # type: ignore[union-attr]
    assert apply(Put(b"k", b"2")).prev_kv is None  # type: ignore[union-attr]


def test_delete_changes_revision_only_when_the_key_existed(
    storage: Storage, apply: Applier
) -> None:
    apply(Put(b"k", b"v"))
    assert apply(Delete(b"missing")) == DeleteResult(revision=1, deleted=False)
    assert storage.data.revision() == 1
    assert apply(Delete(b"k", prev_kv=True)) == DeleteResult(2, True, KeyValue(b"k", b"v", 1, 1, 1))
    assert storage.data.get(b"k") is None
    assert apply(Delete(b"k")) == DeleteResult(revision=2, deleted=False)


def test_version_restarts_after_delete_and_recreate(storage: Storage, apply: Applier) -> None:
    apply(Put(b"k", b"1"))
    apply(Put(b"k", b"2"))
    apply(Delete(b"k"))
    apply(Put(b"k", b"3"))
    assert storage.data.get(b"k") == KeyValue(b"k", b"3", 4, 4, 1)


def test_cas_expected_value(storage: Storage, apply: Applier) -> None:
    apply(Put(b"k", b"old"))
    fail = apply(CompareAndSwap(b"k", b"new", expected_value=b"other"))
    assert fail == CasResult(1, False, KeyValue(b"k", b"old", 1, 1, 1))
    ok = apply(CompareAndSwap(b"k", b"new", expected_value=b"old"))
    assert ok == CasResult(2, True, KeyValue(b"k", b"new", 1, 2, 2))
    assert storage.data.get(b"k") == ok.kv  # type: ignore[union-attr]
    # Expecting a value of a missing key fails with kv unset.
    assert apply(CompareAndSwap(b"nokey", b"v", expected_value=b"")) == CasResult(2, False, None)


def test_cas_expected_absent(storage: Storage, apply: Applier) -> None:
    ok = apply(CompareAndSwap(b"lock", b"me", expected_absent=True))
    assert ok == CasResult(1, True, KeyValue(b"lock", b"me", 1, 1, 1))
    fail = apply(CompareAndSwap(b"lock", b"you", expected_absent=True))
    assert fail == CasResult(1, False, KeyValue(b"lock", b"me", 1, 1, 1))
    assert storage.data.revision() == 1


def test_cas_expected_mod_revision(storage: Storage, apply: Applier) -> None:
    apply(Put(b"a", b"1"))
    apply(Put(b"b", b"1"))
    assert apply(CompareAndSwap(b"a", b"2", expected_mod_revision=2)) == CasResult(
        2, False, KeyValue(b"a", b"1", 1, 1, 1)
    )
    assert apply(CompareAndSwap(b"a", b"2", expected_mod_revision=1)) == CasResult(
        3, True, KeyValue(b"a", b"2", 1, 3, 2)
    )
    assert apply(CompareAndSwap(b"zz", b"2", expected_mod_revision=1)) == CasResult(3, False, None)


@pytest.mark.parametrize(
    "op",
    [
        CompareAndSwap(b"k", b"v"),  # no expectation (absent=false, mod_revision=0)
        CompareAndSwap(b"k", b"v", expected_value=b"x", expected_absent=True),
        CompareAndSwap(b"k", b"v", expected_value=b"x", expected_mod_revision=3),
    ],
)
def test_cas_needs_exactly_one_expectation(storage: Storage, apply: Applier, op: Operation) -> None:
    result = apply(op)
    assert isinstance(result, Rejected) and result.code == "INVALID_ARGUMENT"
    assert "exactly one expectation" in result.message
    assert storage.data.revision() == 0
    assert storage.data.applied_index() == 1  # rejected, but the entry counts as applied


def test_keys_1_to_511_bytes_with_clear_errors(storage: Storage, apply: Applier) -> None:
    assert isinstance(apply(Put(b"k" * 511, b"v")), PutResult)
    long = apply(Put(b"k" * 512, b"v"))
    assert isinstance(long, Rejected) and long.code == "INVALID_ARGUMENT"
    assert "512 bytes" in long.message and "1 to 511 bytes" in long.message
    empty = apply(Delete(b""))
    assert isinstance(empty, Rejected) and "1 to 511" in empty.message
    with pytest.raises(InvalidArgument, match="1 to 511"):
        storage.data.get(b"x" * 600)
    with pytest.raises(InvalidArgument, match="511"):
        storage.data.range(start=b"x" * 600)


def test_range_start_end_prefix_limit(storage: Storage) -> None:
    keys = [b"a", b"b/1", b"b/2", b"b/3", b"b0", b"c", b"\xff\xff"]
    storage.data.apply([(i + 1, Put(k, b"v" + k)) for i, k in enumerate(reversed(keys))])

    def names(r: object) -> list[bytes]:
        return [kv.key for kv in r.kvs]  # type: ignore[attr-defined]

    assert names(storage.data.range()) == keys  # ascending byte order
    assert names(storage.data.range(start=b"b/2", end=b"c")) == [b"b/2", b"b/3", b"b0"]
    assert names(storage.data.range(start=b"b0")) == [b"b0", b"c", b"\xff\xff"]
    assert names(storage.data.range(prefix=b"b/")) == [b"b/1", b"b/2", b"b/3"]
    assert names(storage.data.range(prefix=b"\xff")) == [b"\xff\xff"]
    cut = storage.data.range(prefix=b"b/", limit=2)
    assert names(cut) == [b"b/1", b"b/2"] and cut.more
    exact = storage.data.range(prefix=b"b/", limit=3)
    assert names(exact) == [b"b/1", b"b/2", b"b/3"] and not exact.more
    assert storage.data.range(prefix=b"nothing").kvs == []
    assert storage.data.range().revision == len(keys)
    with pytest.raises(InvalidArgument, match="exclusive"):
        storage.data.range(start=b"a", prefix=b"b")
    with pytest.raises(InvalidArgument):
        storage.data.range(limit=-1)


def test_reader_sees_one_consistent_state(storage: Storage, apply: Applier) -> None:
    apply(Put(b"k", b"1"))
    with storage.data.reader() as r:
        apply(Put(b"k", b"2"))  # committed while the reader is open
        kv = r.get(b"k")
        assert kv is not None and kv.value == b"1"
        assert r.revision == 1 and r.applied_index == 1
    kv = storage.data.get(b"k")
    assert kv is not None and kv.value == b"2"


def test_apply_records_applied_index_and_skips_applied_entries(storage: Storage) -> None:
    r = storage.data.apply([(1, Put(b"a", b"1")), (2, None), (3, Put(b"b", b"1"))], last_index=4)
    assert r[1] is None and isinstance(r[2], PutResult)
    assert storage.data.applied_index() == 4
    again = storage.data.apply([(3, Put(b"b", b"X")), (4, None), (5, Put(b"c", b"1"))])
    assert again[:2] == [None, None]  # already applied: skipped, not re-applied
    assert again[2] == PutResult(revision=3)
    kv = storage.data.get(b"b")
    assert kv is not None and kv.value == b"1"
    with pytest.raises(InvalidArgument, match="must increase"):
        storage.data.apply([(7, Put(b"x", b"1")), (6, Put(b"y", b"1"))])
    assert storage.data.applied_index() == 5


def test_a_batch_that_follows_a_missing_one_is_refused(storage: Storage) -> None:
    """The node queues several batches at once; if one failed, the next must
    not apply over the gap (its entries would skip the failed ones)."""
    storage.data.apply([(1, Put(b"a", b"1"))])
    refused = pytest.raises(InvalidArgument, match="follows entry 3 but only 1 is applied")
    with refused, storage.env.write() as txn:
        storage.data.apply_in(txn, [(4, Put(b"d", b"1"))], follows=3)
    assert storage.data.applied_index() == 1
    assert storage.data.get(b"d") is None
    with storage.env.write() as txn:
        storage.data.apply_in(txn, [(2, Put(b"b", b"1"))], follows=1)
    assert storage.data.applied_index() == 2


def test_apply_batch_and_applied_index_are_atomic(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.data.apply([(1, Put(b"a", b"1"))])
    real_put = DataStore._put
    calls = 0

    def failing_put(self: DataStore, *args: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError("simulated failure in the middle of a batch")
        return real_put(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(DataStore, "_put", failing_put)
    with pytest.raises(OSError, match="simulated"):
        storage.data.apply([(2, Put(b"b", b"1")), (3, Put(b"c", b"1")), (4, Put(b"d", b"1"))])
    monkeypatch.undo()
    assert storage.data.applied_index() == 1
    assert storage.data.revision() == 1
    assert [kv.key for kv in storage.data.range().kvs] == [b"a"]


def test_data_survives_restart_without_replay(data_dir: Path) -> None:
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        s.data.apply([(i, Put(b"k%d" % (i % 3), b"%d" % i)) for i in range(1, 11)])
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        assert s.data.applied_index() == 10
        assert s.data.revision() == 10
        assert s.data.get(b"k1") == KeyValue(b"k1", b"10", 1, 10, 4)
        assert s.data.apply([(10, Put(b"k1", b"again"))]) == [None]
