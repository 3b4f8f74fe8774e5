"""The simulator as tests: many random seeds, scripted scenarios, and the checker itself.

``SIM_SEEDS`` (default 600) random runs are split into 12 chunks so that
``pytest -n 2`` spreads them over both cores; ``make sim`` runs more.
"""

from __future__ import annotations

import math
import os

import pytest

from raftcore import Entry, EntryType, State
from tests.sim.cluster import Cluster, Options
from tests.sim.disk import Disk
from tests.sim.invariants import Checker
from tests.sim.log import Log
from tests.sim.nemesis import Crash, Heal, Partition, Reconnect, Restart, SetDisk, perform
from tests.sim.node import Node
from tests.sim.scenario import Workload, await_progress, run_seed
from tests.sim.trace import Trace

SIM_SEEDS = int(os.environ.get("SIM_SEEDS", "600"))
CHUNKS = 12
CHUNK = max(1, math.ceil(SIM_SEEDS / CHUNKS))


@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_random_seeds(chunk: int) -> None:
    seeds = range(chunk * CHUNK, min(SIM_SEEDS, (chunk + 1) * CHUNK))
    failures: list[str] = []
    for seed in seeds:
        try:
            run_seed(seed)
        except AssertionError as exc:
            failures.append(str(exc))
    if failures:
        heads = "\n".join(text.splitlines()[0] for text in failures)
        pytest.fail(f"{len(failures)} of {len(seeds)} seeds failed:\n{heads}\n\n{failures[0]}")


def test_runs_are_deterministic() -> None:
    first, second = Trace(size=500), Trace(size=500)
    assert run_seed(11, trace=first) == run_seed(11, trace=second)
    assert first.lines() == second.lines()


# scripted scenarios ------------------------------------------------------------------


def _cluster(servers: int, seed: int = 1) -> Cluster:
    cluster = Cluster(seed, Options(servers=servers))
    cluster.start()
    return cluster


def _await_leader(cluster: Cluster, within: int = 10_000) -> Node:
    assert cluster.run_until(cluster.now + within, lambda: len(cluster.leaders()) == 1)
    return cluster.leaders()[0]


def test_partitioned_leader_is_replaced_and_loses_no_commit() -> None:
    cluster = _cluster(5)
    Workload(cluster.rng, end=30_000, max_gap=20).install(cluster, cluster.now)
    old = _await_leader(cluster)
    cluster.run_until(cluster.now + 2_000)
    committed = list(old.applied)
    assert len(committed) > 20
    assert old.raft is not None
    old_term = old.raft.current_term
    majority = frozenset(i for i in cluster.nodes if i != old.id)
    perform(cluster, Partition((frozenset([old.id]), majority)))
    timeout = cluster.options.election_timeout
    cluster.run_until(cluster.now + 2 * timeout)
    assert old.state != State.LEADER, "check-quorum: an isolated leader steps down"
    assert cluster.run_until(
        cluster.now + 10 * timeout, lambda: any(n.id in majority for n in cluster.leaders())
    )
    (new,) = cluster.leaders()
    assert new.raft is not None and new.raft.current_term > old_term
    perform(cluster, Reconnect())
    await_progress(cluster, 10 * cluster.options.election_timeout)
    for node in cluster.nodes.values():
        assert node.applied[: len(committed)] == committed


def test_follower_crash_loses_only_unpersisted_entries() -> None:
    cluster = _cluster(3, seed=2)
    leader = _await_leader(cluster)
    cluster.run_until(cluster.now + 500)
    slow, down = (n for n in cluster.nodes.values() if n is not leader)
    perform(cluster, Crash(down.id))
    perform(cluster, SetDisk(slow.id, 400, 500))
    assert cluster.submit([b"x1", b"x2", b"x3"]) is leader
    assert leader.raft is not None
    new_last = leader.raft.last_index
    cluster.run_until(cluster.now + 100)
    assert slow.log.last_index == new_last > slow.disk.log.last_index
    assert leader.raft.commit_index < new_last, "committed on entries only one server persisted"
    durable = slow.disk.log.last_index
    perform(cluster, Crash(slow.id))
    perform(cluster, Crash(leader.id))
    perform(cluster, Restart(slow.id))
    perform(cluster, Restart(down.id))
    assert slow.log.last_index == durable < new_last
    perform(cluster, SetDisk(slow.id, 1, 15))
    _await_leader(cluster)
    perform(cluster, Heal())
    await_progress(cluster, 10 * cluster.options.election_timeout)


# the checker must be able to fail ----------------------------------------------------


def _checker() -> Checker:
    return Checker(7, Trace())


def _log(*terms: int, data: bytes = b"") -> Log:
    return Log(
        1, [Entry(term, EntryType.COMMAND, data + b"%d" % i) for i, term in enumerate(terms)]
    )


def test_checker_rejects_two_leaders_in_one_term() -> None:
    checker = _checker()
    checker.after_step(1, 1, True, 5, 0, _log(1))
    with pytest.raises(AssertionError, match=r"(?s)election safety.*--seed 7 -v"):
        checker.after_step(2, 1, True, 5, 0, _log(1))


def test_checker_rejects_different_entries_applied_at_one_index() -> None:
    checker = _checker()
    checker.applied(1, 3, Entry(2, EntryType.COMMAND, b"a"))
    with pytest.raises(AssertionError, match="state machine safety"):
        checker.applied(2, 3, Entry(2, EntryType.COMMAND, b"b"))


def test_checker_rejects_logs_that_disagree_at_one_index_and_term() -> None:
    checker = _checker()
    one, two = _log(1, 2, data=b"a"), _log(1, 2, data=b"b")
    checker.wrote("s1 memory", one, 1, 2)
    with pytest.raises(AssertionError, match="log matching"):
        checker.wrote("s2 memory", two, 1, 2)


def test_checker_rejects_a_leader_without_a_committed_entry() -> None:
    checker = _checker()
    checker.after_step(1, 1, False, 2, 2, _log(1, 2))
    with pytest.raises(AssertionError, match="leader completeness"):
        checker.after_step(2, 1, True, 3, 0, _log(1, 1))


def test_checker_rejects_a_commit_index_going_back() -> None:
    checker = _checker()
    checker.after_step(1, 1, False, 2, 2, _log(1, 2))
    with pytest.raises(AssertionError, match="went back"):
        checker.after_step(1, 1, False, 2, 1, _log(1, 2))
    checker.after_step(1, 2, False, 2, 0, _log(1, 2))  # a restart starts over


def test_checker_rejects_two_votes_in_one_term() -> None:
    checker = _checker()
    checker.voted(1, 4, 2)
    with pytest.raises(AssertionError, match="vote safety"):
        checker.voted(1, 4, 3)


def test_simulation_catches_a_disk_that_forgets_votes(monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: an I/O layer that loses the vote on a crash must be caught."""
    crash = Disk.crash

    def amnesia(self: Disk) -> None:
        crash(self)
        self.voted_for = 0

    def scenario() -> None:
        # s2, cut off, stays in term 1 (pre-vote); the voter of term 2's leader
        # crashes and restarts; then s2 asks it for its vote in term 2.
        cluster = Cluster(3, Options(servers=3, pre_vote=True))
        perform(cluster, Partition((frozenset({1, 3}), frozenset({2}))))
        cluster.start()
        leader = _await_leader(cluster)
        voter = cluster.nodes[4 - leader.id]
        assert leader.raft is not None and leader.raft.current_term == 2
        perform(cluster, Crash(voter.id))
        perform(cluster, Restart(voter.id))
        perform(cluster, Partition((frozenset({leader.id}), frozenset({2, voter.id}))))
        cluster.run_until(cluster.now + 10_000)

    scenario()  # (with a sound disk nothing is wrong)
    monkeypatch.setattr(Disk, "crash", amnesia)
    with pytest.raises(
        AssertionError, match=r"vote safety: s\d voted for s\d and then s2 in term 2"
    ):
        scenario()


def test_simulation_catches_a_disk_that_lies_about_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """End to end: entries reported persisted but never written must be caught."""
    monkeypatch.setattr(Disk, "complete_next", lambda self: self._pending.popleft())
    with pytest.raises(AssertionError, match="durability"):
        run_seed(0)
