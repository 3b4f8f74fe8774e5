"""``kvstore restore`` on real LMDB environments: what a restored data directory
holds, that members restored alike are identical, and what is refused."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.backup_file import BackupError, BackupHeader, BackupWriter
from kvstore.cli.server import main as kvstore_main
from kvstore.node import cluster_id_of
from kvstore.restore import RESTORED_TERM, RestoreError, restore
from kvstore.storage import Delete, KeyValue, LoadedState, Put, RequestId, Session, Storage
from raftcore import Role

MAP_SIZE = 64 << 20
MEMBERS = {1: "127.0.0.1:7201", 2: "127.0.0.1:7202", 3: "127.0.0.1:7203"}


@pytest.fixture
def source(tmp_path: Path) -> Iterator[Storage]:
    """A member's data: overwrites, a delete, a re-create, and a client session."""
    with Storage(tmp_path / "source", map_size=MAP_SIZE) as storage:
        storage.data.apply(
            [
                (1, None),  # the bootstrap configuration entry
                (2, Put(b"a", b"1")),
                (3, Put(b"b", b"2", request_id=RequestId(7, 1))),
                (4, Put(b"a", b"3")),
                (5, Delete(b"b")),
                (6, Put(b"b", b"4")),
                (7, Put(b"c", b"5" * 5000)),
            ]
        )
        yield storage


def save(storage: Storage, path: Path, stream: bytes | None = None) -> BackupHeader:
    """What ``kvctl snapshot save`` writes, without the RPC: the source's stream."""
    source = storage.snapshot_source(chunk_size=100)
    info = BackupHeader(
        applied_index=source.applied_index,
        revision=source.revision,
        key_count=source.kv_count,
        raft_term=4,
        cluster_id=1234,
        member_id=2,
    )
    chunks = list(source.chunks()) if stream is None else [stream]
    with BackupWriter(path, info) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit(writer.size, hashlib.sha256(b"".join(chunks)).digest())


def contents(data_dir: Path) -> tuple[LoadedState, list[KeyValue], list[Session], str]:
    with Storage(data_dir, map_size=MAP_SIZE) as storage:
        state = storage.load()
        kvs = storage.data.range().kvs
        with storage.env.read() as txn:
            sessions = list(storage.data.sessions.sessions(txn))
        return state, kvs, sessions, (data_dir / "cluster_id").read_text()


def test_restored_members_start_identical(tmp_path: Path, source: Storage) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    for member_id in MEMBERS:
        header = restore(backup, tmp_path / f"m{member_id}", member_id, MEMBERS)
        assert (header.applied_index, header.revision, header.key_count) == (7, 6, 3)
    first = contents(tmp_path / "m1")
    assert contents(tmp_path / "m2") == first == contents(tmp_path / "m3")

    state, kvs, sessions, cluster_id = first
    assert state.term == RESTORED_TERM and state.voted_for == 0
    assert state.snapshot is not None
    assert (state.snapshot.index, state.snapshot.term) == (7, RESTORED_TERM)
    assert state.snapshot.configuration_index == 7
    assert [(s.id, s.address, s.role) for s in state.snapshot.configuration] == [
        (i, a, Role.VOTER) for i, a in MEMBERS.items()
    ]
    assert (state.start_index, state.last_index) == (8, 7)  # the log continues at 8
    assert (state.applied_index, state.revision) == (7, 6)
    assert kvs == source.data.range().kvs
    assert [(kv.key, kv.version, kv.create_revision) for kv in kvs][:2] == [
        (b"a", 2, 1),
        (b"b", 1, 5),  # re-created after the delete at revision 4
    ]
    assert [(s.client_id, s.sequence) for s in sessions] == [(7, 1)]
    assert int(cluster_id) == cluster_id_of(MEMBERS)
    assert sorted(p.name for p in (tmp_path / "m1").iterdir()) == [
        "cluster_id",
        "data.mdb",
        "lock.mdb",
    ]


def test_non_empty_data_dir_refused(tmp_path: Path, source: Storage) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    data_dir = tmp_path / "member"
    data_dir.mkdir()
    (data_dir / "data.mdb").write_bytes(b"a member's data")
    with pytest.raises(RestoreError, match=r"member is not empty \(data.mdb\)"):
        restore(backup, data_dir, 1, MEMBERS)
    assert [p.name for p in data_dir.iterdir()] == ["data.mdb"]
    assert (data_dir / "data.mdb").read_bytes() == b"a member's data"


def test_empty_volume_accepted(tmp_path: Path, source: Storage) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    data_dir = tmp_path / "volume"
    (data_dir / "lost+found").mkdir(parents=True)
    (data_dir / ".restore-crashed").mkdir()  # a restore that died: its staging is reclaimed
    restore(backup, data_dir, 2, MEMBERS)
    assert sorted(p.name for p in data_dir.iterdir()) == [
        "cluster_id",
        "data.mdb",
        "lost+found",
    ]


def test_id_outside_the_cluster_refused(tmp_path: Path, source: Storage) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    with pytest.raises(RestoreError, match="--id 4 is not in --initial-cluster"):
        restore(backup, tmp_path / "m4", 4, MEMBERS)
    assert not (tmp_path / "m4").exists()


def test_damaged_stream_inside_a_sound_file_refused(tmp_path: Path, source: Storage) -> None:
    """The file's checksum matches, but the member's stream in it is damaged (e.g. a
    bug, or a file built by hand): the stream's own checks refuse it; nothing is left."""
    good = b"".join(source.snapshot_source().chunks())
    backup = tmp_path / "backup.kvb"
    save(source, backup, stream=good[:-20] + bytes(20))
    with pytest.raises(RestoreError, match="cannot be loaded: snapshot stream"):
        restore(backup, tmp_path / "m1", 1, MEMBERS)
    assert not (tmp_path / "m1").exists()


def test_corrupted_file_refused_before_anything_is_created(tmp_path: Path, source: Storage) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    raw = bytearray(backup.read_bytes())
    raw[-30] ^= 1
    backup.write_bytes(bytes(raw))
    data_dir = tmp_path / "m1"
    with pytest.raises(BackupError, match="is corrupted"):
        restore(backup, data_dir, 1, MEMBERS)
    assert not data_dir.exists()


def test_command_line(tmp_path: Path, source: Storage, capsys: pytest.CaptureFixture[str]) -> None:
    backup = tmp_path / "backup.kvb"
    save(source, backup)
    cluster = ",".join(f"{i}={a}" for i, a in MEMBERS.items())
    args = ["restore", str(backup), "--id", "1", "--initial-cluster", cluster]
    assert kvstore_main([*args, "--data-dir", str(tmp_path / "m1")]) == 0
    out = capsys.readouterr().out
    assert "restored member 1" in out and "3 keys, revision 6, applied index 7" in out
    assert kvstore_main([*args, "--data-dir", str(tmp_path / "m1")]) == 1
    assert "is not empty" in capsys.readouterr().err
    assert kvstore_main(["restore", str(backup), "--data-dir", str(tmp_path / "m2")]) == 2
    assert "--id, --data-dir and --initial-cluster are required" in capsys.readouterr().err
    bad = [*args, "--data-dir", str(tmp_path / "m3"), "--map-size", "lots"]
    assert kvstore_main(bad) == 2
    assert "--map-size" in capsys.readouterr().err
    os_truncated = tmp_path / "truncated.kvb"
    os_truncated.write_bytes(backup.read_bytes()[:-1])
    truncated = ["restore", str(os_truncated), "--id", "1", "--initial-cluster", cluster]
    assert kvstore_main([*truncated, "--data-dir", str(tmp_path / "m4")]) == 1
    assert "is truncated" in capsys.readouterr().err
    assert not (tmp_path / "m4").exists()


def test_size_estimate_is_near_the_stream_size(tmp_path: Path) -> None:
    """The progress bar's total: the pages of the data, known before streaming."""
    with Storage(tmp_path / "big", map_size=MAP_SIZE) as storage:
        storage.data.apply([(i, Put(b"key/%06d" % i, bytes(200))) for i in range(1, 2001)])
        source = storage.snapshot_source()
        estimate = source.size_estimate
        size = sum(map(len, source.chunks()))
    assert size / 2 < estimate < size * 2, (estimate, size)
