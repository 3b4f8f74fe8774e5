"""A synchronous Python client for kvstore (the ``kvstore.v1`` gRPC API).

Synchronous on purpose: scripts, ``kvctl`` and the test harnesses call one
operation at a time and want a plain return value or an exception, and a sync
gRPC channel is thread-safe, so a harness can share one client between threads.

Leader discovery is trivial because every member forwards requests to the
leader (DESIGN 3.1): the client talks to its current endpoint and moves to the
next one only when that endpoint fails. Retries follow the status codes of
DESIGN 3.1:

- UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED: try again on the next endpoint,
  with backoff after each full round, until the call's overall deadline;
- every write carries a RequestId, the same one on every retry, so the
  server applies it at most once however often it is sent;
- INVALID_ARGUMENT and RESOURCE_EXHAUSTED (and any other code) are raised at
  once: retrying cannot help.

A write that fails after an attempt that may have reached the log raises
:class:`OutcomeUnknown`; one that certainly had no effect raises a
:class:`NotApplied` subclass (see :mod:`kvstore.client_errors`).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Sequence
from typing import Any, overload

import grpc

from kvstore.backup_save import ProgressCallback, SavedBackup, save_snapshot
from kvstore.client_errors import (
    InvalidArgument,
    KVError,
    NoSpace,
    NotApplied,
    OutcomeUnknown,
    Timeout,
    Unavailable,
    classify,
    deadline_error,
    error_for,
    short_reason,
)
from kvstore.client_types import (
    CasResult,
    Data,
    DeleteResult,
    EndpointStatus,
    Header,
    KeyValue,
    LeaderTransfer,
    Member,
    MemberChange,
    MemberList,
    PutResult,
    RangeResult,
    RequestId,
    SessionPool,
    Status,
    header_of,
    kv_of,
    member_of,
    optional_kv,
    random_client_id,
    to_bytes,
)
from kvstore.tls import ClientTls
from kvstore.v1 import kv_pb2, kv_pb2_grpc

__all__ = [
    "CHANNEL_OPTIONS",
    "CasResult",
    "Client",
    "ClientTls",
    "DeleteResult",
    "EndpointStatus",
    "Header",
    "InvalidArgument",
    "KVError",
    "KeyValue",
    "LeaderTransfer",
    "Member",
    "MemberChange",
    "MemberList",
    "NoSpace",
    "NotApplied",
    "OutcomeUnknown",
    "PutResult",
    "RangeResult",
    "RequestId",
    "Status",
    "Timeout",
    "Unavailable",
    "to_bytes",
]

MAX_MESSAGE_BYTES = 64 << 20

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    # Above the server's key and value limits, so an oversized request gets
    # the server's INVALID_ARGUMENT naming the limit, not a transport error.
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # gRPC's default reconnect backoff grows to two minutes; a node restarted
    # after a crash must be reachable again within a second.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]

_BACKOFF_BASE = 0.05
_BACKOFF_CAP = 1.0


class Client:
    """A connection to a kvstore cluster through any of its members.

    ``timeout`` bounds every call, retries included. ``attempt_timeout``
    bounds one attempt on one endpoint (default: half of ``timeout`` when
    there are several endpoints), so a hung member cannot use up the whole
    deadline. ``client_id`` names this client's exactly-once session; leave it
    random unless you know the server has never seen it (a reused id restarts
    at sequence 1, which the server refuses as too old).

    ``tls``: talk TLS (the CA to trust, and a client certificate for a
    cluster with ``--client-cert-auth``); the files are read and checked
    here, so a bad one raises :class:`kvstore.tls.TlsError` at once. An
    ``https://`` endpoint asks for TLS too (with the system's CAs if ``tls``
    is not given); ``http://`` is plaintext, as no prefix.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = 5.0,
        attempt_timeout: float | None = None,
        client_id: int | None = None,
        tls: ClientTls | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = endpoints.split(",")
        given = [e.strip() for e in endpoints if e.strip()]
        if tls is None and any(e.startswith("https://") for e in given):
            tls = ClientTls()
        self.endpoints: tuple[str, ...] = tuple(_strip_scheme(e) for e in given)
        if not self.endpoints:
            raise ValueError("at least one endpoint (host:port) is needed")
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        if client_id is not None and not 0 < client_id < 1 << 64:
            raise ValueError(f"client_id must be in [1, 2**64), got {client_id}")
        self.timeout = timeout
        multi = len(self.endpoints) > 1
        self.attempt_timeout = attempt_timeout or (timeout / 2 if multi else timeout)
        self.client_id = client_id if client_id is not None else random_client_id()
        self._sessions = SessionPool(self.client_id)
        self.tls = tls
        self._credentials = tls.credentials() if tls is not None else None
        self._lock = threading.Lock()
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, tuple[kv_pb2_grpc.KVStub, kv_pb2_grpc.ClusterStub]] = {}
        self._current = 0

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            channels, self._channels, self._stubs = list(self._channels.values()), {}, {}
        for channel in channels:
            channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def current_endpoint(self) -> str:
        """The endpoint the next call goes to first (the last one that answered)."""
        return self.endpoints[self._current]

    # -- KV ----------------------------------------------------------------

    def put(
        self, key: Data, value: Data, prev_kv: bool = False, *, request_id: RequestId | None = None
    ) -> PutResult:
        request = kv_pb2.PutRequest(
            key=to_bytes(key), value=to_bytes(value, "value"), prev_kv=prev_kv
        )
        response = self._write("Put", request, request_id)
        return PutResult(header_of(response.header), optional_kv(response, "prev_kv"))

    def get(self, key: Data, serializable: bool = False) -> KeyValue | None:
        """The key's current state, or None when absent."""
        request = kv_pb2.GetRequest(key=to_bytes(key), consistency=_consistency(serializable))
        response = self._call("kv", "Get", request, write=False)
        return kv_of(response.kv) if response.found else None

    def delete(
        self, key: Data, prev_kv: bool = False, *, request_id: RequestId | None = None
    ) -> DeleteResult:
        response = self._write(
            "Delete", kv_pb2.DeleteRequest(key=to_bytes(key), prev_kv=prev_kv), request_id
        )
        return DeleteResult(
            header_of(response.header), response.deleted, optional_kv(response, "prev_kv")
        )

    def range(
        self,
        prefix: Data | None = None,
        *,
        start: Data | None = None,
        end: Data | None = None,
        limit: int = 0,
        serializable: bool = False,
    ) -> RangeResult:
        """Keys with ``prefix``, or in [start, end) (end None: to the last key); all by default."""
        if prefix is not None and (start is not None or end is not None):
            raise InvalidArgument(
                "range takes a prefix or start/end, not both", code=grpc.StatusCode.INVALID_ARGUMENT
            )
        if limit < 0:
            raise InvalidArgument(
                f"limit must be >= 0, got {limit}", code=grpc.StatusCode.INVALID_ARGUMENT
            )
        request = kv_pb2.RangeRequest(limit=limit, consistency=_consistency(serializable))
        if prefix is not None:
            request.prefix = to_bytes(prefix, "prefix")
        if start is not None:
            request.start = to_bytes(start, "start")
        if end is not None:
            request.end = to_bytes(end, "end")
        response = self._call("kv", "Range", request, write=False)
        return RangeResult(
            header_of(response.header), [kv_of(kv) for kv in response.kvs], response.more
        )

    def compare_and_swap(
        self,
        key: Data,
        new_value: Data,
        *,
        expected_value: Data | None = None,
        expected_absent: bool = False,
        expected_mod_revision: int | None = None,
        request_id: RequestId | None = None,
    ) -> CasResult:
        """Set ``new_value`` iff the key's state matches exactly one expectation."""
        given = (expected_value is not None) + expected_absent + (expected_mod_revision is not None)
        if given != 1:
            raise InvalidArgument(
                "compare_and_swap needs exactly one of expected_value, expected_absent=True, "
                "expected_mod_revision",
                code=grpc.StatusCode.INVALID_ARGUMENT,
            )
        request = kv_pb2.CompareAndSwapRequest(key=to_bytes(key), new_value=to_bytes(new_value))
        if expected_value is not None:
            request.value = to_bytes(expected_value, "expected_value")
        elif expected_absent:
            request.absent = True
        else:
            request.mod_revision = expected_mod_revision or 0
        response = self._write("CompareAndSwap", request, request_id)
        return CasResult(
            header_of(response.header), response.succeeded, optional_kv(response, "kv")
        )

    # -- Cluster -----------------------------------------------------------

    @overload
    def status(self, endpoint: str) -> Status: ...

    @overload
    def status(self, endpoint: None = None) -> list[EndpointStatus]: ...

    def status(self, endpoint: str | None = None) -> Status | list[EndpointStatus]:
        """Cluster.Status of one endpoint (raises on failure) or of all, in parallel.

        No failover here: the point is to learn about that very member.
        """
        if endpoint is not None:
            (row,) = self._status_of([endpoint])
            if row.error is not None:
                raise row.error
            assert row.status is not None
            return row.status
        return self._status_of(self.endpoints)

    def member_list(self, serializable: bool = False) -> MemberList:
        request = kv_pb2.MemberListRequest(consistency=_consistency(serializable))
        response = self._call("cluster", "MemberList", request, write=False)
        return MemberList(header_of(response.header), [member_of(m) for m in response.members])

    # Membership changes run on the leader (any endpoint forwards them) and return
    # once the leader applied the change. They are retried on the next endpoint
    # after UNAVAILABLE or ABORTED, which is safe because add, promote and demote
    # name the end state; a remove retried after its first attempt took effect
    # fails with NOT_FOUND. Unlike reads and writes, one attempt may use the
    # whole timeout (a catch-up takes as long as copying the data), and a
    # DEADLINE_EXCEEDED from the server is final: it says what did not finish.

    def member_add(self, member_id: int, peer_address: str) -> MemberChange:
        """Add a member: stand-by, caught up, then voter; returns once it votes."""
        request = kv_pb2.MemberAddRequest(id=member_id, peer_address=peer_address)
        return _member_change(self._admin("MemberAdd", request))

    def member_remove(self, member_id: int) -> MemberChange:
        """Remove a member (the leader hands leadership over first if it is the one)."""
        return _member_change(self._admin("MemberRemove", kv_pb2.MemberRemoveRequest(id=member_id)))

    def member_promote(self, member_id: int) -> MemberChange:
        """Catch a stand-by up and make it a voter."""
        request = kv_pb2.MemberPromoteRequest(id=member_id)
        return _member_change(self._admin("MemberPromote", request))

    def member_demote(self, member_id: int) -> MemberChange:
        """Make a voter a stand-by (it keeps the data, does not vote)."""
        return _member_change(self._admin("MemberDemote", kv_pb2.MemberDemoteRequest(id=member_id)))

    def transfer_leader(self, target_id: int = 0) -> LeaderTransfer:
        """Move leadership to ``target_id`` (0: the most up-to-date voter); the new leader."""
        response = self._admin("TransferLeader", kv_pb2.TransferLeaderRequest(target_id=target_id))
        return LeaderTransfer(header_of(response.header), response.new_leader_id)

    def snapshot(
        self, path: str | os.PathLike[str], progress: ProgressCallback | None = None
    ) -> SavedBackup:
        """Save a consistent backup of the data to ``path`` (Cluster.Snapshot).

        Taken by the first endpoint that can, holding every write acknowledged
        before the call; ``timeout`` bounds the whole transfer. The file is
        written atomically (kvstore.backup_save); ``progress(received,
        estimate)`` is called after each chunk.
        """
        n = len(self.endpoints)
        order = [self.endpoints[(self._current + i) % n] for i in range(n)]
        stubs = [(endpoint, self._stub(endpoint)[1]) for endpoint in order]
        return save_snapshot(stubs, path, timeout=self.timeout, progress=progress)

    # -- machinery ---------------------------------------------------------

    def _stub(self, endpoint: str) -> tuple[kv_pb2_grpc.KVStub, kv_pb2_grpc.ClusterStub]:
        with self._lock:
            stubs = self._stubs.get(endpoint)
            if stubs is None:
                if self._credentials is None:
                    channel = grpc.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
                else:
                    channel = grpc.secure_channel(endpoint, self._credentials, CHANNEL_OPTIONS)
                self._channels[endpoint] = channel
                stubs = self._stubs[endpoint] = (
                    kv_pb2_grpc.KVStub(channel),
                    kv_pb2_grpc.ClusterStub(channel),
                )
            return stubs

    def _status_of(self, endpoints: Sequence[str]) -> list[EndpointStatus]:
        pending = []
        for endpoint in endpoints:
            stub = self._stub(endpoint)[1]
            pending.append(
                (endpoint, stub.Status.future(kv_pb2.StatusRequest(), timeout=self.timeout))
            )
        rows = []
        for endpoint, future in pending:
            try:
                r = future.result()
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""
                error = error_for(code, self._reason(code, details), endpoint=endpoint)
                rows.append(EndpointStatus(endpoint, None, error))
                continue
            status = Status(
                endpoint, header_of(r.header), r.commit_index, r.applied_index, r.last_index,
                r.state, r.db_size_bytes, r.version,
            )  # fmt: skip
            rows.append(EndpointStatus(endpoint, status))
        return rows

    def _reason(self, code: grpc.StatusCode, details: str) -> str:
        tls = self.tls
        has_cert = tls is not None and tls.cert_file is not None
        return short_reason(code, details, tls=tls is not None, client_cert=has_cert)

    def _write(self, method: str, request: Any, request_id: RequestId | None) -> Any:
        if request_id is not None:
            request.request_id.client_id = request_id.client_id
            request.request_id.sequence = request_id.sequence
            return self._call("kv", method, request, write=True, request_id=request_id)
        session = self._sessions.acquire()
        session.sequence += 1
        rid = RequestId(session.client_id, session.sequence)
        request.request_id.client_id = rid.client_id
        request.request_id.sequence = rid.sequence
        try:
            response = self._call("kv", method, request, write=True, request_id=rid)
        except NotApplied:
            self._sessions.release(session)
            raise
        self._sessions.release(session)
        return response

    def _admin(self, method: str, request: Any) -> Any:
        return self._call("cluster", method, request, write=False, admin=True)

    def _call(
        self,
        service: str,
        method: str,
        request: Any,
        *,
        write: bool,
        request_id: RequestId | None = None,
        admin: bool = False,
    ) -> Any:
        """One logical call: attempts on successive endpoints until success or deadline.

        ``admin``: a membership call (see ``member_add``): an attempt may take
        the whole remaining time and DEADLINE_EXCEEDED is not retried."""
        deadline = time.monotonic() + self.timeout
        n = len(self.endpoints)
        index = self._current
        failures: list[tuple[str, str]] = []
        maybe_applied = False
        last_code: grpc.StatusCode | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            endpoint = self.endpoints[index % n]
            stubs = self._stub(endpoint)
            rpc = getattr(stubs[0] if service == "kv" else stubs[1], method)
            attempt = remaining if admin else min(remaining, self.attempt_timeout)
            try:
                response = rpc(request, timeout=attempt)
            except grpc.RpcError as err:
                code, details = err.code(), err.details() or ""
            else:
                self._current = index % n
                return response
            retriable, applied = classify(code, details)
            if admin and code == grpc.StatusCode.DEADLINE_EXCEEDED:
                retriable = False
                if details == "Deadline Exceeded":  # gRPC's own: the server did not answer
                    details = f"no answer from {endpoint} within {attempt:.1f} s"
            maybe_applied = maybe_applied or (write and applied)
            failures.append((endpoint, self._reason(code, details)))
            last_code = code
            if not retriable:
                raise error_for(
                    code, details, endpoint=endpoint, failures=tuple(failures),
                    request_id=request_id, outcome_unknown=maybe_applied,
                )  # fmt: skip
            index += 1
            if len(failures) % n == 0:
                rounds = len(failures) // n
                pause = min(_BACKOFF_CAP, _BACKOFF_BASE * 2 ** (rounds - 1))
                time.sleep(
                    min(pause * random.uniform(0.5, 1.0), max(0.0, deadline - time.monotonic()))
                )
        raise deadline_error(self.timeout, failures, last_code, write and maybe_applied, request_id)


def _member_change(response: Any) -> MemberChange:
    has_member = "member" in response.DESCRIPTOR.fields_by_name and response.HasField("member")
    member = member_of(response.member) if has_member else None
    return MemberChange(
        header_of(response.header), member, [member_of(m) for m in response.members]
    )


def _strip_scheme(endpoint: str) -> str:
    """``https://host:port`` (etcd's endpoint form) -> ``host:port``."""
    for scheme in ("https://", "http://"):
        if endpoint.startswith(scheme):
            return endpoint[len(scheme) :].rstrip("/")
    return endpoint


def _consistency(serializable: bool) -> kv_pb2.Consistency:
    return kv_pb2.SERIALIZABLE if serializable else kv_pb2.LINEARIZABLE
