"""Kubernetes mode with real processes: ``kvstore serve`` started with the
environment of deploy/base's StatefulSet and the pod names Kubernetes gives
(``kvstore-0``, ...), the pods' DNS names mapped to 127.0.0.1 ports
(tests/integration/statefulset.py).

The pods form a cluster from their names alone, a pod restarted on its volume
resumes without losing an acknowledged write, a pod added by a scale-up joins
as a voter, and a pod whose member was removed comes back on an empty volume
as a new member.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from kvstore.client import Client, MemberList
from tests.integration.cluster import FAST_TIMEOUTS, running_cluster, wait_until
from tests.integration.statefulset import StatefulSetCluster

JOIN_WAIT = 30.0


def _members(client: Client) -> dict[int, tuple[str, str]]:
    return {m.id: (m.peer_address, m.role) for m in client.member_list().members}


def _voters(cluster: StatefulSetCluster, ids: list[int]) -> dict[int, tuple[str, str]]:
    return {i: (cluster.peer_address(i), "VOTER") for i in ids}


def _wait_members(
    cluster: StatefulSetCluster, client: Client, expected: dict[int, tuple[str, str]]
) -> None:
    def probe() -> MemberList | None:
        cluster.check_running()
        members = client.member_list()
        return members if _members(client) == expected else None

    wait_until(probe, JOIN_WAIT, f"members {expected}")


def _data_on(cluster: StatefulSetCluster, member_id: int, prefix: str) -> dict[str, str]:
    """What that member itself holds (a serializable read answered locally)."""
    with cluster.node_client(member_id, timeout=5.0) as client:
        kvs = client.range(prefix, serializable=True).kvs
    return {kv.key.decode(): kv.value.decode() for kv in kvs}


def _put(client: Client, first: int, last: int) -> dict[str, str]:
    written = {f"k8s/{i:03d}": f"v{i}" for i in range(first, last)}
    for key, value in written.items():
        client.put(key, value)
    return written


def test_pods_form_a_cluster_restart_and_scale_up(tmp_path: Path) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS, factory=StatefulSetCluster) as cluster:
        with cluster.client(timeout=10.0) as client:
            # Ids 1..3 from the ordinals, peers known by their DNS names.
            assert _members(client) == _voters(cluster, [1, 2, 3])
            acked = _put(client, 0, 30)

            # A pod restarts (its container crashed) on its volume while writes go on.
            restarted = 2
            cluster.kill_node(restarted)
            acked |= _put(client, 30, 60)
            cluster.start_node(restarted)
            cluster.wait_converged(among=[1, 2, 3])
            assert _data_on(cluster, restarted, "k8s/") == acked
            assert _members(client) == _voters(cluster, [1, 2, 3])

            # Scale the StatefulSet from 3 to 4: kvstore-3 joins as member 4, a voter.
            new = cluster.scale_up()
            assert cluster.pod(new) == "kvstore-3" and new == 4
            cluster.start_node(new)
            _wait_members(cluster, client, _voters(cluster, [1, 2, 3, 4]))
            acked |= _put(client, 60, 80)
        cluster.wait_converged(among=[1, 2, 3, 4])
        assert _data_on(cluster, new, "k8s/") == acked
        with cluster.node_client(new, timeout=10.0) as client:
            client.put("k8s/through-the-new-pod", "yes")
            got = client.get("k8s/through-the-new-pod")
            assert got is not None and got.value == b"yes"


def test_removed_pod_rejoins_on_an_empty_volume(tmp_path: Path) -> None:
    """The procedure for a lost volume (deploy/README.md): remove the member,
    then the pod comes back on an empty volume and joins as a new member."""
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS, factory=StatefulSetCluster) as cluster:
        lost = 3
        with cluster.client(endpoints=cluster.endpoints[:2], timeout=10.0) as client:
            acked = _put(client, 0, 20)
            client.member_remove(lost)
            cluster.stop_node(lost)
            shutil.rmtree(cluster.members[lost].data_dir)
            acked |= _put(client, 20, 30)
            cluster.start_node(lost)
            _wait_members(cluster, client, _voters(cluster, [1, 2, 3]))
        cluster.wait_converged(among=[1, 2, 3])
        assert _data_on(cluster, lost, "k8s/") == acked
        assert "it was removed, so it joins as a new member" in cluster.log_text(lost)
