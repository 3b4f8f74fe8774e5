"""The values :mod:`kvstore.client` returns: small frozen dataclasses.

Plain dataclasses rather than the protobuf messages, so that callers (kvctl,
test harnesses, scripts) get ``None`` for an absent key instead of proto3's
empty default message, and do not depend on generated code.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvstore.v1 import kv_pb2

if TYPE_CHECKING:
    from kvstore.client_errors import KVError

__all__ = [
    "CasResult",
    "Data",
    "DeleteResult",
    "EndpointStatus",
    "Header",
    "KeyValue",
    "LeaderTransfer",
    "Member",
    "MemberChange",
    "MemberList",
    "PutResult",
    "RangeResult",
    "RequestId",
    "Status",
    "to_bytes",
]


@dataclass(frozen=True, slots=True)
class RequestId:
    """The (client id, sequence) pair that makes a retried write apply at most once."""

    client_id: int
    sequence: int


Data = str | bytes


def to_bytes(data: Data | bytearray | memoryview, what: str = "key") -> bytes:
    """Keys and values are bytes on the wire; text is encoded as UTF-8."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be str or bytes, not {type(data).__name__}")


@dataclass(frozen=True, slots=True)
class Header:
    """Who answered and the store's state after the operation (DESIGN 3.1)."""

    cluster_id: int
    member_id: int
    term: int
    revision: int
    leader_id: int


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int


@dataclass(frozen=True, slots=True)
class PutResult:
    header: Header
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class DeleteResult:
    header: Header
    deleted: bool
    prev_kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class RangeResult:
    header: Header
    kvs: list[KeyValue] = field(default_factory=list)
    more: bool = False


@dataclass(frozen=True, slots=True)
class CasResult:
    """``kv``: the state after a successful swap, the current state after a failed one."""

    header: Header
    succeeded: bool
    kv: KeyValue | None = None


@dataclass(frozen=True, slots=True)
class Status:
    endpoint: str
    header: Header
    commit_index: int
    applied_index: int
    last_index: int
    state: str
    db_size_bytes: int
    version: str

    @property
    def is_leader(self) -> bool:
        return self.state == "LEADER"


@dataclass(frozen=True, slots=True)
class EndpointStatus:
    """One row of ``status()`` over all endpoints: a status or why there is none."""

    endpoint: str
    status: Status | None
    error: KVError | None = None


@dataclass(frozen=True, slots=True)
class Member:
    id: int
    peer_address: str
    role: str


@dataclass(frozen=True, slots=True)
class MemberList:
    header: Header
    members: list[Member]


@dataclass(frozen=True, slots=True)
class MemberChange:
    """The outcome of a membership change: ``member`` as it is now (None once
    removed) and the configuration the leader applied."""

    header: Header
    member: Member | None
    members: list[Member]


@dataclass(frozen=True, slots=True)
class LeaderTransfer:
    header: Header
    leader_id: int


def member_of(m: kv_pb2.Member) -> Member:
    return Member(m.id, m.peer_address, kv_pb2.MemberRole.Name(m.role))


def header_of(h: kv_pb2.ResponseHeader) -> Header:
    return Header(h.cluster_id, h.member_id, h.raft_term, h.revision, h.leader_id)


def kv_of(kv: kv_pb2.KeyValue) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version)


def optional_kv(message: Any, name: str) -> KeyValue | None:
    return kv_of(getattr(message, name)) if message.HasField(name) else None


def random_client_id() -> int:
    """63 random bits: ids stay positive in signed 64-bit languages; 0 means none."""
    while True:
        client_id = secrets.randbits(63)
        if client_id:
            return client_id


class Session:
    __slots__ = ("client_id", "sequence")

    def __init__(self, client_id: int) -> None:
        self.client_id = client_id
        self.sequence = 0


class SessionPool:
    """Client ids with their last sequence, one per write in flight.

    The server remembers only the last sequence per client id and refuses an
    older one (Raft dissertation 6.3). Two threads sharing one id could send
    sequence 6 before 5, and 5 would be refused although never applied. So
    each concurrent write borrows its own session; the first one uses the
    client's ``client_id``, extra ones get random ids.
    """

    def __init__(self, client_id: int) -> None:
        self._lock = threading.Lock()
        self._free = [Session(client_id)]

    def acquire(self) -> Session:
        with self._lock:
            return self._free.pop() if self._free else Session(random_client_id())

    def release(self, session: Session) -> None:
        """Return a session whose last write is settled (applied, or surely not).

        A session whose last write has an unknown outcome is never returned:
        it is retired, so the caller can still ask the server about that
        request later (the server keeps only the last sequence per client id).
        """
        with self._lock:
            self._free.append(session)
