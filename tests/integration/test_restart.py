"""Restarts with snapshots forced (every 50 applied entries, 10 kept before them):
a node that was down while the log moved on catches up by InstallSnapshot, and
a clean shutdown (SIGTERM) resumes from LMDB without replaying anything.

The tests share one cluster and leave all three nodes running.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest

from kvstore.client import Client, KeyValue, RequestId
from tests.integration.cluster import FAST_TIMEOUTS, Cluster, running_cluster, wait_until

SNAPSHOTS = ("--snapshot-count", "50", "--snapshot-trailing", "10")
NODES = (1, 2, 3)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    extra = (*FAST_TIMEOUTS, *SNAPSHOTS)
    with running_cluster(tmp_path_factory.mktemp("snapshots"), extra_args=extra) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _all_running(cluster: Cluster) -> Iterator[None]:
    for n in NODES:
        if not cluster.nodes[n].running:
            cluster.start_node(n)
    cluster.wait_for_leader()
    yield


def _snapshots_taken(log: str) -> list[int]:
    return [int(i) for i in re.findall(r"snapshot at (\d+) taken", log)]


def _put_many(client: Client, prefix: str, n: int) -> dict[str, str]:
    written = {f"{prefix}/{i:04d}": f"value-{i}" for i in range(n)}
    for key, value in written.items():
        client.put(key, value)
    return written


def _state(kvs: list[KeyValue]) -> list[tuple[bytes, bytes, int, int, int]]:
    return [(kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs]


def test_a_node_behind_the_snapshot_catches_up_by_install_snapshot(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader()
    lagging = next(n for n in NODES if n != leader)
    behind = cluster.status(lagging).last_index
    assert cluster.kill_node(lagging) == -9

    rid = RequestId(client_id=0x5_0000_0001, sequence=1)
    with cluster.client(timeout=10.0) as client:
        written = _put_many(client, "snap", 300)
        once = client.put("snap-once", "v", request_id=rid)
    # The leader compacted its log past what the lagging node has: entries
    # cannot catch it up any more.
    taken = _snapshots_taken(cluster.log_text(leader))
    assert taken and max(taken) - 10 > behind + 1, (taken, behind)

    cluster.start_node(lagging)
    applied = cluster.wait_converged(timeout=30)
    log = cluster.log_text(lagging)
    installed = [int(i) for i in re.findall(r"installed snapshot at (\d+)", log)]
    assert installed and installed[-1] > behind, log[-2000:]
    assert cluster.status(lagging).applied_index == applied

    with cluster.node_client(leader, timeout=10.0) as c:
        expected = _state(c.range("snap/").kvs)
    with cluster.node_client(lagging, timeout=10.0) as c:
        local = c.range("snap/", serializable=True).kvs
        assert {kv.key.decode(): kv.value.decode() for kv in local} == written
        assert _state(local) == expected

    # The exactly-once sessions came with the snapshot: a retry of a write the
    # lagging node only knows from the snapshot is not applied again there
    # (every replica decides at apply time).
    with cluster.client(timeout=10.0) as client:
        assert client.put("snap-once", "v", request_id=rid).header.revision == once.header.revision
        client.put("snap-after", "entries again")  # and replication goes on by entries
    cluster.wait_converged(timeout=30)
    with cluster.node_client(lagging, timeout=10.0) as c:
        kv = c.get("snap-once", serializable=True)
        assert kv is not None and (kv.version, kv.mod_revision) == (1, once.header.revision)
        assert c.get("snap-after", serializable=True) is not None
    revisions = {cluster.status(n).header.revision for n in NODES}
    assert len(revisions) == 1, revisions

    # Restarted on the installed snapshot, it resumes from it.
    applied = cluster.status(lagging).applied_index
    assert cluster.stop_node(lagging) == 0
    cluster.start_node(lagging)
    restarted = wait_until(lambda: cluster.status(lagging), 30, "the node answering again")
    assert restarted.applied_index >= applied
    with cluster.node_client(lagging, timeout=10.0) as c:
        assert _state(c.range("snap/", serializable=True).kvs) == expected


def test_a_node_killed_again_and_again_under_writes_catches_up_soon(cluster: Cluster) -> None:
    """Killed while the leader compacts past it (snapshot sends to it may fail),
    a follower back up catches up in seconds. The chaos tests once saw restarted
    members ~28 s behind, waiting out C-Raft's 30 s install_snapshot_timeout
    after a failed send; the node now sets 5 s."""
    leader = cluster.wait_for_leader()
    follower = next(n for n in NODES if n != leader)
    stop = threading.Event()

    def write() -> None:
        with cluster.node_client(leader, timeout=10.0) as client:
            i = 0
            while not stop.is_set():
                client.put(f"churn/{i % 50}", str(i))
                i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(2):
            time.sleep(2)
            assert cluster.kill_node(follower) == -9
            time.sleep(3)  # the leader compacts past it meanwhile
            cluster.start_node(follower)
            wait_until(lambda: cluster.status(follower, timeout=0.5), 30, "the node answering")

            def caught_up() -> bool:
                behind = cluster.status(leader).commit_index - 100
                return cluster.status(follower, timeout=0.5).applied_index >= behind

            wait_until(caught_up, 15, "the restarted node catching up", 0.2)
    finally:
        stop.set()
        writer.join(30)


def test_sigterm_is_clean_and_a_restart_resumes_without_replay(cluster: Cluster) -> None:
    rid = RequestId(client_id=0x5_0000_0002, sequence=1)
    with cluster.client(timeout=10.0) as client:
        _put_many(client, "term", 120)  # past a snapshot or two, with a log tail after
        once = client.put("term-once", "v", request_id=rid)
    applied = cluster.wait_converged(timeout=30)
    before = {n: cluster.status(n) for n in NODES}
    with cluster.node_client(1, timeout=10.0) as c:
        data_before = _state(c.range(serializable=True).kvs)

    assert cluster.stop() == {1: 0, 2: 0, 3: 0}
    for n in NODES:
        assert re.search(rf"member {n} stopped", cluster.log_text(n)), cluster.log_tail(n)

    # Alone, node 1 cannot elect a leader, so nothing new is committed or applied:
    # what Status shows is what it loaded. A node that replayed its log (or lost
    # the applied index) would show less, or re-applied writes as new revisions.
    cluster.start_node(1)
    status = wait_until(lambda: cluster.status(1), 30, "node 1 answering after the restart")
    assert status.applied_index == applied == before[1].applied_index
    assert status.header.revision == before[1].header.revision
    assert status.header.leader_id == 0
    with cluster.node_client(1, timeout=10.0) as c:
        assert _state(c.range(serializable=True).kvs) == data_before

    for n in (2, 3):
        cluster.start_node(n)
    cluster.wait_for_leader()
    for n in NODES:  # each loaded the applied index it had at shutdown
        started = re.findall(rf"node {n} started: .*applied (\d+)", cluster.log_text(n))
        assert int(started[-1]) == before[n].applied_index, started
    with cluster.client(timeout=10.0) as client:
        assert client.put("term-once", "v", request_id=rid).header.revision == once.header.revision
        after = client.put("term-after", "w")
        assert after.header.revision == before[1].header.revision + 1
    cluster.wait_converged(timeout=30)
