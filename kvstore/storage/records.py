"""On-disk encodings private to the storage layer.

A ``kv`` value is the key's metadata then its value: create_revision,
mod_revision, version (u64 each), value bytes. The metadata is fixed-size and
first so a read needs no parsing beyond one ``struct.unpack_from``.

Results are encoded for the session table, which must hand back the original
answer to a retried request. This format is internal (it is never on the wire
except inside a snapshot of the same software), independent of the command
codec, so swapping the command encoding later does not touch stored sessions.
"""

from __future__ import annotations

import struct

from kvstore.storage.errors import StorageError
from kvstore.storage.ops import CasResult, DeleteResult, KeyValue, PutResult, Rejected, Result

_META = struct.Struct(">QQQ")  # create_revision, mod_revision, version


def encode_kv(create_revision: int, mod_revision: int, version: int, value: bytes) -> bytes:
    return _META.pack(create_revision, mod_revision, version) + value


def decode_kv(key: bytes, raw: bytes) -> KeyValue:
    create, mod, version = _META.unpack_from(raw)
    return KeyValue(bytes(key), bytes(raw[_META.size :]), create, mod, version)


# Result layout: tag u8, flag u8, revision u64, then an optional KeyValue
# (flag bit 2) or, for Rejected, two length-prefixed strings.
_RESULT = struct.Struct(">BBQ")
_LEN = struct.Struct(">I")
_TAG_PUT, _TAG_DELETE, _TAG_CAS, _TAG_REJECTED = 1, 2, 3, 4
_HAS_KV = 2


def _kv_bytes(kv: KeyValue) -> bytes:
    return (
        _LEN.pack(len(kv.key))
        + kv.key
        + encode_kv(kv.create_revision, kv.mod_revision, kv.version, kv.value)
    )


def _kv_from(raw: bytes, pos: int) -> KeyValue:
    (n,) = _LEN.unpack_from(raw, pos)
    pos += _LEN.size
    return decode_kv(raw[pos : pos + n], raw[pos + n :])


def encode_result(result: Result) -> bytes:
    if isinstance(result, Rejected):
        code, message = result.code.encode(), result.message.encode()
        return (
            _RESULT.pack(_TAG_REJECTED, 0, result.revision) + _LEN.pack(len(code)) + code + message
        )
    if isinstance(result, PutResult):
        tag, flag, kv = _TAG_PUT, 0, result.prev_kv
    elif isinstance(result, DeleteResult):
        tag, flag, kv = _TAG_DELETE, int(result.deleted), result.prev_kv
    else:
        tag, flag, kv = _TAG_CAS, int(result.succeeded), result.kv
    if kv is None:
        return _RESULT.pack(tag, flag, result.revision)
    return _RESULT.pack(tag, flag | _HAS_KV, result.revision) + _kv_bytes(kv)


def decode_result(raw: bytes) -> Result:
    tag, flag, revision = _RESULT.unpack_from(raw)
    pos = _RESULT.size
    if tag == _TAG_REJECTED:
        (n,) = _LEN.unpack_from(raw, pos)
        pos += _LEN.size
        return Rejected(revision, raw[pos : pos + n].decode(), raw[pos + n :].decode())
    kv = _kv_from(raw, pos) if flag & _HAS_KV else None
    if tag == _TAG_PUT:
        return PutResult(revision, kv)
    if tag == _TAG_DELETE:
        return DeleteResult(revision, bool(flag & 1), kv)
    if tag == _TAG_CAS:
        return CasResult(revision, bool(flag & 1), kv)
    raise StorageError(f"stored result has unknown tag {tag}")
