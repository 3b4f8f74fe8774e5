"""Loss of quorum: requests fail within their deadline with the codes of DESIGN 3.1,
serializable reads still work, and a write whose outcome was unknown, retried
with its RequestId after recovery and a leader change, is applied once.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc

from kvstore.client import RequestId
from kvstore.v1 import kv_pb2, kv_pb2_grpc
from tests.integration.cluster import FAST_TIMEOUTS, running_cluster, wait_until

DEADLINE = 1.5  # seconds a client gives each request while there is no quorum
ACCEPTED = (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED)


def _timed(call: object, request: object) -> tuple[grpc.StatusCode, str, float]:
    """Send one request with DEADLINE; its status code, message, and how long it took."""
    start = time.monotonic()
    try:
        call(request, timeout=DEADLINE)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", time.monotonic() - start
    raise AssertionError(f"{request!r} succeeded without a quorum")


def test_loss_of_quorum_and_recovery(tmp_path: Path) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        leader = cluster.wait_for_leader()
        f1, f2 = (n for n in cluster.nodes if n != leader)
        with cluster.client(timeout=10.0) as client:
            before = client.put("q/before", "v")

        rid = RequestId(client_id=0x0DD_0000_0001, sequence=1)
        request = kv_pb2.PutRequest(key=b"q/unknown", value=b"maybe")
        request.request_id.client_id, request.request_id.sequence = rid.client_id, rid.sequence

        with grpc.insecure_channel(cluster.nodes[leader].client_addr) as channel:
            kv = kv_pb2_grpc.KVStub(channel)  # type: ignore[no-untyped-call]
            cluster.kill([f1, f2])
            # The leader does not know yet: it accepts the write into its log, cannot
            # commit it, and says the outcome is unknown before the client's deadline.
            code, message, took = _timed(kv.Put, request)
            assert code in ACCEPTED, (code, message)
            assert took < DEADLINE + 0.5

            # Within an election timeout it steps down (no majority heard from); from
            # then on a write is refused before the log: UNAVAILABLE, naming the problem.
            wait_until(
                lambda: cluster.status(leader).header.leader_id == 0, 10, "the leader stepping down"
            )
            code, message, took = _timed(kv.Put, kv_pb2.PutRequest(key=b"q/refused", value=b"x"))
            assert code == grpc.StatusCode.UNAVAILABLE and "no leader" in message, message
            assert took < DEADLINE + 0.5
            code, message, took = _timed(kv.Get, kv_pb2.GetRequest(key=b"q/before"))
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert took < DEADLINE + 0.5
            code, _, _ = _timed(kv.Range, kv_pb2.RangeRequest(prefix=b"q/"))
            assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            # Serializable reads are served from local state.
            got = kv.Get(
                kv_pb2.GetRequest(key=b"q/before", consistency=kv_pb2.SERIALIZABLE), timeout=5
            )
            assert got.found and got.kv.value == b"v"
            assert got.kv.mod_revision == before.header.revision
            assert got.header.leader_id == 0

        # One follower back: a majority again. The old leader has the uncommitted
        # entry and the follower does not, so only the old leader can win (the
        # follower's log is behind); the new term commits the entry.
        cluster.start_node(f1)
        assert cluster.wait_for_leader(among=[leader, f1]) == leader
        with cluster.node_client(f1, timeout=10.0) as c:
            kv_after = c.get("q/unknown")
            assert kv_after is not None and (kv_after.value, kv_after.version) == (b"maybe", 1)
            assert c.get("q/refused") is None  # refused means not applied
            c.put("q/recovered", "yes")

        # A leader change, then the retry with the same RequestId: the original
        # answer, not a second application.
        cluster.kill_node(leader)
        cluster.start_node(f2)
        new_leader = cluster.wait_for_leader(among=[f1, f2])
        assert new_leader != leader
        with cluster.node_client(f2, timeout=10.0) as c:
            revision = c.get("q/recovered")
            retried = c.put("q/unknown", "maybe", request_id=rid)
            assert retried.header.revision == kv_after.mod_revision
            again = c.get("q/unknown")
            assert again == kv_after  # version 1, same revision: applied once
            assert revision is not None
            assert c.put("q/next", "x").header.revision == revision.mod_revision + 1

        cluster.start_node(leader)
        cluster.wait_converged(timeout=30)
        with cluster.node_client(leader, timeout=10.0) as c:
            assert c.get("q/unknown", serializable=True) == kv_after
