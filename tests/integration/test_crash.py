"""Crashes (SIGKILL) under load: no acknowledged write is lost, none applied twice.

Each test has a cluster of its own: they kill nodes.
"""

from __future__ import annotations

import time
from pathlib import Path

from kvstore.fsm import ProtobufCodec
from kvstore.storage import Put, Storage
from raftcore import EntryType
from tests.integration.cluster import FAST_TIMEOUTS, Cluster, running_cluster
from tests.integration.load import Load


def test_leader_crash_under_load_and_catch_up_by_entries(tmp_path: Path) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        old_leader = cluster.wait_for_leader()
        load = Load(cluster.endpoints, "lk", writers=8, per_writer=50).start()
        try:
            load.wait_acked(100, timeout=60)
            assert cluster.kill_node(old_leader) == -9
        finally:
            load.join(timeout=120)
        survivors = [n for n in cluster.nodes if n != old_leader]
        new_leader = cluster.wait_for_leader(among=survivors)
        assert new_leader != old_leader
        # All 400 writes were attempted; the client's retries absorbed the failover.
        assert load.attempted == 400
        assert len(load.acked) >= 390, (len(load.unknown), list(load.unknown.values())[:3])

        with cluster.client(timeout=10.0) as client:
            load.check(client.range("lk/").kvs)
            expected = [(kv.key, kv.value, kv.mod_revision) for kv in client.range("lk/").kvs]

        # The old leader comes back on its data and catches up by entries (no
        # snapshot was taken: --snapshot-count is 10,000 by default).
        cluster.start_node(old_leader)
        applied = cluster.wait_converged(timeout=30)
        restarted = cluster.status(old_leader)
        assert restarted.applied_index == applied and not restarted.is_leader
        with cluster.node_client(old_leader, timeout=10.0) as c:
            local = c.range("lk/", serializable=True).kvs
        assert [(kv.key, kv.value, kv.mod_revision) for kv in local] == expected
        log = cluster.log_text(old_leader)
        assert log.count(f"node {old_leader} started") == 2
        assert "installed snapshot" not in log


def _open_storages(cluster: Cluster) -> dict[int, set[str]]:
    """Open each node's LMDB environment as the crash left it; the "ka/" keys
    it holds on disk: in its data, or in its log's entries not applied yet."""
    codec = ProtobufCodec()
    found: dict[int, set[str]] = {}
    for node_id, node in cluster.nodes.items():
        with Storage(node.data_dir) as storage:
            state = storage.load()
            assert state.last_index >= state.applied_index > 0, state
            entries = sum(len(batch) for _, batch in storage.log.iter_batches())
            assert entries == state.last_index - state.start_index + 1
            with storage.data.reader() as reader:
                keys = {kv.key.decode() for kv in reader.range(prefix=b"ka/", limit=0).kvs}
            for entry in storage.log.entries(state.applied_index + 1):
                if entry.type == EntryType.COMMAND:
                    op = codec.decode(entry.data)
                    if isinstance(op, Put) and op.key.startswith(b"ka/"):
                        keys.add(op.key.decode())
            found[node_id] = keys
    return found


def test_all_nodes_killed_mid_load_lose_no_acknowledged_write(tmp_path: Path) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        load = Load(cluster.endpoints, "ka", writers=8, per_writer=1000, timeout=3.0).start()
        try:
            load.wait_acked(200, timeout=60)
            codes = cluster.kill([1, 2, 3])  # all at once, writes in flight
            assert codes == {1: -9, 2: -9, 3: -9}
        finally:
            load.stop()
            load.join(timeout=30)
        assert len(load.acked) >= 200

        # The files open as the crash left them, with a consistent log, and every
        # acknowledged write is on the disks of a majority: committed, it is in
        # their logs, or already in their data (the leader answers once the
        # apply has its result, which may be before that data is synced).
        stored = _open_storages(cluster)
        missing = [k for k in load.acked if sum(k in keys for keys in stored.values()) < 2]
        assert not missing, f"acknowledged writes on fewer than 2 of 3 disks: {missing[:5]}"

        cluster.start()
        cluster.wait_for_leader()
        with cluster.client(timeout=10.0) as client:
            load.check(client.range("ka/").kvs)
            client.put("ka-after", "v")  # and the cluster works on
        cluster.wait_converged(timeout=30)


def test_sigterm_of_the_leader_under_load_is_clean(tmp_path: Path) -> None:
    """In-flight requests are answered or failed, the exit code is 0, nothing acked is lost."""
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        leader = cluster.wait_for_leader()
        load = Load(cluster.endpoints, "tl", writers=8, per_writer=40).start()
        try:
            load.wait_acked(80, timeout=60)
            start = time.monotonic()
            assert cluster.stop_node(leader, timeout=15) == 0, cluster.log_tail(leader)
            assert time.monotonic() - start < 10
        finally:
            load.join(timeout=120)
        assert load.attempted == 320
        assert f"member {leader} stopped" in cluster.log_text(leader)
        cluster.wait_for_leader(among=[n for n in cluster.nodes if n != leader])
        with cluster.client(timeout=10.0) as client:
            load.check(client.range("tl/").kvs)
        cluster.start_node(leader)
        cluster.wait_converged(timeout=30)
        with cluster.node_client(leader, timeout=10.0) as c:
            assert len(c.range("tl/", serializable=True).kvs) >= len(load.acked)
