"""Snapshots, membership, transfers and reads in the simulator: scripted runs, and
the checks of ``tests/sim/checks.py`` failing on broken histories."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from raftcore import (
    CatchUpStatus,
    Configuration,
    Entry,
    EntryType,
    Event,
    Role,
    Server,
    SnapshotMetadata,
    State,
)
from tests.sim.app import INITIAL_STATE, Snapshot, chain
from tests.sim.checks import ExtChecker
from tests.sim.cluster import Cluster, Options
from tests.sim.extensions import SnapshotPolicy
from tests.sim.log import Log
from tests.sim.membership import submit_change
from tests.sim.nemesis import Crash, Restart, perform
from tests.sim.node import Node
from tests.sim.scenario import Workload, await_progress
from tests.sim.trace import Trace

# scripted runs ---------------------------------------------------------------------


def _cluster(servers: int = 3, seed: int = 1, every: int = 5) -> tuple[Cluster, ExtChecker]:
    """A started cluster with the extended checker, snapshots every ``every`` entries
    (no trailing entries: a lagging server needs InstallSnapshot) and busy clients."""
    options = Options(servers=servers, pre_vote=True, install_snapshot_timeout=2000)
    cluster = Cluster(seed, options)
    checker = ExtChecker(seed, cluster.trace, cluster.describe)
    cluster.observer = checker
    cluster.appliers.append(SnapshotPolicy(random.Random(seed), every, 0))
    Workload(random.Random(seed), end=60_000, max_gap=20).install(cluster)
    cluster.start()
    return cluster, checker


def _leader(cluster: Cluster, within: int = 10_000) -> Node:
    assert cluster.run_until(cluster.now + within, lambda: len(cluster.leaders()) == 1)
    return cluster.leaders()[0]


def _committed(cluster: Cluster, leader: Node, within: int = 5_000) -> None:
    """Run until the configuration in force on ``leader`` is applied there."""
    raft = leader.raft
    assert raft is not None
    assert cluster.run_until(
        cluster.now + within, lambda: leader.app.configuration == raft.configuration
    )


def test_a_new_server_joins_by_snapshot_and_catch_up() -> None:
    cluster, checker = _cluster()
    leader = _leader(cluster)
    cluster.run_until(cluster.now + 2_000)
    new = cluster.add_node(4)
    new.start()
    assert new.raft is not None and new.raft.role is None
    raft = leader.raft
    assert raft is not None
    assert submit_change(cluster, leader, raft.configuration.with_server(4, "s4", Role.STANDBY))
    _committed(cluster, leader)
    leader.step(Event.catch_up(cluster.now, 4))
    assert raft.catch_up_status(4) == CatchUpStatus.RUNNING
    assert cluster.run_until(
        cluster.now + 5_000, lambda: raft.catch_up_status(4) == CatchUpStatus.FINISHED
    )
    assert submit_change(cluster, leader, raft.configuration.with_server(4, "s4", Role.VOTER))
    _committed(cluster, leader)
    assert new.raft.role == Role.VOTER
    assert checker.snapshots["installed"] >= 1, "s4 started from the leader's snapshot"
    assert new.snapshot is not None and new.applied[0][0] > 1
    await_progress(cluster, 10_000)


def test_a_leader_removes_itself_and_steps_down_once_committed() -> None:
    cluster, _ = _cluster(seed=3)
    old = _leader(cluster)
    assert old.raft is not None
    term = old.raft.current_term
    assert submit_change(cluster, old, old.raft.configuration.without_server(old.id))
    assert old.state == State.LEADER, "it leads until the change commits"
    others = [n for n in cluster.nodes.values() if n is not old]
    assert cluster.run_until(
        cluster.now + 10_000, lambda: any(n in others for n in cluster.leaders())
    )
    assert old.state == State.FOLLOWER and old.raft.current_term >= term
    cluster.run_until(cluster.now + 5_000)
    assert old.state == State.FOLLOWER, "a removed server does not campaign"
    await_progress(cluster, 10_000)


def test_leadership_moves_to_the_chosen_voter() -> None:
    cluster, _ = _cluster(5, seed=4)
    old = _leader(cluster)
    target = next(n for n in cluster.nodes.values() if n is not old)
    old.step(Event.transfer(cluster.now, target.id))
    assert cluster.run_until(cluster.now + 2_000, lambda: target.state == State.LEADER)
    assert cluster.run_until(cluster.now + 500, lambda: old.state == State.FOLLOWER)
    await_progress(cluster, 10_000)


def test_reads_are_answered_and_restarts_restore_snapshots() -> None:
    cluster, checker = _cluster(seed=5)
    leader = _leader(cluster)
    cluster.run_until(cluster.now + 1_000)
    checker.read_asked(1)
    leader.step(Event.read_index(cluster.now, 1))
    cluster.run_until(cluster.now + 200)
    assert checker.reads_answered == 1
    follower = next(n for n in cluster.nodes.values() if n is not leader)
    perform(cluster, Crash(follower.id))
    perform(cluster, Restart(follower.id))
    assert checker.snapshots["restored"] == 1
    assert follower.disk.snapshot is not None
    assert follower.last_applied == follower.disk.snapshot.index
    await_progress(cluster, 10_000)


# the new checks must be able to fail -----------------------------------------------

CONF = Configuration(Server(i, f"s{i}", Role.VOTER) for i in (1, 2, 3))
WITHOUT_3 = CONF.without_server(3)


def _checker() -> ExtChecker:
    return ExtChecker(7, Trace())


def _entries(checker: ExtChecker, *entries: Entry) -> bytes:
    """Apply ``entries`` from index 1 on server 1, commit them; returns the state."""
    state = INITIAL_STATE
    for index, entry in enumerate(entries, start=1):
        checker.applied(1, index, entry)
        state = chain(state, index, entry)
    log = Log(1, entries)
    checker.after_step(1, 1, False, entries[-1].term, len(entries), log)
    return state


def _change(term: int, conf: Configuration) -> Entry:
    return Entry(term, EntryType.CHANGE, conf.encode())


def _command(term: int, data: bytes = b"x") -> Entry:
    return Entry(term, EntryType.COMMAND, data)


def test_checker_rejects_a_snapshot_with_another_state() -> None:
    checker = _checker()
    _entries(checker, _change(1, CONF), _command(1))
    wrong = Snapshot(SnapshotMetadata(2, 1, CONF, 1), INITIAL_STATE)
    with pytest.raises(AssertionError, match=r"(?s)state machine safety.*--seed 7 -v"):
        checker.snapshot(2, "installed", wrong, 0)


def test_checker_rejects_a_snapshot_behind_the_applied_index() -> None:
    checker = _checker()
    state = _entries(checker, _change(1, CONF))
    with pytest.raises(AssertionError, match="after applying up to 5"):
        checker.snapshot(2, "installed", Snapshot(SnapshotMetadata(1, 1, CONF, 1), state), 5)


def test_checker_rejects_a_snapshot_with_another_configuration() -> None:
    checker = _checker()
    state = _entries(checker, _change(1, CONF), _change(1, WITHOUT_3))
    stale = Snapshot(SnapshotMetadata(2, 1, CONF, 1), state)
    with pytest.raises(AssertionError, match="with configuration"):
        checker.snapshot(1, "took", stale, 2)


def test_checker_rejects_a_leader_with_two_uncommitted_changes() -> None:
    checker = _checker()
    _entries(checker, _change(1, CONF))
    log = Log(1, [_change(1, CONF), _change(2, WITHOUT_3), _command(2), _change(2, CONF)])
    with pytest.raises(AssertionError, match=r"configuration safety.*changes at"):
        checker.after_step(1, 1, True, 2, 1, log)


def test_checker_rejects_a_removed_server_leading_a_later_term() -> None:
    checker = _checker()
    _entries(checker, _change(1, CONF), _change(1, WITHOUT_3))
    log = Log(1, [_change(1, CONF), _change(1, WITHOUT_3)])
    checker.after_step(3, 1, True, 2, 1, log)  # not knowing that its removal committed
    checker.after_step(3, 1, True, 2, 2, log)  # it learns it as leader (and steps down)
    checker.after_step(3, 1, False, 2, 2, log)
    with pytest.raises(AssertionError, match="configuration safety: s3 was elected for term 3"):
        checker.after_step(3, 1, True, 3, 2, log)


def test_checker_rejects_a_stale_read_index() -> None:
    checker = _checker()
    _entries(checker, _change(1, CONF), _command(1), _command(1))
    checker.read_asked(1)
    checker.read(1, 1, 3)
    checker.read_asked(2)
    with pytest.raises(AssertionError, match=r"linearizable reads.*index 2"):
        checker.read(1, 2, 2)
    with pytest.raises(AssertionError, match="at most"):
        checker.read(1, 1, 3)


def test_simulation_catches_a_sender_that_ships_a_wrong_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: an I/O layer that fills InstallSnapshot with stale data is caught."""
    fill = Node.fill_snapshot
    monkeypatch.setattr(Node, "fill_snapshot", lambda self, m: replace(fill(self, m), data=b"?"))
    with pytest.raises(AssertionError, match="state machine safety"):
        test_a_new_server_joins_by_snapshot_and_catch_up()
