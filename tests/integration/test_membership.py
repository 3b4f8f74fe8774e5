"""Cluster membership with real processes: MemberAdd through ``kvstore serve
--join``, MemberRemove (also of the leader), MemberPromote/Demote and
TransferLeader, through the Python client and kvctl.

Growing runs under a light write load with snapshots forced every 200
applied entries, so the new members are caught up by InstallSnapshot and
log entries; no acknowledged write may be lost, and every member must end
with the same data. Each test starts a cluster of its own (the shape of the
cluster is what they change); ``running_cluster`` stops every process.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import grpc
import pytest

from kvstore.cli.kvctl import main as kvctl
from kvstore.client import Client, KVError, MemberList
from kvstore.devcluster import free_port
from tests.integration.cluster import FAST_TIMEOUTS, Cluster, running_cluster, wait_until
from tests.integration.load import Load

SNAPSHOTS = ("--snapshot-count", "200", "--snapshot-trailing", "20")
JOIN_WAIT = 30.0


def _roles(members: MemberList) -> dict[int, str]:
    return {m.id: m.role for m in members.members}


def _kvctl_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    code = kvctl([*argv, "-w", "json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return json.loads(captured.out)


def _same_data_everywhere(cluster: Cluster, ids: list[int], prefix: str) -> int:
    """Every member in ``ids`` holds the same keys, values and revisions; how many."""
    cluster.wait_converged(among=ids)
    states = {}
    for i in ids:
        with cluster.node_client(i, timeout=5.0) as client:
            kvs = client.range(prefix, serializable=True).kvs
        states[i] = [(kv.key, kv.value, kv.mod_revision, kv.version) for kv in kvs]
    first = states[ids[0]]
    for i in ids[1:]:
        assert states[i] == first, f"member {i} differs from member {ids[0]}"
    return len(first)


def test_grow_to_five_and_shrink_back_under_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_cluster(tmp_path, extra_args=(*FAST_TIMEOUTS, *SNAPSHOTS)) as cluster:
        load = Load(cluster.endpoints, "load", writers=2, per_writer=100_000).start()
        try:
            load.wait_acked(400, timeout=30)  # past two snapshots: joiners get one

            # Grow: both new members ask at once; the leader adds them one by one.
            for i in (4, 5):
                cluster.add_member(i, join=cluster.endpoints[:3])
                cluster.start_node(i)
            with cluster.client(timeout=10.0) as client:

                def five_voters() -> MemberList | None:
                    cluster.check_running()
                    members = client.member_list()
                    return (
                        members
                        if set(_roles(members).values()) == {"VOTER"} and len(members.members) == 5
                        else None
                    )

                wait_until(five_voters, JOIN_WAIT, "members 4 and 5 voting")
            listed = _kvctl_json(capsys, "--endpoints", cluster.members[4].client_addr,
                                 "member", "list")  # fmt: skip
            assert isinstance(listed, dict)
            assert sorted((m["id"], m["role"]) for m in listed["members"]) == [
                (i, "VOTER") for i in range(1, 6)
            ]
            before = len(load.acked)
            load.wait_acked(before + 100, timeout=30)  # five voters still take writes
            assert any(
                f"installed by {new}" in cluster.log_text(i) for i in (1, 2, 3) for new in (4, 5)
            ), "a new member was expected to be caught up by InstallSnapshot"

            # Shrink back: one through kvctl, one through the client.
            removed = _kvctl_json(
                capsys, "--endpoints", ",".join(cluster.endpoints[:3]), "member", "remove", "5"
            )
            assert isinstance(removed, dict) and removed["member"] is None
            assert sorted(m["id"] for m in removed["members"]) == [1, 2, 3, 4]
            with cluster.client(cluster.endpoints[:3], timeout=10.0) as client:
                result = client.member_remove(4)
                assert sorted(m.id for m in result.members) == [1, 2, 3]
                assert _roles(client.member_list()) == {1: "VOTER", 2: "VOTER", 3: "VOTER"}
            cluster.stop([4, 5])
            before = len(load.acked)
            load.wait_acked(before + 100, timeout=30)  # three voters again, still serving
        finally:
            load.stop()
            load.join(30)
        assert not load.not_applied and not load.unknown, (
            f"writes failed during membership changes: "
            f"{list(load.not_applied.values())[:3]} {list(load.unknown.values())[:3]}"
        )
        with cluster.client(cluster.endpoints[:3], timeout=10.0) as client:
            load.check(client.range("load").kvs)
        assert _same_data_everywhere(cluster, [1, 2, 3], "load") == len(load.acked)


def test_transfer_demote_promote_and_remove_the_leader(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        endpoints = ",".join(cluster.endpoints)
        with cluster.client(timeout=15.0) as client:
            client.put("before", "1")
            leader = cluster.wait_for_leader()

            # Explicit transfer, asked through a follower (forwarded to the leader).
            target = next(i for i in (1, 2, 3) if i != leader)
            other = next(i for i in (1, 2, 3) if i not in (leader, target))
            with cluster.node_client(other, timeout=15.0) as via_follower:
                assert via_follower.transfer_leader(target).leader_id == target
            assert cluster.wait_for_leader() == target
            # kvctl move-leader 0: the most up-to-date voter, whoever it is.
            moved = _kvctl_json(capsys, "--endpoints", endpoints, "move-leader", "0")
            assert isinstance(moved, dict) and moved["leader_id"] != target
            leader = cluster.wait_for_leader()
            assert leader == moved["leader_id"]

            # Demote a follower, then the leader itself (it hands leadership over).
            follower = next(i for i in (1, 2, 3) if i != leader)
            change = client.member_demote(follower)
            assert change.member is not None and change.member.role == "STANDBY"
            client.put("after-demote", "1")  # two voters: both needed, both up
            change = client.member_promote(follower)
            assert change.member is not None and change.member.role == "VOTER"
            change = client.member_demote(leader)
            assert _roles(client.member_list())[leader] == "STANDBY"
            new_leader = cluster.wait_for_leader()
            assert new_leader != leader
            capsys.readouterr()
            assert kvctl(["--endpoints", endpoints, "member", "promote", str(leader)]) == 0
            assert f"Member {leader} is a voter" in capsys.readouterr().out
            assert _roles(client.member_list()) == {1: "VOTER", 2: "VOTER", 3: "VOTER"}

            # Remove the leader: leadership moves first, the others keep serving.
            leader = cluster.wait_for_leader()
            result = client.member_remove(leader)
            assert sorted(m.id for m in result.members) == sorted({1, 2, 3} - {leader})
            rest = [i for i in (1, 2, 3) if i != leader]
            cluster.stop_node(leader)
            assert cluster.wait_for_leader(among=rest) in rest
        with cluster.client([cluster.members[i].client_addr for i in rest], timeout=10) as client:
            client.put("after-remove", "1")
            assert {k: client.get(k) is not None for k in ("before", "after-demote")} == {
                "before": True,
                "after-demote": True,
            }
            assert sorted(_roles(client.member_list())) == rest


def test_membership_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        endpoints = ",".join(cluster.endpoints)
        with cluster.client(timeout=10.0) as client:
            with pytest.raises(KVError) as failed:
                client.member_remove(99)
            assert failed.value.code == grpc.StatusCode.NOT_FOUND
            assert "member 99 is not in the configuration" in failed.value.message
            with pytest.raises(KVError) as failed:
                client.member_add(1, "127.0.0.1:1")
            assert failed.value.code == grpc.StatusCode.ALREADY_EXISTS
            with pytest.raises(KVError) as failed:
                client.member_add(9, "no-port")
            assert failed.value.code == grpc.StatusCode.INVALID_ARGUMENT

        # A member nobody runs: added as a stand-by, never caught up, named in the error.
        nobody = f"127.0.0.1:{free_port()}"
        with cluster.client(timeout=2.0) as client:
            with pytest.raises(KVError) as failed:
                client.member_add(9, nobody)
            assert failed.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert f"member 9 ({nobody}) did not catch up" in failed.value.message
        with cluster.client(timeout=10.0) as client:
            assert _roles(client.member_list())[9] == "STANDBY"
            client.put("still", "writable")  # a stand-by does not count for the quorum
            with pytest.raises(KVError) as failed:
                client.transfer_leader(9)
            assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert "not a voter" in failed.value.message
            capsys.readouterr()
            assert kvctl(["--endpoints", endpoints, "member", "remove", "9"]) == 0
            assert "Member 9 removed" in capsys.readouterr().out
            assert sorted(_roles(client.member_list())) == [1, 2, 3]
        assert kvctl(["--endpoints", endpoints, "--timeout", "5", "member", "remove", "9"]) == 2
        assert "member 9 is not in the configuration" in capsys.readouterr().err
        cluster.check_running()


def test_a_second_join_of_a_running_member_is_a_no_op(tmp_path: Path) -> None:
    """A joined member restarted with the same flags (a pod restart) stays a voter."""
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        cluster.add_member(4)
        cluster.start_node(4)
        with cluster.client(cluster.endpoints[:3], timeout=10.0) as client:
            wait_until(
                lambda: _roles(client.member_list()).get(4) == "VOTER", JOIN_WAIT, "member 4 voting"
            )
            client.put("k", "v")
            cluster.stop_node(4)
            cluster.start_node(4)
            cluster.wait_for_leader()
            with Client([cluster.members[4].client_addr], timeout=10.0) as via_new:
                assert via_new.get("k") is not None  # forwarded to the leader
            assert _roles(client.member_list()) == {i: "VOTER" for i in (1, 2, 3, 4)}
        assert "is a voter already" in cluster.log_text(4)


def test_a_dead_member_is_replaced_and_quorum_is_guarded(tmp_path: Path) -> None:
    """Removing a live voter while another is down would leave a configuration
    that cannot commit: refused. The dead one is removed, then re-added with a
    fresh data directory through --join (same id, same address)."""
    with running_cluster(tmp_path, extra_args=FAST_TIMEOUTS) as cluster:
        leader = cluster.wait_for_leader()
        dead, live = (i for i in (1, 2, 3) if i != leader)
        assert cluster.kill_node(dead) == -9
        up = [cluster.members[i].client_addr for i in (leader, live)]
        with cluster.client(up, timeout=10.0) as client:
            client.put("k", "v")
            with pytest.raises(KVError) as failed:
                client.member_remove(live)
            assert failed.value.code == grpc.StatusCode.FAILED_PRECONDITION
            assert f"silent: [{dead}]" in failed.value.message
            assert sorted(m.id for m in client.member_remove(dead).members) == sorted(
                [leader, live]
            )
            client.put("k2", "v2")  # two voters, both up

            member = cluster.members[dead]
            shutil.rmtree(member.data_dir)
            member.join = up
            cluster.start_node(dead)
            wait_until(
                lambda: _roles(client.member_list()).get(dead) == "VOTER", JOIN_WAIT, "re-added"
            )
        cluster.wait_converged()
        with cluster.node_client(dead, timeout=5.0) as client:
            kv = client.get("k2", serializable=True)
            assert kv is not None and kv.value == b"v2"
