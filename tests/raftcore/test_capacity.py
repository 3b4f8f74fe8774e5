"""Disk capacity: followers report it, SUBMIT refuses with NoSpace when a majority is low."""

from __future__ import annotations

from raftcore import (
    AppendEntriesResult,
    Event,
    NoSpace,
    RequestVote,
    RequestVoteResult,
    Role,
    State,
)
from tests.raftcore.harness import cmd
from tests.raftcore.harness_ext import ExtCluster, assert_refused, leader_cluster

THRESHOLD = 100
LOW = THRESHOLD - 1
ENOUGH = THRESHOLD


def with_capacities(n: int = 3, roles: dict[int, Role] | None = None, **low: int) -> ExtCluster:
    """Leader 1 among ``n`` servers with enough capacity; then the servers named in
    ``low`` (``s2=50``) report their capacity at the next heartbeat."""
    c = leader_cluster(n, roles=roles, capacity_threshold=THRESHOLD)
    c.capacity = {i: ENOUGH for i in c.ids}
    c.heartbeat()
    for name, capacity in low.items():
        c.capacity[int(name[1:])] = capacity
    c.heartbeat()
    return c


def submit(c: ExtCluster, capacity: int = ENOUGH) -> Event:
    """A SUBMIT on leader 1 whose event reports the leader's own capacity."""
    return Event.submit(c.now, [cmd(c.raft(1).current_term, b"x")], capacity=capacity)


def accepted(c: ExtCluster, event: Event) -> None:
    """SUBMIT on leader 1 appends the entry."""
    last = c.raft(1).last_index
    c.step(1, event)
    assert c.raft(1).last_index == last + 1


def test_followers_report_the_capacity_of_their_last_event() -> None:
    c = with_capacities(s2=42)

    assert c.sent(2, dst=1, kind=AppendEntriesResult)[-1].capacity == 42
    assert c.sent(3, dst=1, kind=AppendEntriesResult)[-1].capacity == ENOUGH


def test_vote_results_carry_the_capacity_too() -> None:
    c = ExtCluster(3, capacity_threshold=THRESHOLD)
    c.capacity[2] = 42

    c.send(1, 2, RequestVote(term=2, candidate_id=1, last_log_index=1, last_log_term=1))

    assert c.sent(2, dst=1, kind=RequestVoteResult)[-1].capacity == 42


def test_submit_is_accepted_when_everyone_has_enough() -> None:
    c = with_capacities()

    c.step(1, submit(c))
    c.settle()

    assert c.raft(1).commit_index == c.raft(1).last_index


def test_submit_is_refused_when_a_majority_of_followers_is_low() -> None:
    # Followers 2 and 3 (a majority of three voters) report too little.
    c = with_capacities(s2=LOW, s3=LOW)

    assert_refused(c, 1, submit(c), NoSpace)


def test_one_low_follower_does_not_block() -> None:
    c = with_capacities(s3=LOW)

    accepted(c, submit(c))


def test_the_leaders_own_capacity_comes_from_the_submit_event() -> None:
    # Follower 2 is low; with the leader low as well, that is two of three.
    c = with_capacities(s2=LOW)

    assert_refused(c, 1, submit(c, capacity=LOW), NoSpace)
    accepted(c, submit(c, capacity=ENOUGH))


def test_submit_is_accepted_again_once_capacity_recovers() -> None:
    c = with_capacities(s2=LOW, s3=LOW)
    assert_refused(c, 1, submit(c), NoSpace)

    # Server 3 freed some space; its next answer says so.
    c.capacity[3] = ENOUGH
    c.heartbeat()

    c.step(1, submit(c))
    c.settle()
    assert c.raft(1).commit_index == c.raft(1).last_index


def test_followers_that_have_not_reported_do_not_count_as_low() -> None:
    # A new leader has heard from no follower yet: only its own capacity is known.
    c = ExtCluster(3, capacity_threshold=THRESHOLD)
    c.capacity = {2: LOW, 3: LOW}
    c.fire_timeout(1)
    c.persist_all()
    c.deliver(kind=RequestVote)
    c.deliver(kind=RequestVoteResult)
    assert c.raft(1).state == State.LEADER

    accepted(c, submit(c, capacity=LOW))


def test_non_voters_capacity_does_not_count() -> None:
    # Voters 1 and 2, stand-by 3. Leader 1 and stand-by 3 are low: one voter of two.
    c = with_capacities(roles={3: Role.STANDBY}, s3=LOW)

    accepted(c, submit(c, capacity=LOW))

    # Voter 2 low too: both voters are low.
    c.capacity[2] = LOW
    c.heartbeat()
    assert_refused(c, 1, submit(c, capacity=LOW), NoSpace)


def test_without_a_threshold_capacity_is_not_checked() -> None:
    c = leader_cluster(3)
    c.capacity = {2: 0, 3: 0}
    c.heartbeat()

    accepted(c, submit(c, capacity=0))
