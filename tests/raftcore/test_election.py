"""Elections: timeouts, candidacy, votes (Raft paper section 5.2, 5.4.1; C-Raft election.c)."""

from __future__ import annotations

import pytest

from raftcore import (
    AppendEntries,
    Entry,
    RequestVote,
    RequestVoteResult,
    State,
    TimeoutNow,
    UpdateFlags,
)
from tests.raftcore.harness import ELECTION_TIMEOUT, Cluster, cmd


def vote_results(c: Cluster, src: int, dst: int) -> list[RequestVoteResult]:
    return c.sent(src, dst, RequestVoteResult)


# -- the election timer ---------------------------------------------------


@pytest.mark.parametrize("seed", range(30))
def test_election_timeout_is_randomized_within_t_and_2t(seed: int) -> None:
    c = Cluster(3, seeds={1: seed})

    assert ELECTION_TIMEOUT <= c.raft(1).timeout < 2 * ELECTION_TIMEOUT


def test_same_seed_gives_same_timeout() -> None:
    a = Cluster(3, seeds={1: 7})
    b = Cluster(3, seeds={1: 7})

    assert a.raft(1).timeout == b.raft(1).timeout


def test_different_seeds_give_different_timeouts() -> None:
    timeouts = {Cluster(3, seeds={1: seed}).raft(1).timeout for seed in range(20)}

    assert len(timeouts) > 5


def test_candidate_rearms_its_timer_within_t_and_2t() -> None:
    c = Cluster(3)
    c.fire_timeout(1)

    assert c.now + ELECTION_TIMEOUT <= c.raft(1).timeout < c.now + 2 * ELECTION_TIMEOUT


# -- candidacy --------------------------------------------------------------


def test_follower_times_out_and_becomes_candidate() -> None:
    c = Cluster(3)

    update = c.fire_timeout(1)

    r = c.raft(1)
    assert r.state == State.CANDIDATE
    assert r.current_term == 2
    assert r.voted_for == 1
    assert r.leader == (0, None)
    # Term and vote must be persisted before the requests leave: same update.
    assert update.flags & UpdateFlags.CURRENT_TERM
    assert update.flags & UpdateFlags.VOTED_FOR
    assert update.flags & UpdateFlags.STATE
    assert update.flags & UpdateFlags.MESSAGES
    requests = {m.server_id: m.payload for m in update.messages}
    assert requests == {
        2: RequestVote(term=2, candidate_id=1, last_log_index=1, last_log_term=1),
        3: RequestVote(term=2, candidate_id=1, last_log_index=1, last_log_term=1),
    }


def test_candidate_with_a_majority_of_votes_becomes_leader() -> None:
    c = Cluster(3)
    c.fire_timeout(1)
    c.deliver_from(1)  # both voters grant

    [update] = c.deliver(src=2, dst=1)  # its own vote and server 2's: a majority

    r = c.raft(1)
    assert r.state == State.LEADER
    assert r.leader == (1, "s1")
    assert update.flags & UpdateFlags.STATE
    # The new leader asserts itself with AppendEntries at once.
    assert {m.server_id for m in update.messages if isinstance(m.payload, AppendEntries)} == {2, 3}


def test_followers_learn_the_leader_from_append_entries() -> None:
    c = Cluster(3)
    c.elect(1)

    assert c.raft(2).leader == (1, "s1")
    assert c.raft(3).leader == (1, "s1")
    assert c.raft(2).current_term == 2


# -- granting votes -----------------------------------------------------------


def test_vote_is_persisted_in_the_update_that_grants_it() -> None:
    c = Cluster(3)
    c.fire_timeout(1)

    [update] = c.deliver(src=1, dst=2)

    assert c.raft(2).voted_for == 1
    assert update.flags & UpdateFlags.VOTED_FOR
    assert update.flags & UpdateFlags.CURRENT_TERM  # term 1 -> 2
    [reply] = update.messages
    assert reply.server_id == 1
    assert reply.payload == RequestVoteResult(term=2, vote_granted=True)
    assert (c[2].disk.term, c[2].disk.voted_for) == (2, 1)


@pytest.mark.parametrize(
    ("voter_log", "candidate_log"),
    [
        pytest.param([cmd(2, b"a")], [], id="voter-has-a-later-last-term"),
        pytest.param([cmd(2, b"a"), cmd(2, b"b")], [cmd(2, b"a")], id="same-term-voter-longer"),
        pytest.param([cmd(3, b"a")], [cmd(2, b"a"), cmd(2, b"b")], id="later-term-beats-length"),
    ],
)
def test_vote_refused_to_a_candidate_with_a_less_up_to_date_log(
    voter_log: list[Entry], candidate_log: list[Entry]
) -> None:
    # Server 1 votes, server 2 runs, server 3 has only the bootstrap entry.
    c = Cluster(3, terms={1: 3, 2: 3, 3: 3}, logs={1: voter_log, 2: candidate_log})
    c.fire_timeout(2)

    c.deliver_from(2)

    assert vote_results(c, 1, 2) == [RequestVoteResult(term=4, vote_granted=False)]
    assert c.raft(1).current_term == 4  # the higher term is still adopted
    assert c.raft(1).voted_for == 0
    assert vote_results(c, 3, 2) == [RequestVoteResult(term=4, vote_granted=True)]


def test_vote_granted_to_a_candidate_with_an_equal_log() -> None:
    c = Cluster(3, terms={1: 2, 2: 2}, logs={1: [cmd(2, b"a")], 2: [cmd(2, b"a")]})
    c.fire_timeout(2)

    c.deliver(src=2, dst=1)

    assert vote_results(c, 1, 2) == [RequestVoteResult(term=3, vote_granted=True)]
    assert c.raft(1).voted_for == 2


def test_one_vote_per_term_first_come_first_served() -> None:
    c = Cluster(3)
    c.fire_timeout(1)
    c.fire_timeout(2)  # both candidates in term 2
    assert c.raft(1).current_term == c.raft(2).current_term == 2

    c.deliver(src=1, dst=3)
    c.deliver(src=2, dst=3)

    assert c.raft(3).voted_for == 1
    assert vote_results(c, 3, 1) == [RequestVoteResult(term=2, vote_granted=True)]
    assert vote_results(c, 3, 2) == [RequestVoteResult(term=2, vote_granted=False)]


def test_candidates_do_not_vote_for_each_other() -> None:
    c = Cluster(3)
    c.fire_timeout(1)
    c.fire_timeout(2)

    c.deliver(src=1, dst=2)
    c.deliver(src=2, dst=1)

    assert vote_results(c, 2, 1) == [RequestVoteResult(term=2, vote_granted=False)]
    assert vote_results(c, 1, 2) == [RequestVoteResult(term=2, vote_granted=False)]
    assert c.raft(1).voted_for == 1
    assert c.raft(2).voted_for == 2


def test_split_vote_is_resolved_by_a_later_election() -> None:
    c = Cluster(4)
    c.fire_timeout(1)
    c.fire_timeout(2)
    c.deliver(src=1, dst=3)  # 3 votes for 1
    c.deliver(src=2, dst=4)  # 4 votes for 2
    c.deliver()  # every other request is refused
    c.deliver()  # results: 2 votes each, 3 needed

    assert c.leaders() == []
    assert c.raft(1).state == c.raft(2).state == State.CANDIDATE

    c.advance(2 * ELECTION_TIMEOUT, settle=True)

    [leader] = c.leaders()
    assert c.raft(leader).current_term >= 3


# -- leader stickiness --------------------------------------------------------


def test_follower_with_a_leader_rejects_votes_without_bumping_its_term() -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.fire_timeout(3)  # 3 hears nothing and runs for term 3
    c.heal()
    request = c.sent(3, 2, RequestVote)[-1]

    update = c.send(3, 2, request)

    assert c.raft(2).current_term == 2
    assert c.raft(2).voted_for == 1  # its vote of term 2 stands
    assert not update.flags & (UpdateFlags.CURRENT_TERM | UpdateFlags.VOTED_FOR)
    assert [m.payload.vote_granted for m in update.messages] == [False]
    assert c.raft(2).leader == (1, "s1")


def test_leader_rejects_votes_without_bumping_its_term() -> None:
    c = Cluster(3)
    c.elect(1)

    c.send(3, 1, RequestVote(term=3, candidate_id=3, last_log_index=1, last_log_term=1))

    assert c.raft(1).state == State.LEADER
    assert c.raft(1).current_term == 2


def test_disrupt_leader_request_is_considered_despite_a_leader() -> None:
    c = Cluster(3)
    c.elect(1)
    last = c.raft(2).last_index
    request = RequestVote(
        term=3, candidate_id=3, last_log_index=last, last_log_term=2, disrupt_leader=True
    )

    update = c.send(3, 2, request)

    assert c.raft(2).current_term == 3
    assert c.raft(2).voted_for == 3
    assert update.flags & UpdateFlags.VOTED_FOR
    assert [m.payload.vote_granted for m in update.messages] == [True]


# -- candidates advertise only what is durable -------------------------------


def test_candidate_never_advertises_an_unpersisted_entry() -> None:
    c = Cluster(3)
    c.elect(1)
    durable = c.raft(2).last_index
    c.submit(1, b"x")
    c.deliver(src=1, dst=2)  # server 2 appends x but its write has not landed
    assert c.raft(2).last_index == durable + 1

    # The leader hands over leadership: server 2 may run at once (disrupt_leader),
    # or, like C-Raft's timeout, wait until its write has landed.
    c.send(1, 2, TimeoutNow(term=2, last_log_index=durable + 1, last_log_term=2))

    for request in c.sent(2, kind=RequestVote):
        assert (request.last_log_index, request.last_log_term) == (durable, 2)


def test_candidate_advertises_its_persisted_entries() -> None:
    c = Cluster(3)
    c.elect(1)
    c.submit(1, b"x")
    c.deliver(src=1, dst=2)
    c.persist(2)
    last = c.raft(2).last_index

    c.send(1, 2, TimeoutNow(term=2, last_log_index=last, last_log_term=2))

    assert c.raft(2).state == State.CANDIDATE
    assert c.raft(2).current_term == 3
    [request, *_] = c.sent(2, kind=RequestVote)
    assert request == RequestVote(
        term=3, candidate_id=2, last_log_index=last, last_log_term=2, disrupt_leader=True
    )


def test_unpersisted_entries_are_never_advertised_after_stepping_down() -> None:
    c = Cluster(3)
    c.elect(1)
    durable = c.raft(1).last_index
    c.submit(1, b"x")  # the leader's own write never lands
    c.isolate(1)
    mark = len(c[1].sent)

    c.advance(4 * ELECTION_TIMEOUT)

    # It steps down (check-quorum); C-Raft then stays follower while entries are
    # being persisted. Whatever it does, it must not advertise index durable + 1.
    assert c.raft(1).state != State.LEADER
    for request in c.sent(1, kind=RequestVote, since=mark):
        assert request.last_log_index == durable
