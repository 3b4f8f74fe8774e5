"""Snapshots of the data: a consistent stream out, an atomic install in.

**Out** (:class:`SnapshotSource`): one LMDB read transaction is opened when
the source is created, so the stream is a consistent cut of ``kv``,
``sessions``, the applied index and the revision, however long the transfer
takes and whatever is applied meanwhile (LMDB's MVCC; the cost is that pages
freed meanwhile are not reused until the reader ends, so close sources).

**In** (:class:`SnapshotInstaller`): chunks are spooled to a file beside the
environment as they arrive; :meth:`SnapshotInstaller.finish` then replaces the
data in ONE write transaction (drop ``kv`` and ``sessions``, load the stream,
set applied index and revision, and, given the Raft metadata, record it and
cut the log), verifying the checksum as it goes; a bad stream aborts the
transaction and leaves the old data untouched. Why one transaction rather
than building a fresh environment and swapping directories: the log, term and
vote live in the same environment and must survive the install, and the data
and the snapshot metadata and the log cut must change together, which only a
single transaction gives without a copy of the log or a rename protocol.
Spooling first keeps the write lock (which the group commit writer needs for
term, vote and entries) off the network's pace: it is held only while
loading from local disk.

Stream format: ``MAGIC`` then frames ``type u8, length u32, payload``:
HEADER (applied index, revision, kv count, session keys; u64 each), KV and
SESSION records (key length u16, key, stored value verbatim, both
sub-databases in key order), END (crc32 of every byte before END, record
count). Chunks are cut at any byte; a frame may span chunks.
"""

from __future__ import annotations

import contextlib
import os
import struct
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from kvstore.storage.data import KEY_APPLIED_INDEX, KEY_REVISION
from kvstore.storage.env import Db, Env, Txn
from kvstore.storage.errors import CorruptSnapshot, SnapshotMismatch
from kvstore.storage.log import LogStore
from kvstore.storage.stable import StableStore, get_u64, put_u64
from raftcore.types import SnapshotMetadata

MAGIC = b"KVSNAP\x00\x01"
DEFAULT_CHUNK_SIZE = 1 << 20
SPOOL_PREFIX = "snapshot-"
SPOOL_SUFFIX = ".partial"

_FRAME = struct.Struct(">BI")
_HEADER = struct.Struct(">QQQQ")
_KEYLEN = struct.Struct(">H")
_END = struct.Struct(">IQ")
_T_HEADER, _T_KV, _T_SESSION, _T_END = 1, 2, 3, 4


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    applied_index: int
    revision: int
    kv_count: int
    session_keys: int


class SnapshotSource:
    """A consistent read of the data, streamed as byte chunks.

    ``applied_index`` tells which log index the data reflects: the sender
    should describe the snapshot with that index (or an earlier one; the
    receiver's apply skips entries already contained).
    """

    def __init__(self, env: Env, *, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
        self._env = env
        self._chunk_size = chunk_size
        self._txn: Txn | None = env.begin_read()
        self.applied_index = get_u64(self._txn, env.meta_db, KEY_APPLIED_INDEX)
        self.revision = get_u64(self._txn, env.meta_db, KEY_REVISION)
        self.kv_count = int(self._txn.stat(env.kv_db)["entries"])
        self.session_keys = int(self._txn.stat(env.sessions_db)["entries"])
        # The pages the two sub-databases occupy: close to (a little above) the
        # stream's size, known before streaming; for progress reports only.
        self.size_estimate = _pages(self._txn, env.kv_db) + _pages(self._txn, env.sessions_db)

    def chunks(self) -> Iterator[bytes]:
        """Yield the stream in chunks of about ``chunk_size`` bytes; closes the source."""
        txn = self._txn
        if txn is None:
            raise RuntimeError("snapshot source already consumed or closed")
        try:
            crc = 0  # of every byte before the END frame
            buf = bytearray(MAGIC)
            header = _HEADER.pack(
                self.applied_index, self.revision, self.kv_count, self.session_keys
            )
            buf += _FRAME.pack(_T_HEADER, len(header)) + header
            records = 0
            for ftype, db in ((_T_KV, self._env.kv_db), (_T_SESSION, self._env.sessions_db)):
                for key, value in txn.cursor(db).iternext():
                    buf += _FRAME.pack(ftype, _KEYLEN.size + len(key) + len(value))
                    buf += _KEYLEN.pack(len(key))
                    buf += key
                    buf += value
                    records += 1
                    if len(buf) >= self._chunk_size:
                        chunk = bytes(buf)
                        buf.clear()
                        crc = zlib.crc32(chunk, crc)
                        yield chunk
            crc = zlib.crc32(buf, crc)
            end = _END.pack(crc, records)
            buf += _FRAME.pack(_T_END, len(end)) + end
            yield bytes(buf)
        finally:
            self.close()

    def close(self) -> None:
        if self._txn is not None:
            self._txn.abort()
            self._txn = None

    def __enter__(self) -> SnapshotSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pages(txn: Txn, db: Db) -> int:
    stat = txn.stat(db)
    return (stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]) * stat["psize"]


class _FrameReader:
    """Reads frames from a spooled stream, keeping the crc of what it read."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.crc = 0

    def read_exact(self, n: int) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise CorruptSnapshot(
                f"snapshot stream is truncated (wanted {n} bytes, got {len(data)})"
            )
        return data

    def at_eof(self) -> bool:
        return self._f.read(1) == b""

    def frame(self) -> tuple[int, bytes]:
        head = self.read_exact(_FRAME.size)
        ftype, length = _FRAME.unpack(head)
        payload = self.read_exact(length)
        if ftype != _T_END:
            self.crc = zlib.crc32(payload, zlib.crc32(head, self.crc))
        return ftype, payload


class SnapshotInstaller:
    """Receives a snapshot stream and installs it atomically (see module doc).

    ``feed`` may be called from the transport as chunks arrive; ``finish``
    does the single write transaction (run it off the event loop: it holds
    LMDB's write lock for as long as loading takes).
    """

    def __init__(self, env: Env, log: LogStore, stable: StableStore) -> None:
        self._env = env
        self._log = log
        self._stable = stable
        fd, name = tempfile.mkstemp(prefix=SPOOL_PREFIX, suffix=SPOOL_SUFFIX, dir=env.path)
        self._path = name
        self._file: BinaryIO | None = os.fdopen(fd, "w+b")
        self.bytes_received = 0

    def feed(self, chunk: bytes) -> None:
        if self._file is None:
            raise RuntimeError("snapshot installer is finished or aborted")
        self._file.write(chunk)
        self.bytes_received += len(chunk)

    def finish(self, metadata: SnapshotMetadata | None = None) -> SnapshotInfo:
        """Replace the data with the received stream, in one write transaction.

        With ``metadata`` (the Raft snapshot being installed), the same
        transaction records it and cuts the log: entries after the snapshot
        are kept if the log has the snapshot's last entry with the same term,
        otherwise the whole log is discarded (Raft figure 13, step 6-7).
        Raises CorruptSnapshot or SnapshotMismatch (nothing changed) or
        NoSpace (nothing changed; the map is too small for the snapshot).
        """
        f = self._file
        if f is None:
            raise RuntimeError("snapshot installer is finished or aborted")
        try:
            f.flush()
            f.seek(0)
            with self._env.write() as txn:
                info = self._load(txn, _FrameReader(f), metadata)
                if metadata is not None:
                    self._stable.put_snapshot(txn, metadata)
                    if self._log.term_at(metadata.index, txn) == metadata.term:
                        self._log.compact_in(txn, metadata.index + 1)
                    else:
                        self._log.reset_in(txn, metadata.index + 1)
            return info
        finally:
            self.abort()

    def abort(self) -> None:
        """Discard what was received; the data is untouched."""
        if self._file is not None:
            self._file.close()
            self._file = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)

    def _load(
        self, txn: Txn, reader: _FrameReader, metadata: SnapshotMetadata | None
    ) -> SnapshotInfo:
        magic = reader.read_exact(len(MAGIC))
        if magic != MAGIC:
            raise CorruptSnapshot(f"not a snapshot stream of this format (magic {magic!r})")
        reader.crc = zlib.crc32(magic)
        ftype, payload = reader.frame()
        if ftype != _T_HEADER or len(payload) != _HEADER.size:
            raise CorruptSnapshot("snapshot stream does not start with a header")
        applied, revision, kv_count, session_keys = _HEADER.unpack(payload)
        if metadata is not None and applied < metadata.index:
            raise SnapshotMismatch(
                f"snapshot data is at applied index {applied}, before the snapshot "
                f"index {metadata.index} it is installed as"
            )
        txn.drop(self._env.kv_db, delete=False)
        txn.drop(self._env.sessions_db, delete=False)
        cursors = {
            _T_KV: txn.cursor(self._env.kv_db),
            _T_SESSION: txn.cursor(self._env.sessions_db),
        }
        counts = {_T_KV: 0, _T_SESSION: 0}
        while True:
            ftype, payload = reader.frame()
            if ftype == _T_END:
                break
            cur = cursors.get(ftype)
            if cur is None or len(payload) < _KEYLEN.size:
                raise CorruptSnapshot(f"snapshot stream has an unknown frame type {ftype}")
            (klen,) = _KEYLEN.unpack_from(payload)
            key = payload[_KEYLEN.size : _KEYLEN.size + klen]
            # append=True: keys arrive in order, so LMDB appends without a
            # search; an out-of-order or repeated key makes put return False.
            if len(key) != klen or not cur.put(key, payload[_KEYLEN.size + klen :], append=True):
                raise CorruptSnapshot("snapshot stream has a damaged or out-of-order record")
            counts[ftype] += 1
        if len(payload) != _END.size:
            raise CorruptSnapshot("snapshot stream has a damaged end frame")
        crc, records = _END.unpack(payload)
        if crc != reader.crc or records != counts[_T_KV] + counts[_T_SESSION]:
            raise CorruptSnapshot("snapshot stream checksum mismatch: damaged in transit")
        if counts[_T_KV] != kv_count or counts[_T_SESSION] != session_keys:
            raise CorruptSnapshot("snapshot stream record counts do not match its header")
        if not reader.at_eof():
            raise CorruptSnapshot("snapshot stream has trailing bytes after its end")
        put_u64(txn, self._env.meta_db, KEY_APPLIED_INDEX, applied)
        put_u64(txn, self._env.meta_db, KEY_REVISION, revision)
        return SnapshotInfo(applied, revision, kv_count, session_keys)


def install_snapshot(
    env: Env,
    log: LogStore,
    stable: StableStore,
    chunks: Iterable[bytes],
    metadata: SnapshotMetadata | None = None,
) -> SnapshotInfo:
    """Spool ``chunks`` and install them (see :meth:`SnapshotInstaller.finish`)."""
    installer = SnapshotInstaller(env, log, stable)
    try:
        for chunk in chunks:
            installer.feed(chunk)
    except BaseException:
        installer.abort()
        raise
    return installer.finish(metadata)


def remove_stale_spools(env: Env) -> None:
    """Delete spool files left by a crash during a transfer (they are never resumed)."""
    for name in os.listdir(env.path):
        if name.startswith(SPOOL_PREFIX) and name.endswith(SPOOL_SUFFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(env.path / name)
