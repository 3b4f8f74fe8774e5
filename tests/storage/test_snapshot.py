"""Snapshots: a consistent stream out of one node, an atomic install into another."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.storage import (
    CorruptSnapshot,
    Put,
    RequestId,
    SnapshotMismatch,
    Storage,
)
from kvstore.storage.env import Txn
from raftcore.configuration import Configuration, Server
from raftcore.types import Entry, EntryType, Role, SnapshotMetadata

from .conftest import MAP_SIZE

CONF = Configuration([Server(1, "a:1", Role.VOTER), Server(2, "b:1", Role.VOTER)])


def fill(s: Storage, n: int = 300) -> None:
    ops = [
        (i, Put(b"key/%05d" % (i % 250), os.urandom(i % 700), request_id=RequestId(i % 20 + 1, i)))
        for i in range(1, n + 1)
    ]
    s.data.apply(ops)


def dump(s: Storage) -> tuple[object, ...]:
    def raw(txn: Txn, db: object) -> list[tuple[bytes, bytes]]:
        return list(txn.cursor(db).iternext())  # type: ignore[arg-type]

    with s.env.read() as txn:
        return (
            raw(txn, s.env.kv_db),
            raw(txn, s.env.sessions_db),
            s.data.applied_index(txn),
            s.data.revision(txn),
        )


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Storage]:
    s = Storage(tmp_path / "target", map_size=MAP_SIZE)
    yield s
    s.close()


def test_stream_and_install_reproduce_the_data(storage: Storage, target: Storage) -> None:
    fill(storage)
    target.data.apply([(1, Put(b"stale", b"gone"))])  # replaced by the install
    with storage.snapshot_source(chunk_size=4096) as src:
        assert (src.applied_index, src.revision) == (300, 300)
        chunks = list(src.chunks())
    assert len(chunks) > 5  # really chunked
    info = target.install_snapshot(chunks)
    assert (info.applied_index, info.revision, info.kv_count) == (300, 300, 250)
    assert dump(target) == dump(storage)
    assert target.data.get(b"stale") is None
    # The exactly-once table came along: a retry on the new node is not re-applied.
    (retry,) = target.data.apply([(301, Put(b"key/00001", b"x", request_id=RequestId(20, 299)))])
    assert retry is not None and retry.revision == 299


def test_stream_is_a_consistent_cut(storage: Storage, target: Storage) -> None:
    fill(storage, 50)
    src = storage.snapshot_source(chunk_size=512)
    expected = dump(storage)
    storage.data.apply([(51, Put(b"later", b"1"))])  # applied while streaming
    target.install_snapshot(src.chunks())
    assert dump(target) == expected


def test_empty_store_snapshot(storage: Storage, target: Storage) -> None:
    target.data.apply([(1, Put(b"x", b"1"))])
    target.install_snapshot(storage.snapshot_source().chunks())
    assert target.data.range().kvs == []
    assert dump(target) == dump(storage)


def test_install_with_metadata_cuts_the_log(storage: Storage, target: Storage) -> None:
    fill(storage, 40)
    entries = [Entry(1, EntryType.COMMAND, b"%d" % i) for i in range(50)]
    target.log.append(1, entries)  # a diverging log: term at index 40 is 1, not 2
    meta = SnapshotMetadata(40, 2, CONF, 1)
    target.install_snapshot(storage.snapshot_source().chunks(), meta)
    assert target.stable.snapshot_metadata() == meta
    assert (target.log.first_index(), target.log.last_index()) == (41, 40)
    assert target.data.applied_index() == 40


def test_install_keeps_entries_after_a_matching_snapshot_entry(
    storage: Storage, target: Storage
) -> None:
    fill(storage, 40)
    target.log.append(1, [Entry(2, EntryType.COMMAND, b"%d" % i) for i in range(50)])
    target.install_snapshot(storage.snapshot_source().chunks(), SnapshotMetadata(40, 2, CONF, 1))
    assert (target.log.first_index(), target.log.last_index()) == (41, 50)


def test_data_older_than_the_metadata_is_refused(storage: Storage, target: Storage) -> None:
    fill(storage, 10)
    with pytest.raises(SnapshotMismatch):
        target.install_snapshot(
            storage.snapshot_source().chunks(), SnapshotMetadata(11, 1, CONF, 1)
        )


@pytest.mark.parametrize("damage", ["flip", "truncate", "trailing", "magic"])
def test_damaged_stream_changes_nothing(storage: Storage, target: Storage, damage: str) -> None:
    fill(storage, 60)
    target.data.apply([(1, Put(b"mine", b"1"))])
    before = dump(target)
    stream = bytearray(b"".join(storage.snapshot_source().chunks()))
    if damage == "flip":
        stream[len(stream) // 2] ^= 0x01
    elif damage == "truncate":
        del stream[-7:]
    elif damage == "trailing":
        stream += b"\x00"
    else:
        stream[0] ^= 0xFF
    with pytest.raises(CorruptSnapshot):
        target.install_snapshot([bytes(stream)])
    assert dump(target) == before
    assert not [n for n in os.listdir(target.env.path) if n.endswith(".partial")]


def test_incremental_installer_and_stale_spool_cleanup(storage: Storage, tmp_path: Path) -> None:
    fill(storage, 30)
    path = tmp_path / "t2"
    with Storage(path, map_size=MAP_SIZE) as t:
        inst = t.snapshot_installer()
        for chunk in storage.snapshot_source(chunk_size=256).chunks():
            inst.feed(chunk)
        assert inst.bytes_received > 0
        # A crash here would leave the spool behind ...
    assert [n for n in os.listdir(path) if n.endswith(".partial")]
    with Storage(path, map_size=MAP_SIZE) as t:  # ... and reopening removes it.
        assert not [n for n in os.listdir(path) if n.endswith(".partial")]
        assert t.data.applied_index() == 0
