"""Pre-vote (dissertation 9.6): a candidate first asks whether it could win."""

from __future__ import annotations

from raftcore import RequestVote, RequestVoteResult, State, UpdateFlags
from tests.raftcore.harness import ELECTION_TIMEOUT, Cluster, cmd

TERM_OR_VOTE = UpdateFlags.CURRENT_TERM | UpdateFlags.VOTED_FOR


def test_pre_vote_round_leaves_the_candidates_term_and_vote_alone() -> None:
    c = Cluster(3, pre_vote=True)

    update = c.fire_timeout(1)

    r = c.raft(1)
    assert r.state == State.CANDIDATE
    assert (r.current_term, r.voted_for) == (1, 0)
    assert not update.flags & TERM_OR_VOTE
    assert (c[1].disk.term, c[1].disk.voted_for) == (1, 0)
    # It asks for the term it would run in.
    requests = {m.server_id: m.payload for m in update.messages}
    assert requests == {
        i: RequestVote(term=2, candidate_id=1, last_log_index=1, last_log_term=1, pre_vote=True)
        for i in (2, 3)
    }


def test_pre_vote_leaves_the_voters_term_and_vote_alone() -> None:
    c = Cluster(3, pre_vote=True)
    c.fire_timeout(1)

    updates = c.deliver_from(1)

    for i, update in zip((2, 3), updates, strict=True):
        assert (c.raft(i).current_term, c.raft(i).voted_for) == (1, 0)
        assert not update.flags & TERM_OR_VOTE
        assert [m.payload for m in update.messages] == [
            RequestVoteResult(term=2, vote_granted=True, pre_vote=True)
        ]


def test_pre_vote_majority_starts_the_real_election() -> None:
    c = Cluster(3, pre_vote=True)
    c.fire_timeout(1)
    c.deliver_from(1)

    [update] = c.deliver(src=2, dst=1)

    r = c.raft(1)
    assert r.state == State.CANDIDATE
    assert (r.current_term, r.voted_for) == (2, 1)
    assert update.flags & UpdateFlags.CURRENT_TERM
    assert update.flags & UpdateFlags.VOTED_FOR
    requests = [m.payload for m in update.messages if isinstance(m.payload, RequestVote)]
    assert {(q.term, q.pre_vote) for q in requests} == {(2, False)}
    assert len(requests) == 2


def test_pre_vote_then_vote_elects_a_leader() -> None:
    c = Cluster(3, pre_vote=True)

    c.elect(1)

    assert c.raft(1).state == State.LEADER
    assert [c.raft(i).current_term for i in c.ids] == [2, 2, 2]


def test_failed_pre_vote_bumps_no_term() -> None:
    # Server 1 lags: both others have a later entry and refuse it.
    c = Cluster(3, pre_vote=True, terms={1: 2, 2: 2, 3: 2}, logs={2: [cmd(2)], 3: [cmd(2)]})
    c.fire_timeout(1)

    c.deliver_from(1)
    c.deliver_to(1)

    assert [c.raft(i).current_term for i in c.ids] == [2, 2, 2]
    assert c.raft(1).state == State.CANDIDATE
    assert c.sent(2, 1, RequestVoteResult) == [
        RequestVoteResult(term=3, vote_granted=False, pre_vote=True)
    ]


def test_rejoining_server_does_not_disrupt_the_leader() -> None:
    c = Cluster(3, pre_vote=True)
    c.elect(1)
    c.isolate(3)

    c.advance(5 * ELECTION_TIMEOUT, settle=True)  # 3 keeps failing its pre-votes
    assert c.raft(3).current_term == 2

    c.heal()
    c.advance(3 * ELECTION_TIMEOUT, settle=True)

    assert c.leaders() == [1]
    assert [c.raft(i).current_term for i in c.ids] == [2, 2, 2]
    assert c.raft(3).leader == (1, "s1")


def test_without_pre_vote_a_rejoining_server_deposes_the_leader() -> None:
    # The contrast: the isolated server's term runs ahead and, once back, its
    # higher term makes the leader step down.
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)

    c.advance(5 * ELECTION_TIMEOUT, settle=True)
    assert c.raft(3).current_term > 2

    c.heal()
    c.advance(3 * ELECTION_TIMEOUT, settle=True)

    assert c.raft(1).current_term > 2
