"""The backup file of ``kvctl snapshot save`` and ``kvstore restore``.

Layout (integers big-endian)::

    header, HEADER_SIZE bytes:
        magic b"KVBACKUP", format version u16, header size u16,
        applied index, revision, key count, raft term, cluster id, member id,
        created (Unix ms), data size: u64 each,
        SHA-256 of the data (32 bytes),
        CRC-32 of the header bytes before it (u32)
    data, ``data size`` bytes: the member's snapshot stream, verbatim
        (kvstore.storage.snapshot's format, which has its own magic, record
        counts and CRC-32, checked again when it is loaded)

Why a header of its own around the stream: ``kvstore restore`` must refuse a
truncated or damaged file before it creates anything, with a message that
says which (too short, not a backup, newer format, damaged header, missing
bytes, checksum mismatch), and ``kvctl snapshot status`` must describe a
file without loading it. The SHA-256 is the one the member computed while
streaming (the RPC's trailer), so the file proves it holds exactly what the
member sent.

Writing is atomic and streaming: :class:`BackupWriter` writes to
``FILE.part`` (header with a zero size first), appends chunks as they arrive,
then rewrites the header with the size and checksum, fsyncs and renames over
``FILE``. A save that fails or is interrupted leaves no ``FILE`` (an older
one stays intact), and memory holds one chunk at a time, on both ends.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

MAGIC = b"KVBACKUP"
FORMAT_VERSION = 1
CHUNK_SIZE = 1 << 20
PART_SUFFIX = ".part"

_PREFIX = struct.Struct(">8sHH")  # magic, version, header size
_FIELDS = struct.Struct(">QQQQQQQQ32s")
_CRC = struct.Struct(">I")
HEADER_SIZE = _PREFIX.size + _FIELDS.size + _CRC.size


class BackupError(ValueError):
    """A backup file that cannot be used; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, slots=True)
class BackupHeader:
    """What a backup holds (the fields of ``Cluster.Snapshot``'s SnapshotInfo) and its checksum."""

    applied_index: int
    revision: int
    key_count: int
    raft_term: int
    cluster_id: int
    member_id: int
    created_ms: int = 0
    data_size: int = 0
    data_sha256: bytes = bytes(32)

    def encode(self) -> bytes:
        raw = _PREFIX.pack(MAGIC, FORMAT_VERSION, HEADER_SIZE) + _FIELDS.pack(
            self.applied_index,
            self.revision,
            self.key_count,
            self.raft_term,
            self.cluster_id,
            self.member_id,
            self.created_ms,
            self.data_size,
            self.data_sha256,
        )
        return raw + _CRC.pack(zlib.crc32(raw))

    @classmethod
    def decode(cls, raw: bytes, name: str = "backup") -> BackupHeader:
        """Parse a header; BackupError saying what is wrong with it."""
        if len(raw) < _PREFIX.size or raw[: len(MAGIC)] != MAGIC:
            raise BackupError(f"{name} is not a kvstore backup (no {MAGIC.decode()} header)")
        _, version, size = _PREFIX.unpack_from(raw)
        if version != FORMAT_VERSION:
            raise BackupError(
                f"{name} is a backup of format version {version}; this kvstore reads "
                f"version {FORMAT_VERSION}"
            )
        if size != HEADER_SIZE or len(raw) < HEADER_SIZE:
            raise BackupError(f"{name} is truncated or damaged: its header is incomplete")
        (crc,) = _CRC.unpack_from(raw, HEADER_SIZE - _CRC.size)
        if crc != zlib.crc32(raw[: HEADER_SIZE - _CRC.size]):
            raise BackupError(f"{name} is damaged: its header fails its checksum")
        return cls(*_FIELDS.unpack_from(raw, _PREFIX.size))

    @property
    def sha256_hex(self) -> str:
        return self.data_sha256.hex()


class BackupWriter:
    """Streams a backup into ``path`` atomically (see module doc); use as a context manager.

    ``commit`` checks the received data against the sender's size and
    SHA-256, then makes the file durable under its final name; leaving the
    block without a commit removes ``path.part``.
    """

    def __init__(self, path: str | os.PathLike[str], header: BackupHeader) -> None:
        self.path = Path(path)
        self.part = self.path.with_name(self.path.name + PART_SUFFIX)
        self.header = header
        self.size = 0
        self._digest = hashlib.sha256()
        self._file: BinaryIO | None = open(self.part, "wb")  # noqa: SIM115 - closed by commit/abort
        self._file.write(header.encode())

    def write(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("backup writer is committed or aborted")
        self._file.write(chunk)
        self._digest.update(chunk)
        self.size += len(chunk)

    def commit(self, size: int, sha256: bytes) -> BackupHeader:
        """Finish the file if it holds ``size`` bytes with this SHA-256; the final header."""
        f = self._file
        if f is None:
            raise RuntimeError("backup writer is committed or aborted")
        digest = self._digest.digest()
        if size != self.size or sha256 != digest:
            raise BackupError(
                f"the backup was damaged in transit: received {self.size} bytes with SHA-256 "
                f"{digest.hex()}, the member sent {size} bytes with SHA-256 {sha256.hex()}"
            )
        header = dataclasses.replace(
            self.header,
            created_ms=self.header.created_ms or int(time.time() * 1000),
            data_size=self.size,
            data_sha256=digest,
        )
        f.seek(0)
        f.write(header.encode())
        f.flush()
        os.fsync(f.fileno())
        f.close()
        self._file = None
        os.replace(self.part, self.path)
        fsync_dir(self.path.parent)
        return header

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(FileNotFoundError):
                self.part.unlink()

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def read_header(path: str | os.PathLike[str]) -> BackupHeader:
    """The header of a backup file, checked against the file's size (not its checksum)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(HEADER_SIZE)
            actual = os.fstat(f.fileno()).st_size
    except OSError as exc:
        raise BackupError(f"cannot read backup {path}: {exc.strerror or exc}") from None
    header = BackupHeader.decode(raw, str(path))
    if header.data_size == 0 or header.data_sha256 == bytes(32):
        raise BackupError(f"{path} is incomplete: its save did not finish")
    expected = HEADER_SIZE + header.data_size
    if actual < expected:
        raise BackupError(
            f"{path} is truncated: {actual} bytes, its header announces {expected} "
            f"({actual - expected} bytes missing)"
        )
    if actual > expected:
        raise BackupError(
            f"{path} is damaged: {actual} bytes, {actual - expected} more than its header announces"
        )
    return header


def iter_data(path: str | os.PathLike[str], chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """The data of a backup in chunks; raises BackupError after the last chunk if
    the SHA-256 does not match (so use nothing read before the iterator ends)."""
    header = read_header(path)
    digest = hashlib.sha256()
    remaining = header.data_size
    with open(path, "rb") as f:
        f.seek(HEADER_SIZE)
        while remaining > 0:
            chunk = f.read(min(chunk_size, remaining))
            if not chunk:
                raise BackupError(f"{path} is truncated: it ended while being read")
            remaining -= len(chunk)
            digest.update(chunk)
            yield chunk
    if digest.digest() != header.data_sha256:
        raise BackupError(
            f"{path} is corrupted: the SHA-256 of its data is {digest.hexdigest()}, "
            f"its header says {header.sha256_hex}"
        )


def verify(path: str | os.PathLike[str]) -> BackupHeader:
    """Read the whole file; its header if it is complete and its checksum matches."""
    for _ in iter_data(path):
        pass
    return read_header(path)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
