"""A healthy 3-node cluster of real ``kvstore serve`` processes, shared by the module.

tests/client/test_integration.py covers the client and kvctl (puts through
each node, revisions, limits...). Here: every operation through every node
(the followers forward to the leader), read-your-writes across nodes,
contended CAS through all nodes at once, health checking, and garbage on the
peer port, which the whole server must survive. None of these tests stops a
node, so they share one cluster (the ``cluster`` fixture of conftest.py);
they use keys of their own.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc  # type: ignore[import-untyped]

from kvstore.client import Client
from kvstore.raft.v1 import peer_pb2 as pb
from tests.integration.cluster import Cluster

NODES = (1, 2, 3)


@pytest.fixture(autouse=True)
def _all_running(cluster: Cluster) -> Iterator[None]:
    cluster.check_running(NODES)
    yield
    cluster.check_running(NODES)  # no test here may crash a node


@pytest.mark.parametrize("node", NODES)
def test_every_operation_through_every_node(cluster: Cluster, node: int) -> None:
    leader = cluster.wait_for_leader()
    p = f"ops{node}/"
    with cluster.node_client(node, timeout=10.0) as c:
        put = c.put(p + "a", "1")
        assert (put.header.member_id, put.header.leader_id) == (node, leader)
        assert c.put(p + "b", "2").header.revision == put.header.revision + 1
        got = c.get(p + "a")
        assert got is not None and (got.value, got.version) == (b"1", 1)
        assert got.mod_revision == got.create_revision == put.header.revision

        cas = c.compare_and_swap(p + "a", "1b", expected_value="1")
        assert cas.succeeded and cas.header.member_id == node
        assert cas.kv is not None and (cas.kv.value, cas.kv.version) == (b"1b", 2)
        lost = c.compare_and_swap(p + "a", "x", expected_mod_revision=put.header.revision)
        assert not lost.succeeded and lost.kv == cas.kv
        assert c.compare_and_swap(p + "c", "3", expected_absent=True).succeeded

        rng = c.range(p)
        assert [(kv.key, kv.value) for kv in rng.kvs] == [
            (p.encode() + b"a", b"1b"), (p.encode() + b"b", b"2"), (p.encode() + b"c", b"3"),
        ]  # fmt: skip
        assert rng.header.member_id == node
        limited = c.range(start=p + "b", end=p + "z", limit=1)
        assert [kv.key for kv in limited.kvs] == [p.encode() + b"b"] and limited.more

        deleted = c.delete(p + "b", prev_kv=True)
        assert deleted.deleted and deleted.prev_kv is not None and deleted.prev_kv.value == b"2"
        assert deleted.header.member_id == node
        assert c.get(p + "b") is None
        assert not c.delete(p + "b").deleted

    # Linearizable reads on every node see all of it at once, no waiting.
    for other in NODES:
        with cluster.node_client(other, timeout=10.0) as c:
            assert [(kv.key, kv.value) for kv in c.range(p).kvs] == [
                (p.encode() + b"a", b"1b"), (p.encode() + b"c", b"3"),
            ], other  # fmt: skip


def test_read_your_writes_across_nodes(cluster: Cluster) -> None:
    """A write acknowledged by one node is seen by a linearizable read on the next."""
    clients = [cluster.node_client(n, timeout=10.0) for n in NODES]
    try:
        for i in range(30):
            writer, reader = clients[i % 3], clients[(i + 1) % 3]
            writer.put("ryw/k", str(i))
            kv = reader.get("ryw/k")
            assert kv is not None and kv.value == str(i).encode(), (i, kv)
    finally:
        for c in clients:
            c.close()


def test_contended_cas_through_all_nodes(cluster: Cluster) -> None:
    """Increments by compare-and-swap from 6 threads on 3 nodes: none lost, none doubled."""
    key = "cas-counter"
    with cluster.client(timeout=10.0) as c:
        assert c.compare_and_swap(key, "0", expected_absent=True).succeeded
    wins: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def increment(node: int) -> None:
        try:
            with cluster.node_client(node, timeout=10.0) as c:
                done = 0
                while done < 10:
                    kv = c.get(key)
                    assert kv is not None
                    n = int(kv.value)
                    result = c.compare_and_swap(
                        key, str(n + 1), expected_mod_revision=kv.mod_revision
                    )
                    if result.succeeded:
                        done += 1
                        with lock:
                            wins.append(n + 1)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=increment, args=(NODES[t % 3],)) for t in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "CAS threads hung"
    assert not errors, errors
    assert sorted(wins) == list(range(1, 61))  # every successful swap saw the previous one
    with cluster.client() as c:
        kv = c.get(key)
        assert kv is not None and kv.value == b"60" and kv.version == 61


def test_health_checking_is_served(cluster: Cluster) -> None:
    for node in cluster.nodes.values():
        with grpc.insecure_channel(node.client_addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "kvstore.v1.KV"):
                answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING


# -- garbage on the peer port ------------------------------------------------------------


def _stream_call(channel: grpc.Channel, method: str, frames: list[bytes]) -> grpc.RpcError:
    """A client-streaming call with raw frames; the error it ends with (it must fail)."""
    call: Any = channel.stream_unary(f"/kvstore.raft.v1.Peer/{method}")
    try:
        answer = call(iter(frames), timeout=10)
    except grpc.RpcError as exc:
        return exc
    raise AssertionError(f"{method} accepted {len(frames)} bad frame(s): {answer!r}")


def test_garbage_on_the_peer_port_harms_no_member(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader()
    target = next(n for n in NODES if n != leader)  # a follower: a bogus vote would unseat it
    member = cluster.nodes[target]
    before = cluster.status(target)
    cluster_id = before.header.cluster_id
    bogus_term = 1_000_000

    def vote_request(cid: int, from_id: int) -> bytes:
        vote = pb.RequestVote(
            term=bogus_term, candidate_id=from_id, last_log_index=1 << 40, last_log_term=bogus_term
        )
        return pb.MessageBatch(
            cluster_id=cid, from_id=from_id, from_address="127.0.0.1:1", to_id=target,
            messages=[pb.RaftMessage(request_vote=vote)],
        ).SerializeToString()  # fmt: skip

    # Not HTTP/2 at all, on a raw TCP connection.
    host, port = member.peer_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n" + bytes(range(256)) * 64)
        raw.settimeout(1)
        deadline = time.monotonic() + 5
        with contextlib.suppress(OSError):  # the server hangs up (or we stop listening)
            while raw.recv(4096) and time.monotonic() < deadline:
                pass

    codes = {}
    with grpc.insecure_channel(
        member.peer_addr, options=[("grpc.max_send_message_length", 128 << 20)]
    ) as channel:
        cases = {
            "not protobuf": [b"\xff\xff\xff\xff garbage"],
            "another cluster": [vote_request(cluster_id ^ 0x5A5A, leader)],
            "a stranger": [vote_request(cluster_id, 99)],
            "oversized": [b"\x0a" + bytes(65 << 20)],
        }
        for name, frames in cases.items():
            codes[name] = _stream_call(channel, "Stream", frames).code()
        codes["snapshot garbage"] = _stream_call(
            channel, "InstallSnapshot", [b"\x08\x01\xff\xfe"]
        ).code()
        stranger_snapshot = pb.SnapshotChunk(
            cluster_id=cluster_id ^ 1, from_id=leader, to_id=target, last=True,
            header=pb.InstallSnapshot(term=bogus_term, last_index=1 << 40, last_term=bogus_term),
        ).SerializeToString()  # fmt: skip
        codes["foreign snapshot"] = _stream_call(
            channel, "InstallSnapshot", [stranger_snapshot]
        ).code()

        # Forward: a stranger is refused; a member's garbage request is answered, not fatal.
        forward = channel.stream_stream(
            "/kvstore.raft.v1.Peer/ForwardBatches",
            request_serializer=pb.ForwardBatch.SerializeToString,
            response_deserializer=pb.ForwardAnswers.FromString,
        )
        junk = pb.ForwardRequest(id=7, method="Put", request=b"\xff\xff\xff", timeout_seconds=2)
        with pytest.raises(grpc.RpcError) as refused:
            list(
                forward(
                    iter([pb.ForwardBatch(requests=[junk])]),
                    timeout=10,
                    metadata=(("kvstore-cluster-id", "12345"),),
                )
            )
        codes["foreign forward"] = refused.value.code()
        metadata = (("kvstore-cluster-id", str(cluster_id)), ("kvstore-from-id", str(leader)))
        unknown = pb.ForwardRequest(id=8, method="Explode", request=b"", timeout_seconds=2)
        frames = forward(
            iter([pb.ForwardBatch(requests=[junk, unknown])]), timeout=10, metadata=metadata
        )
        answers = [a for frame in frames for a in frame.responses]
        assert sorted(a.id for a in answers) == [7, 8]
        assert all(a.code != grpc.StatusCode.OK.value[0] and a.message for a in answers), answers

    assert codes == {
        "not protobuf": grpc.StatusCode.INVALID_ARGUMENT,
        "another cluster": grpc.StatusCode.FAILED_PRECONDITION,
        "a stranger": grpc.StatusCode.PERMISSION_DENIED,
        "oversized": grpc.StatusCode.RESOURCE_EXHAUSTED,
        "snapshot garbage": grpc.StatusCode.INVALID_ARGUMENT,
        "foreign snapshot": grpc.StatusCode.FAILED_PRECONDITION,
        "foreign forward": grpc.StatusCode.PERMISSION_DENIED,
    }

    # Nothing of it was stepped: no bogus term anywhere, the same leader, and the
    # member still serves reads and writes, also those it forwards.
    cluster.check_running(NODES)
    assert cluster.wait_for_leader() == leader
    for n in NODES:
        status = cluster.status(n)
        assert status.header.term < bogus_term and status.header.cluster_id == cluster_id
    assert cluster.status(target).header.term == before.header.term
    with cluster.node_client(target, timeout=10.0) as c:
        assert c.put("peer-garbage/k", "ok").header.member_id == target
        kv = c.get("peer-garbage/k")
        assert kv is not None and kv.value == b"ok"
    assert "refused frame" in cluster.log_text(target)


def test_a_stranger_client_cannot_confuse_the_client_port(cluster: Cluster) -> None:
    """Garbage on the client port: the node keeps serving clients."""
    node = cluster.nodes[1]
    host, port = node.client_addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\xff" * 4096)
    with grpc.insecure_channel(node.client_addr) as channel:
        call: Any = channel.unary_unary("/kvstore.v1.KV/Put")
        with pytest.raises(grpc.RpcError) as info:
            call(b"\xff\xff\xff", timeout=5)
        # grpc.aio's own answer to a request it cannot parse (UNKNOWN), not a crash.
        assert info.value.code() == grpc.StatusCode.UNKNOWN
        assert "PutRequest" in (info.value.details() or "")
    with Client([node.client_addr], timeout=10.0) as c:
        c.put("client-garbage/k", "v")
        assert c.get("client-garbage/k") is not None
