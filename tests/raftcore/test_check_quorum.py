"""Check-quorum (dissertation 6.2): a leader cut off from a majority steps down."""

from __future__ import annotations

from raftcore import State, UpdateFlags
from tests.raftcore.harness import ELECTION_TIMEOUT, HEARTBEAT_TIMEOUT, Cluster


def test_isolated_leader_steps_down_after_an_election_timeout() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)

    c.advance(2 * ELECTION_TIMEOUT + HEARTBEAT_TIMEOUT)

    r = c.raft(1)
    assert r.state == State.FOLLOWER
    assert r.leader == (0, None)
    assert r.current_term == 2  # stepping down is not a new term
    assert any(u.flags & UpdateFlags.STATE for u in c.updates(1)[-20:])


def test_isolated_leader_keeps_leading_within_an_election_timeout() -> None:
    # It heard from both followers when elected; that holds for a while.
    c = Cluster(3)
    c.elect(1)
    c.isolate(1)

    c.advance(ELECTION_TIMEOUT - HEARTBEAT_TIMEOUT)

    assert c.raft(1).state == State.LEADER


def test_leader_loses_its_majority_when_followers_crash() -> None:
    c = Cluster(3)
    c.elect(1)
    c.crash(2)
    c.crash(3)

    c.advance(2 * ELECTION_TIMEOUT + HEARTBEAT_TIMEOUT, settle=True)

    assert c.raft(1).state == State.FOLLOWER


def test_leader_that_hears_from_a_majority_stays() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)  # 1 and 2 are still a majority

    c.advance(10 * ELECTION_TIMEOUT, settle=True)

    assert c.raft(1).state == State.LEADER
    assert c.raft(1).current_term == 2
    assert c.raft(2).leader == (1, "s1")


def test_leader_with_one_follower_of_four_steps_down() -> None:
    # 2 of 5 is not a majority.
    c = Cluster(5)
    c.elect(1)
    c.partition([1, 2], [3, 4, 5])

    c.advance(2 * ELECTION_TIMEOUT + HEARTBEAT_TIMEOUT, settle=True)

    assert c.raft(1).state == State.FOLLOWER
