"""Leadership transfer: TRANSFER, TimeoutNow, and the disrupting election it starts."""

from __future__ import annotations

from raftcore import (
    AppendEntries,
    BadId,
    Event,
    NotFound,
    NotLeader,
    RequestVote,
    RequestVoteResult,
    Role,
    State,
    TimeoutNow,
)
from tests.raftcore.harness import ELECTION_TIMEOUT, cmd
from tests.raftcore.harness_ext import ExtCluster, assert_refused, leader_cluster


def transfer(c: ExtCluster, target: int) -> None:
    c.step(1, Event.transfer(c.now, target))


def timeout_now(c: ExtCluster, term: int | None = None) -> TimeoutNow:
    """What leader 1 would send now."""
    r = c.raft(1)
    term = r.current_term if term is None else term
    return TimeoutNow(term=term, last_log_index=r.last_index, last_log_term=c.last_term(1))


def lagging(target: int, **options: object) -> ExtCluster:
    """Leader 1 appended a command that ``target`` has not received yet (it is in flight)."""
    c = leader_cluster(3, **options)
    c.submit(1, b"x")
    others = [i for i in c.ids if i not in (1, target)]
    for i in others:
        c.deliver(src=1, dst=i)
    c.persist_all()
    for i in others:
        c.deliver(src=i, dst=1)
    return c


# -- the leader's side ----------------------------------------------------------------


def test_transfer_to_an_up_to_date_voter_sends_timeout_now_at_once() -> None:
    c = leader_cluster(3)

    transfer(c, 2)

    [sent] = c.in_flight(src=1, dst=2, kind=TimeoutNow)
    assert sent.payload == timeout_now(c)
    r = c.raft(1)
    assert r.state == State.LEADER
    assert r.transferee == 2
    assert r.leader == (0, None)


def test_submit_during_a_transfer_is_refused() -> None:
    c = leader_cluster(3)
    transfer(c, 2)

    assert_refused(c, 1, Event.submit(c.now, [cmd(2, b"x")]), NotLeader)


def test_transfer_waits_until_the_target_has_the_whole_log() -> None:
    c = lagging(2)
    transfer(c, 2)
    assert c.in_flight(src=1, kind=TimeoutNow) == []

    # Server 2 receives and persists the command, and acknowledges it.
    c.deliver(src=1, dst=2)
    c.persist(2)
    c.deliver(src=2, dst=1)

    assert c.raft(1).match_index(2) == c.raft(1).last_index
    [sent] = c.in_flight(src=1, dst=2, kind=TimeoutNow)
    assert sent.payload == timeout_now(c)


def test_transfer_hands_leadership_over() -> None:
    c = leader_cluster(3)
    transfer(c, 2)
    c.settle()

    assert c.leaders() == [2]
    assert c.raft(2).current_term == 3
    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).transferee == 0
    c.heartbeat()
    assert c.raft(1).leader == (2, "s2")
    assert c.raft(3).leader == (2, "s2")


def test_transfer_to_zero_picks_the_most_up_to_date_voter() -> None:
    # Server 3 holds the latest command, server 2 does not.
    c = lagging(2)

    transfer(c, 0)

    assert c.raft(1).transferee == 3
    assert c.in_flight(src=1, dst=3, kind=TimeoutNow)


def test_transfer_to_zero_ignores_non_voters() -> None:
    # Stand-by 2 is up to date; voter 3 is behind, yet it is the one picked.
    c = lagging(3, roles={2: Role.STANDBY})

    transfer(c, 0)

    assert c.raft(1).transferee == 3


def test_transfer_not_done_within_an_election_timeout_is_abandoned() -> None:
    # Server 2 never gets the TimeoutNow.
    c = leader_cluster(3)
    transfer(c, 2)
    c.drop(kind=TimeoutNow)

    c.advance(ELECTION_TIMEOUT - 100, settle=True)
    assert c.raft(1).leader == (0, None)

    c.advance(200, settle=True)
    r = c.raft(1)
    assert r.state == State.LEADER
    assert r.transferee == 0
    assert r.leader == (1, "s1")
    c.submit(1, b"x")
    c.settle()
    assert r.commit_index == r.last_index


# -- the target's side ----------------------------------------------------------------


def test_timeout_now_starts_an_election_at_once_that_may_disrupt_the_leader() -> None:
    c = leader_cluster(3)
    transfer(c, 2)
    c.deliver(kind=TimeoutNow)

    r = c.raft(2)
    assert r.state == State.CANDIDATE
    assert r.current_term == 3
    requests = c.in_flight(src=2, kind=RequestVote)
    assert sorted(e.dst for e in requests) == [1, 3]
    assert all(e.payload.disrupt_leader and not e.payload.pre_vote for e in requests)


def test_voters_grant_a_disrupting_vote_despite_having_a_leader() -> None:
    # Server 3 follows leader 1; a plain request would be refused (stickiness).
    c = leader_cluster(3)
    plain = RequestVote(
        term=3, candidate_id=2, last_log_index=c.raft(2).last_index, last_log_term=c.last_term(2)
    )
    c.send(2, 3, plain)
    assert c.sent(3, dst=2, kind=RequestVoteResult)[-1].vote_granted is False

    transfer(c, 2)
    c.deliver(kind=TimeoutNow)
    c.deliver(src=2, dst=3)

    assert c.sent(3, dst=2, kind=RequestVoteResult)[-1].vote_granted is True
    assert c.raft(3).voted_for == 2


def test_timeout_now_skips_pre_vote() -> None:
    c = leader_cluster(3, pre_vote=True)
    transfer(c, 2)
    c.deliver(kind=TimeoutNow)

    assert c.raft(2).current_term == 3
    assert all(not e.payload.pre_vote for e in c.in_flight(src=2, kind=RequestVote))
    c.settle()
    assert c.leaders() == [2]


def test_timeout_now_is_ignored_unless_the_log_ends_there() -> None:
    c = leader_cluster(3)
    last, term = c.raft(2).last_index, c.last_term(2)
    ahead = TimeoutNow(term=2, last_log_index=last + 1, last_log_term=term)
    other_term = TimeoutNow(term=2, last_log_index=last, last_log_term=term + 1)

    for message in (ahead, other_term):
        c.send(1, 2, message)
        assert c.raft(2).state == State.FOLLOWER
        assert c.raft(2).current_term == 2


def test_timeout_now_is_ignored_until_the_log_is_persisted() -> None:
    # Server 2 has appended the command but not yet persisted it.
    c = lagging(2)
    c.deliver(src=1, dst=2, kind=AppendEntries)
    assert c.raft(2).last_index == c.raft(1).last_index

    c.send(1, 2, timeout_now(c))
    assert c.raft(2).state == State.FOLLOWER

    c.persist(2)
    c.send(1, 2, timeout_now(c))
    assert c.raft(2).state == State.CANDIDATE


def test_timeout_now_is_ignored_by_a_standby() -> None:
    c = leader_cluster(3, roles={3: Role.STANDBY})

    c.send(1, 3, timeout_now(c))

    assert c.raft(3).state == State.FOLLOWER
    assert c.raft(3).current_term == 2
    assert c.sent(3, kind=RequestVote) == []


def test_timeout_now_of_an_old_term_is_ignored() -> None:
    c = leader_cluster(3)

    c.send(1, 2, timeout_now(c, term=1))

    assert c.raft(2).state == State.FOLLOWER
    assert c.raft(2).current_term == 2


# -- refused requests ---------------------------------------------------------------


def test_transfer_on_a_follower_is_refused() -> None:
    c = leader_cluster(3)

    assert_refused(c, 2, Event.transfer(c.now, 3), NotLeader)


def test_second_transfer_while_one_runs_is_refused() -> None:
    c = leader_cluster(3)
    transfer(c, 2)

    assert_refused(c, 1, Event.transfer(c.now, 3), NotLeader)


def test_transfer_to_self_unknown_or_non_voter_is_a_bad_id() -> None:
    c = leader_cluster(4, roles={3: Role.STANDBY, 4: Role.SPARE})

    for target in (1, 3, 4, 9):
        assert_refused(c, 1, Event.transfer(c.now, target), BadId)


def test_transfer_to_zero_without_another_voter_is_not_found() -> None:
    c = leader_cluster(2, roles={2: Role.STANDBY})

    assert_refused(c, 1, Event.transfer(c.now, 0), NotFound)
