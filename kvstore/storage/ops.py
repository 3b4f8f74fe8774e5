"""State machine operations and their results, as plain dataclasses.

These are what the data store applies. How a command is encoded into a log
entry is behind :class:`CommandCodec`: :class:`BinaryCodec` is a compact
struct-based format used until the protobuf commands of the API exist; the
FSM layer can swap in a protobuf codec without touching the data store, which
only ever sees decoded operations.

Field meanings follow the client API (DESIGN 3.1): ``prev_kv`` asks for the
previous key-value; a compare-and-swap has exactly one expectation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from kvstore.storage.errors import InvalidArgument

#: LMDB's compile-time maximum key size (MDB_MAXKEYSIZE); the API's key limit.
MAX_KEY_SIZE = 511


@dataclass(frozen=True, slots=True)
class RequestId:
    """Identifies a client write for exactly-once retries (dissertation 6.3).

    A client id issues its sequences one at a time (a new sequence only after
    the previous one was answered); concurrent writers use distinct client ids.
    """

    client_id: int
    sequence: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class Put:
    key: bytes
    value: bytes
    prev_kv: bool = False
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    key: bytes
    prev_kv: bool = False
    request_id: RequestId | None = None


@dataclass(frozen=True, slots=True)
class CompareAndSwap:
    """Set ``new_value`` iff the key matches the one expectation that is set.

    ``expected_value``: the key exists with this value; ``expected_absent``:
    the key does not exist; ``expected_mod_revision`` (non-zero): the key
    exists with this mod revision. ``False``/``0`` mean unset, as in proto3.
    """

    key: bytes
    new_value: bytes
    expected_value: bytes | None = None
    expected_absent: bool = False
    expected_mod_revision: int = 0
    request_id: RequestId | None = None


Operation: TypeAlias = Put | Delete | CompareAndSwap


@dataclass(frozen=True, slots=True)
class PutResult:
    revision: int  # the store revision after the put
    prev_kv: KeyValue | None = None  # only when asked for and the key existed


@dataclass(frozen=True, slots=True)
class DeleteResult:
    revision: int
    deleted: bool
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class CasResult:
    revision: int
    succeeded: bool
    kv: KeyValue | None  # after the swap when it succeeded, else the current state


@dataclass(frozen=True, slots=True)
class Rejected:
    """An operation that reached the log but was not applied, deterministically.

    ``code``: "INVALID_ARGUMENT" (e.g. key size) or "SESSION_EXPIRED" (a
    request id older than the last one recorded for its client, whose result
    is no longer kept). Rejecting instead of raising keeps every replica's
    state machine going and identical.
    """

    revision: int
    code: str
    message: str


Result: TypeAlias = PutResult | DeleteResult | CasResult | Rejected


def check_key(key: bytes, what: str = "key") -> None:
    """Raise InvalidArgument unless 1 <= len(key) <= 511 (LMDB's maximum key size)."""
    if not isinstance(key, bytes | bytearray | memoryview):
        raise InvalidArgument(f"{what} must be bytes, got {type(key).__name__}")
    if len(key) == 0:
        raise InvalidArgument(f"{what} is empty; keys must be 1 to {MAX_KEY_SIZE} bytes")
    if len(key) > MAX_KEY_SIZE:
        raise InvalidArgument(
            f"{what} is {len(key)} bytes; keys must be 1 to {MAX_KEY_SIZE} bytes "
            "(LMDB's maximum key size)"
        )


def validate(op: Operation, max_value_size: int | None = None) -> None:
    """Raise InvalidArgument if ``op`` can never be applied; names the limit broken."""
    check_key(op.key)
    value = (
        op.value if isinstance(op, Put) else op.new_value if isinstance(op, CompareAndSwap) else b""
    )
    if max_value_size is not None and len(value) > max_value_size:
        raise InvalidArgument(
            f"value is {len(value)} bytes; values may be at most {max_value_size} bytes"
        )
    if isinstance(op, CompareAndSwap):
        n = (
            (op.expected_value is not None)
            + bool(op.expected_absent)
            + (op.expected_mod_revision != 0)
        )
        if n != 1:
            raise InvalidArgument(
                "compare-and-swap needs exactly one expectation (value, absent=true or "
                f"mod_revision>0), got {n}"
            )
        if op.expected_mod_revision < 0:
            raise InvalidArgument("expected mod_revision must be positive")
    if op.request_id is not None and (op.request_id.client_id <= 0 or op.request_id.sequence <= 0):
        raise InvalidArgument("request id: client_id and sequence must be positive")


class CommandCodec(Protocol):
    """Turns an operation into the data of a COMMAND log entry and back."""

    def encode(self, op: Operation) -> bytes: ...

    def decode(self, data: bytes) -> Operation: ...


# BinaryCodec layout: tag u8, flags u8, client_id u64, sequence u64, then
# length-prefixed (u32) byte fields. flags: 1 prev_kv, 2 has request id,
# 4 expected_value set, 8 expected_absent. CAS adds expected_mod_revision u64.
_TAG_PUT, _TAG_DELETE, _TAG_CAS = 1, 2, 3
_CMD = struct.Struct(">BBQQ")
_LEN = struct.Struct(">I")
_U64 = struct.Struct(">Q")


def _field(b: bytes) -> bytes:
    return _LEN.pack(len(b)) + b


def _read_field(data: bytes, pos: int) -> tuple[bytes, int]:
    (n,) = _LEN.unpack_from(data, pos)
    pos += _LEN.size
    if pos + n > len(data):
        raise InvalidArgument("command is truncated")
    return bytes(data[pos : pos + n]), pos + n


class BinaryCodec:
    """A compact struct-based command encoding (stand-in until protobuf)."""

    def encode(self, op: Operation) -> bytes:
        rid = op.request_id
        flags = (1 if getattr(op, "prev_kv", False) else 0) | (2 if rid else 0)
        cid, seq = (rid.client_id, rid.sequence) if rid else (0, 0)
        if isinstance(op, Put):
            return _CMD.pack(_TAG_PUT, flags, cid, seq) + _field(op.key) + _field(op.value)
        if isinstance(op, Delete):
            return _CMD.pack(_TAG_DELETE, flags, cid, seq) + _field(op.key)
        flags |= (4 if op.expected_value is not None else 0) | (8 if op.expected_absent else 0)
        return (
            _CMD.pack(_TAG_CAS, flags, cid, seq)
            + _U64.pack(op.expected_mod_revision)
            + _field(op.key)
            + _field(op.new_value)
            + _field(op.expected_value or b"")
        )

    def decode(self, data: bytes) -> Operation:
        try:
            tag, flags, cid, seq = _CMD.unpack_from(data)
            rid = RequestId(cid, seq) if flags & 2 else None
            pos = _CMD.size
            if tag == _TAG_PUT:
                key, pos = _read_field(data, pos)
                value, pos = _read_field(data, pos)
                return Put(key, value, prev_kv=bool(flags & 1), request_id=rid)
            if tag == _TAG_DELETE:
                key, pos = _read_field(data, pos)
                return Delete(key, prev_kv=bool(flags & 1), request_id=rid)
            if tag == _TAG_CAS:
                (mod_rev,) = _U64.unpack_from(data, pos)
                key, pos = _read_field(data, pos + _U64.size)
                new_value, pos = _read_field(data, pos)
                expected, pos = _read_field(data, pos)
                return CompareAndSwap(
                    key,
                    new_value,
                    expected_value=expected if flags & 4 else None,
                    expected_absent=bool(flags & 8),
                    expected_mod_revision=mod_rev,
                    request_id=rid,
                )
        except struct.error as exc:
            raise InvalidArgument(f"command is malformed: {exc}") from exc
        raise InvalidArgument(f"unknown command tag {tag}")
