"""Runs client requests on this node, whoever received them.

A write, a linearizable read or a membership change runs where the leader
is: here when this node leads, else it is forwarded to the leader over the
peer port. Serializable reads run here. Every outcome maps to the status
codes of DESIGN 3.1: INVALID_ARGUMENT, RESOURCE_EXHAUSTED and UNAVAILABLE
mean *not applied*; DEADLINE_EXCEEDED and ABORTED mean *outcome unknown*.
Membership changes add NOT_FOUND, ALREADY_EXISTS and FAILED_PRECONDITION
(refused, nothing changed; see kvstore.node.membership).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message as ProtoMessage

from kvstore.fsm import command_from_request, operation_from_request
from kvstore.node import LeadershipLost, Node, NotLeaderError, WriteTimeout
from kvstore.node.membership import MembershipError
from kvstore.storage import (
    CasResult,
    DeleteResult,
    InvalidArgument,
    KeyValue,
    Operation,
    PutResult,
    Rejected,
    check_key,
    validate,
)
from kvstore.v1 import kv_pb2
from raftcore import Configuration, NoSpace, State

log = logging.getLogger("kvstore.api")

WRITES = ("Put", "Delete", "CompareAndSwap")
READS = ("Get", "Range", "MemberList")
#: Cluster membership calls: they run on the leader, like writes.
ADMIN = ("MemberAdd", "MemberRemove", "MemberPromote", "MemberDemote", "TransferLeader")
REQUEST_TYPES: dict[str, type[ProtoMessage]] = {
    "Put": kv_pb2.PutRequest,
    "Get": kv_pb2.GetRequest,
    "Delete": kv_pb2.DeleteRequest,
    "Range": kv_pb2.RangeRequest,
    "CompareAndSwap": kv_pb2.CompareAndSwapRequest,
    "MemberList": kv_pb2.MemberListRequest,
    "MemberAdd": kv_pb2.MemberAddRequest,
    "MemberRemove": kv_pb2.MemberRemoveRequest,
    "MemberPromote": kv_pb2.MemberPromoteRequest,
    "MemberDemote": kv_pb2.MemberDemoteRequest,
    "TransferLeader": kv_pb2.TransferLeaderRequest,
}
RESPONSE_TYPES: dict[str, type[ProtoMessage]] = {
    "Put": kv_pb2.PutResponse,
    "Get": kv_pb2.GetResponse,
    "Delete": kv_pb2.DeleteResponse,
    "Range": kv_pb2.RangeResponse,
    "CompareAndSwap": kv_pb2.CompareAndSwapResponse,
    "MemberList": kv_pb2.MemberListResponse,
    "MemberAdd": kv_pb2.MemberAddResponse,
    "MemberRemove": kv_pb2.MemberRemoveResponse,
    "MemberPromote": kv_pb2.MemberPromoteResponse,
    "MemberDemote": kv_pb2.MemberDemoteResponse,
    "TransferLeader": kv_pb2.TransferLeaderResponse,
}


class RequestError(Exception):
    """A request failed with a gRPC status code and a message for the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


Forwarder = Callable[[str, str, bytes, float], Awaitable[bytes]]


class Executor:
    def __init__(self, node: Node, forwarder: Forwarder | None = None) -> None:
        self.node = node
        self.forwarder = forwarder

    # -- entry points -----------------------------------------------------------

    async def execute(self, method: str, request: Any, timeout: float) -> Any:
        """Run ``method`` wherever it must run; returns the response message."""
        operation = self.check(method, request)
        if operation is not None and self.node.raft.state == State.LEADER:
            try:  # the common case, without the detours below
                return await self._write(method, request, timeout, operation)
            except NotLeaderError:
                pass  # not applied: the loop below finds the leader
        if method in READS and request.consistency == kv_pb2.SERIALIZABLE:
            return self._fill_header(self.read(method, request))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, self._no_leader_message(timeout))
            node = self.node
            if node.raft.state == State.LEADER:
                try:
                    return await self.execute_local(method, request, remaining, operation)
                except NotLeaderError:
                    # Not applied: find the new leader. Still leading means a
                    # leadership transfer is under way: give it a moment.
                    if node.raft.state == State.LEADER:
                        await asyncio.sleep(min(0.01, max(deadline - loop.time(), 0)))
                    continue
            leader_id, leader_address = node.raft.leader
            if leader_id and leader_address and self.forwarder is not None:
                try:
                    raw = await self.forwarder(
                        leader_address, method, _serialize(request), remaining
                    )
                except RequestError as exc:
                    if exc.code == grpc.StatusCode.UNAVAILABLE and "not the leader" in exc.message:
                        await asyncio.sleep(min(0.05, max(remaining, 0)))
                        continue
                    raise
                response = RESPONSE_TYPES[method].FromString(raw)
                return self._fill_header(response)
            await self._wait_for_leader(min(remaining, 0.5))

    async def execute_local(
        self, method: str, request: Any, timeout: float, operation: Operation | None = None
    ) -> Any:
        """Run a request on this node, which must lead (NotLeaderError otherwise).
        ``operation``: a write's, as :meth:`check` returned it."""
        if method in ADMIN:
            return self._fill_header(await self._admin(method, request, timeout))
        if method in WRITES:
            if operation is None:
                operation = operation_from_request(request)
            return await self._write(method, request, timeout, operation)
        try:
            # asyncio.timeout, not wait_for: no extra task per request (3.11).
            async with asyncio.timeout(timeout):
                await self.node.read_index()
            return self._fill_header(self.read(method, request))
        except TimeoutError:
            raise _deadline_exceeded("read", timeout) from None

    # -- validation ------------------------------------------------------------------

    def check(self, method: str, request: Any) -> Operation | None:
        """INVALID_ARGUMENT for a request that could never succeed; names the limit.
        Returns a write's storage operation (reused when it is applied here)."""
        try:
            if method in WRITES:
                if method == "CompareAndSwap":
                    which = request.WhichOneof("expected")
                    if which is None:
                        raise InvalidArgument(
                            "compare-and-swap needs one expectation: value, absent or mod_revision"
                        )
                    if which == "absent" and not request.absent:
                        raise InvalidArgument("expected absent must be true when set")
                    if which == "mod_revision" and request.mod_revision == 0:
                        raise InvalidArgument("expected mod_revision must be positive")
                operation = operation_from_request(request)
                validate(operation, self.node.config.max_value_size)
                return operation
            if method == "Get":
                check_key(request.key)
            elif method == "Range" and request.prefix and (request.start or request.end):
                raise InvalidArgument("range takes either prefix or start/end, not both")
            elif method in ADMIN:
                _check_admin(method, request)
        except InvalidArgument as exc:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
        return None

    # -- writes ------------------------------------------------------------------------

    async def _write(self, method: str, request: Any, timeout: float, operation: Operation) -> Any:
        """Propose the write here (this node must lead) and wait until it is applied."""
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            result = await self.node.propose(command_from_request(request), operation, deadline)
        except WriteTimeout:
            raise _deadline_exceeded("write", timeout) from None
        except NoSpace as exc:
            raise RequestError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"no space: {exc} (the database map is nearly full; raise --map-size)",
            ) from None
        except LeadershipLost as exc:
            raise RequestError(
                grpc.StatusCode.ABORTED, f"outcome unknown: {exc}; retry with the same request id"
            ) from None
        return self._fill_header(_write_response(method, result))

    # -- membership ----------------------------------------------------------------------

    async def _admin(self, method: str, request: Any, timeout: float) -> Any:
        """A membership call on the leader. NotLeaderError propagates: the caller
        retries at the leader (also after this node handed leadership over)."""
        membership = self.node.membership
        try:
            if method == "TransferLeader":
                new_leader = await membership.transfer(request.target_id, timeout)
                return kv_pb2.TransferLeaderResponse(new_leader_id=new_leader)
            if method == "MemberAdd":
                conf = await membership.add(request.id, request.peer_address, timeout)
            elif method == "MemberPromote":
                conf = await membership.promote(request.id, timeout)
            elif method == "MemberDemote":
                conf = await membership.demote(request.id, timeout)
            else:
                conf = await membership.remove(request.id, timeout)
                return kv_pb2.MemberRemoveResponse(members=_members(conf))
        except MembershipError as exc:
            raise RequestError(grpc.StatusCode[exc.code], exc.message) from None
        except LeadershipLost as exc:
            raise RequestError(
                grpc.StatusCode.ABORTED,
                f"outcome unknown: {exc}; the change may still take effect (see MemberList)",
            ) from None
        response: Any = RESPONSE_TYPES[method](members=_members(conf))
        server = conf.get(request.id)
        if server is not None:
            response.member.CopyFrom(_member(server))
        return response

    # -- reads ---------------------------------------------------------------------------

    def read(self, method: str, request: Any) -> Any:
        if method == "MemberList":
            conf = self.node.raft.configuration
            return kv_pb2.MemberListResponse(members=_members(conf))
        data = self.node.storage.data
        if method == "Get":
            with data.reader() as reader:
                kv = reader.get(request.key)
                response = kv_pb2.GetResponse(found=kv is not None, kv=_kv(kv) if kv else None)
                response.header.revision = reader.revision
            return response
        with data.reader() as reader:
            result = reader.range(
                start=request.start, end=request.end, prefix=request.prefix, limit=request.limit
            )
            response = kv_pb2.RangeResponse(kvs=[_kv(kv) for kv in result.kvs], more=result.more)
            response.header.revision = reader.revision
        return response

    # -- headers and waiting -------------------------------------------------------------

    def _fill_header(self, response: Any) -> Any:
        header = response.header
        node = self.node
        header.cluster_id = node.cluster_id
        header.member_id = node.config.id
        header.raft_term = node.raft.current_term
        header.leader_id = node.raft.leader[0]
        if not header.revision:
            header.revision = node.storage.data.revision()
        return response

    async def _wait_for_leader(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.node.leader_event.wait(), timeout)

    def _no_leader_message(self, timeout: float) -> str:
        leader_id, address = self.node.raft.leader
        if leader_id:
            return f"leader {leader_id} ({address}) did not answer within {timeout:.3f} s"
        return f"no leader: the cluster has not elected one within {timeout:.3f} s"


def _deadline_exceeded(what: str, timeout: float) -> RequestError:
    return RequestError(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        f"{what} not completed within {timeout:.3f} s (a write may still be applied)",
    )


def _check_admin(method: str, request: Any) -> None:
    if method == "TransferLeader":
        return
    if request.id == 0:
        raise InvalidArgument("member id must be positive")
    if method == "MemberAdd":
        host, sep, port = request.peer_address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise InvalidArgument(
                f"peer address {request.peer_address!r} is not HOST:PORT (the member's --peer-addr)"
            )


def _member(server: Any) -> kv_pb2.Member:
    role = kv_pb2.MemberRole.Name(int(server.role))  # the same numbers as raftcore's Role
    return kv_pb2.Member(id=server.id, peer_address=server.address, role=role)


def _members(conf: Configuration) -> list[kv_pb2.Member]:
    return [_member(server) for server in conf]


def _serialize(request: Any) -> bytes:
    data: bytes = request.SerializeToString()
    return data


def _kv(kv: KeyValue | None) -> kv_pb2.KeyValue | None:
    if kv is None:
        return None
    return kv_pb2.KeyValue(
        key=kv.key,
        value=kv.value,
        create_revision=kv.create_revision,
        mod_revision=kv.mod_revision,
        version=kv.version,
    )


def _write_response(method: str, result: Any) -> Any:
    if isinstance(result, Rejected):
        code = (
            grpc.StatusCode.INVALID_ARGUMENT
            if result.code == "INVALID_ARGUMENT"
            else grpc.StatusCode.FAILED_PRECONDITION
        )
        raise RequestError(code, result.message)
    if isinstance(result, PutResult):
        response = kv_pb2.PutResponse(prev_kv=_kv(result.prev_kv))
    elif isinstance(result, DeleteResult):
        response = kv_pb2.DeleteResponse(deleted=result.deleted, prev_kv=_kv(result.prev_kv))
    elif isinstance(result, CasResult):
        response = kv_pb2.CompareAndSwapResponse(succeeded=result.succeeded, kv=_kv(result.kv))
    else:
        raise RequestError(grpc.StatusCode.INTERNAL, f"{method}: unexpected result {result!r}")
    response.header.revision = result.revision
    return response
