"""The backup file format: atomic streaming writes, and every kind of damage refused."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kvstore.backup_file import (
    HEADER_SIZE,
    BackupError,
    BackupHeader,
    BackupWriter,
    iter_data,
    read_header,
    verify,
)

INFO = BackupHeader(
    applied_index=120, revision=77, key_count=5, raft_term=3, cluster_id=99, member_id=2
)
CHUNKS = [os.urandom(1000), b"", os.urandom(1 << 16), b"tail"]
DATA = b"".join(CHUNKS)


def write_backup(path: Path, chunks: list[bytes] = CHUNKS) -> BackupHeader:
    digest = hashlib.sha256(b"".join(chunks)).digest()
    with BackupWriter(path, INFO) as writer:
        for chunk in chunks:
            writer.write(chunk)
        return writer.commit(sum(map(len, chunks)), digest)


def damaged(path: Path, offset: int) -> Path:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x40
    out = path.with_name("damaged")
    out.write_bytes(bytes(raw))
    return out


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    header = write_backup(path)
    assert header.data_size == len(DATA)
    assert header.data_sha256 == hashlib.sha256(DATA).digest()
    assert header.created_ms > 0
    assert (header.applied_index, header.revision, header.key_count) == (120, 77, 5)
    assert read_header(path) == header == verify(path)
    assert b"".join(iter_data(path, chunk_size=333)) == DATA
    assert path.stat().st_size == HEADER_SIZE + len(DATA)
    assert not path.with_name("backup.kvb.part").exists()


def test_checksum_mismatch_at_commit_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    with BackupWriter(path, INFO) as writer:
        writer.write(b"abc")
        with pytest.raises(BackupError, match="damaged in transit"):
            writer.commit(3, hashlib.sha256(b"abd").digest())
        with pytest.raises(BackupError, match="damaged in transit"):
            writer.commit(4, hashlib.sha256(b"abc").digest())
    assert list(tmp_path.iterdir()) == []


def test_interrupted_save_keeps_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    old = write_backup(path)
    with pytest.raises(RuntimeError), BackupWriter(path, INFO) as writer:
        writer.write(b"partial")
        assert writer.part.exists()
        raise RuntimeError("the stream broke")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.kvb"]
    assert verify(path) == old


@pytest.mark.parametrize(
    ("size", "message"),
    [
        (0, "not a kvstore backup"),
        (5, "not a kvstore backup"),
        (HEADER_SIZE - 1, "header is incomplete"),
        (HEADER_SIZE, "is truncated"),
        (HEADER_SIZE + 1000, "is truncated"),
    ],
)
def test_truncated_refused(tmp_path: Path, size: int, message: str) -> None:
    path = tmp_path / "backup.kvb"
    write_backup(path)
    os.truncate(path, size)
    with pytest.raises(BackupError, match=message):
        verify(path)


def test_damaged_data_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    write_backup(path)
    bad = damaged(path, HEADER_SIZE + 5000)
    read_header(bad)  # the header alone cannot tell
    with pytest.raises(BackupError, match="is corrupted: the SHA-256 of its data"):
        verify(bad)


def test_damaged_header_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    write_backup(path)
    with pytest.raises(BackupError, match="header fails its checksum"):
        read_header(damaged(path, 20))
    with pytest.raises(BackupError, match="not a kvstore backup"):
        read_header(damaged(path, 0))


def test_trailing_bytes_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    write_backup(path)
    with open(path, "ab") as f:
        f.write(b"x")
    with pytest.raises(BackupError, match="1 more than its header announces"):
        verify(path)


def test_newer_format_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    write_backup(path)
    raw = bytearray(path.read_bytes())
    raw[9] = 2  # the version's low byte
    path.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="format version 2; this kvstore reads version 1"):
        read_header(path)


def test_unfinished_part_file_refused(tmp_path: Path) -> None:
    path = tmp_path / "backup.kvb"
    writer = BackupWriter(path, INFO)
    writer.write(b"some data")
    assert writer._file is not None
    writer._file.flush()
    try:
        with pytest.raises(BackupError, match="incomplete: its save did not finish"):
            read_header(writer.part)
    finally:
        writer.abort()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"cannot read backup .*missing\.kvb"):
        verify(tmp_path / "missing.kvb")
