"""Terms: a higher term wins, a lower one is refused (Raft paper figure 2, "All Servers")."""

from __future__ import annotations

import pytest

from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    RequestVote,
    RequestVoteResult,
    State,
    UpdateFlags,
)
from raftcore.messages import Payload
from tests.raftcore.harness import Cluster

HIGH = 5


def leader_in_term_2() -> Cluster:
    c = Cluster(3)
    c.elect(1)
    return c


def candidate_in_term_2() -> Cluster:
    c = Cluster(3)
    c.fire_timeout(1)
    return c


# Messages from server 2 carrying a higher term. Where C-Raft ignores a message
# whatever its term (a vote result at a leader, an append result at a
# non-leader) or leader stickiness applies, there is no case here.
HIGHER_TERM_AT_LEADER = [
    pytest.param(AppendEntries(HIGH, 1, 1, 1), id="append-entries"),
    pytest.param(AppendEntriesResult(HIGH, rejected=0, last_log_index=1), id="append-result"),
    pytest.param(RequestVote(HIGH, 2, 10, HIGH - 1, disrupt_leader=True), id="request-vote"),
]
HIGHER_TERM_AT_CANDIDATE = [
    pytest.param(AppendEntries(HIGH, 1, 1, 1), id="append-entries"),
    pytest.param(RequestVote(HIGH, 2, 10, HIGH - 1), id="request-vote"),
    pytest.param(RequestVoteResult(HIGH, vote_granted=False), id="vote-result"),
]


@pytest.mark.parametrize("payload", HIGHER_TERM_AT_LEADER)
def test_higher_term_turns_a_leader_into_follower(payload: Payload) -> None:
    c = leader_in_term_2()

    update = c.send(2, 1, payload)

    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).current_term == HIGH
    assert update.flags & UpdateFlags.CURRENT_TERM
    assert update.flags & UpdateFlags.STATE
    assert c[1].disk.term == HIGH


@pytest.mark.parametrize("payload", HIGHER_TERM_AT_CANDIDATE)
def test_higher_term_turns_a_candidate_into_follower(payload: Payload) -> None:
    c = candidate_in_term_2()

    update = c.send(2, 1, payload)

    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).current_term == HIGH
    assert update.flags & UpdateFlags.CURRENT_TERM
    assert update.flags & UpdateFlags.STATE


def test_higher_term_clears_the_vote() -> None:
    c = candidate_in_term_2()  # voted for itself in term 2

    c.send(2, 1, AppendEntries(HIGH, 1, 1, 1))

    assert c.raft(1).voted_for == 0
    assert (c[1].disk.term, c[1].disk.voted_for) == (HIGH, 0)


def test_append_entries_of_the_same_term_turns_a_candidate_into_follower() -> None:
    c = candidate_in_term_2()

    c.send(2, 1, AppendEntries(2, 1, 1, 1))

    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).current_term == 2
    assert c.raft(1).leader == (2, "s2")


def test_follower_adopts_a_higher_term_from_append_entries() -> None:
    c = leader_in_term_2()

    update = c.send(3, 2, AppendEntries(HIGH, 1, 1, 1))

    assert c.raft(2).current_term == HIGH
    assert c.raft(2).leader == (3, "s3")
    assert update.flags & UpdateFlags.CURRENT_TERM


# -- lower terms --------------------------------------------------------------


def test_append_entries_of_a_lower_term_is_rejected() -> None:
    c = leader_in_term_2()
    log = list(c[2].log)

    update = c.send(3, 2, AppendEntries(1, 1, 1, 1, [c[2].log[0]]))

    [reply] = update.messages
    assert reply.server_id == 3
    assert isinstance(reply.payload, AppendEntriesResult)
    assert reply.payload.term == 2
    assert reply.payload.rejected != 0
    assert c.raft(2).leader == (1, "s1")
    assert c.raft(2).current_term == 2
    assert c[2].log == log


def test_request_vote_of_a_lower_term_is_refused() -> None:
    c = Cluster(3, terms={1: 3, 2: 3, 3: 3})

    update = c.send(2, 1, RequestVote(2, 2, 10, 2))

    assert [m.payload for m in update.messages] == [RequestVoteResult(3, vote_granted=False)]
    assert c.raft(1).voted_for == 0
    assert c.raft(1).current_term == 3


def test_vote_result_of_a_lower_term_is_not_counted() -> None:
    c = Cluster(3, terms={1: 3, 2: 3, 3: 3})
    c.fire_timeout(1)  # candidate in term 4

    c.send(2, 1, RequestVoteResult(3, vote_granted=True))

    assert c.raft(1).state == State.CANDIDATE


def test_append_result_of_a_lower_term_is_ignored() -> None:
    c = leader_in_term_2()
    c.drop_to(2)
    c.submit(1, b"x")
    match = c.raft(1).match_index(2)

    c.send(2, 1, AppendEntriesResult(1, rejected=0, last_log_index=c.raft(1).last_index))

    assert c.raft(1).match_index(2) == match
    assert c.raft(1).state == State.LEADER
