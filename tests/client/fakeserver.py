"""An in-process, in-memory stand-in for a kvstore member, with scripted failures.

It lets the client's retry, failover and exactly-once logic be tested against
real gRPC (real channels, real status codes and deadlines) without a cluster:
each scripted step answers one call with a status code, optionally after
applying the write (an answer lost after the fact), or after a delay. It
implements just enough of DESIGN 3.1 for kvctl's output to be checked; the
real semantics are tested against ``kvstore serve`` in test_integration.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc

from kvstore.v1 import kv_pb2, kv_pb2_grpc

WRITES = ("Put", "Delete", "CompareAndSwap")


@dataclass
class Fail:
    """Answer with ``code``; with ``apply``, after applying the write (outcome unknown)."""

    code: grpc.StatusCode
    message: str = "scripted failure"
    apply: bool = False


@dataclass
class Delay:
    """Sleep, then answer normally (a slow or paused member)."""

    seconds: float


class Store:
    """The shared data of the fake members: a cluster has one state."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kvs: dict[bytes, kv_pb2.KeyValue] = {}
        self.revision = 0
        self.sessions: dict[int, tuple[int, Any]] = {}
        self.members: dict[int, tuple[str, int]] = {i: (f"peer{i}", kv_pb2.VOTER) for i in (1, 2)}


class FakeMember(kv_pb2_grpc.KVServicer, kv_pb2_grpc.ClusterServicer):
    def __init__(self, member_id: int, store: Store, leader_id: int = 1) -> None:
        self.member_id = member_id
        self.store = store
        self.leader_id = leader_id
        self.script: list[Fail | Delay] = []
        self.calls: list[tuple[str, Any]] = []
        self.address = ""

    # -- plumbing ----------------------------------------------------------------

    def _header(self) -> kv_pb2.ResponseHeader:
        return kv_pb2.ResponseHeader(
            cluster_id=7,
            member_id=self.member_id,
            raft_term=3,
            revision=self.store.revision,
            leader_id=self.leader_id,
        )

    def _handle(self, method: str, request: Any, context: Any) -> Any:
        self.calls.append((method, request))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, Delay):
            time.sleep(step.seconds)
        if isinstance(step, Fail) and not step.apply:
            context.abort(step.code, step.message)
        key = getattr(request, "key", b"x")
        if method in ("Put", "Delete", "CompareAndSwap", "Get") and not 1 <= len(key) <= 511:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"key is {len(key)} bytes; keys must be 1 to 511 bytes (LMDB's maximum key size)",
            )
        with self.store.lock:
            response = getattr(self, "_" + method)(request)
        if isinstance(step, Fail):
            context.abort(step.code, step.message)
        return response

    def _dedup(self, request: Any, apply: Any) -> Any:
        """Exactly-once as the real server: the last sequence per client id."""
        if not request.HasField("request_id"):
            return apply()
        rid = request.request_id
        last = self.store.sessions.get(rid.client_id)
        if last is not None and last[0] == rid.sequence:
            return last[1]
        response = apply()
        self.store.sessions[rid.client_id] = (rid.sequence, response)
        return response

    def _set(self, key: bytes, value: bytes) -> kv_pb2.KeyValue:
        s = self.store
        s.revision += 1
        old = s.kvs.get(key)
        kv = kv_pb2.KeyValue(
            key=key,
            value=value,
            create_revision=old.create_revision if old else s.revision,
            mod_revision=s.revision,
            version=old.version + 1 if old else 1,
        )
        s.kvs[key] = kv
        return kv

    # -- methods -----------------------------------------------------------------

    def _Put(self, r: Any) -> Any:
        def apply() -> Any:
            old = self.store.kvs.get(r.key)
            self._set(r.key, r.value)
            response = kv_pb2.PutResponse(header=self._header())
            if r.prev_kv and old is not None:
                response.prev_kv.CopyFrom(old)
            return response

        return self._dedup(r, apply)

    def _Get(self, r: Any) -> Any:
        kv = self.store.kvs.get(r.key)
        return kv_pb2.GetResponse(header=self._header(), found=kv is not None, kv=kv)

    def _Delete(self, r: Any) -> Any:
        def apply() -> Any:
            old = self.store.kvs.pop(r.key, None)
            if old is not None:
                self.store.revision += 1
            return kv_pb2.DeleteResponse(
                header=self._header(), deleted=old is not None, prev_kv=old if r.prev_kv else None
            )

        return self._dedup(r, apply)

    def _Range(self, r: Any) -> Any:
        keys = sorted(self.store.kvs)
        if r.prefix:
            keys = [k for k in keys if k.startswith(r.prefix)]
        else:
            keys = [k for k in keys if k >= r.start and (not r.end or k < r.end)]
        more = bool(r.limit) and len(keys) > r.limit
        keys = keys[: r.limit] if r.limit else keys
        kvs = [self.store.kvs[k] for k in keys]
        return kv_pb2.RangeResponse(header=self._header(), kvs=kvs, more=more)

    def _CompareAndSwap(self, r: Any) -> Any:
        def apply() -> Any:
            old = self.store.kvs.get(r.key)
            which = r.WhichOneof("expected")
            ok = (
                (which == "absent" and old is None)
                or (which == "value" and old is not None and old.value == r.value)
                or (
                    which == "mod_revision"
                    and old is not None
                    and old.mod_revision == r.mod_revision
                )
            )
            kv = self._set(r.key, r.new_value) if ok else old
            return kv_pb2.CompareAndSwapResponse(header=self._header(), succeeded=ok, kv=kv)

        return self._dedup(r, apply)

    def _Status(self, r: Any) -> Any:
        state = "LEADER" if self.member_id == self.leader_id else "FOLLOWER"
        return kv_pb2.StatusResponse(
            header=self._header(),
            commit_index=10,
            applied_index=9,
            last_index=10,
            state=state,
            db_size_bytes=3 << 20,
            version="fake",
        )

    def _MemberList(self, r: Any) -> Any:
        return kv_pb2.MemberListResponse(header=self._header(), members=self._members())

    def _members(self) -> list[kv_pb2.Member]:
        return [
            kv_pb2.Member(id=i, peer_address=address, role=role)
            for i, (address, role) in sorted(self.store.members.items())
        ]

    def _change(self, response_type: Any, member_id: int, role: int | None) -> Any:
        """Membership without Raft: set the role (None: remove); the real thing is
        tested against ``kvstore serve`` in tests/integration/test_membership.py."""
        members = self.store.members
        if role is None:
            members.pop(member_id, None)
        else:
            members[member_id] = (members.get(member_id, (f"peer{member_id}", 0))[0], role)
        response = response_type(header=self._header(), members=self._members())
        if role is not None:
            response.member.CopyFrom(next(m for m in self._members() if m.id == member_id))
        return response

    def _MemberAdd(self, r: Any) -> Any:
        self.store.members[r.id] = (r.peer_address, kv_pb2.STANDBY)
        return self._change(kv_pb2.MemberAddResponse, r.id, kv_pb2.VOTER)

    def _MemberRemove(self, r: Any) -> Any:
        return self._change(kv_pb2.MemberRemoveResponse, r.id, None)

    def _MemberPromote(self, r: Any) -> Any:
        return self._change(kv_pb2.MemberPromoteResponse, r.id, kv_pb2.VOTER)

    def _MemberDemote(self, r: Any) -> Any:
        return self._change(kv_pb2.MemberDemoteResponse, r.id, kv_pb2.STANDBY)

    def _TransferLeader(self, r: Any) -> Any:
        self.leader_id = r.target_id or 2
        return kv_pb2.TransferLeaderResponse(header=self._header(), new_leader_id=self.leader_id)


def _bind(method: str) -> Any:
    def handler(self: FakeMember, request: Any, context: Any) -> Any:
        return self._handle(method, request, context)

    return handler


for _method in (
    "Put", "Get", "Delete", "Range", "CompareAndSwap", "Status", "MemberList",
    "MemberAdd", "MemberRemove", "MemberPromote", "MemberDemote", "TransferLeader",
):  # fmt: skip
    setattr(FakeMember, _method, _bind(_method))


@contextmanager
def fake_cluster(n: int = 2) -> Iterator[list[FakeMember]]:
    """``n`` fake members sharing one store, each on its own 127.0.0.1 port."""
    store = Store()
    servers = []
    members = []
    try:
        for i in range(1, n + 1):
            member = FakeMember(i, store)
            server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
            kv_pb2_grpc.add_KVServicer_to_server(member, server)
            kv_pb2_grpc.add_ClusterServicer_to_server(member, server)
            port = server.add_insecure_port("127.0.0.1:0")
            member.address = f"127.0.0.1:{port}"
            server.start()
            servers.append(server)
            members.append(member)
        yield members
    finally:
        for server in servers:
            server.stop(grace=None)


def dead_endpoint() -> str:
    """An address where nothing listens (connection refused)."""
    from tests.integration.cluster import free_ports

    return f"127.0.0.1:{free_ports(1)[0]}"


class _DyingMember(kv_pb2_grpc.KVServicer):
    """Dies in the middle of a Put: the request was sent, the answer never comes."""

    def Put(self, request: Any, context: Any) -> Any:
        import os

        os._exit(1)


def _serve_dying_member() -> None:
    """``python -m tests.client.fakeserver``: print the port, then serve until a Put."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    kv_pb2_grpc.add_KVServicer_to_server(_DyingMember(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    _serve_dying_member()
