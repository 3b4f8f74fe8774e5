"""Elections: timeouts, pre-vote, RequestVote and its result, TimeoutNow.

Follows the dissertation (chapter 3 and 9.6 for pre-vote) with C-Raft's
choices: a server that has a leader rejects votes without bumping its term
unless the candidate may disrupt the leader (leadership transfer), and a
candidate advertises its persisted last index, the only one it may count on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore import convert, quorum
from raftcore.configuration import Configuration
from raftcore.messages import Message, RequestVote, RequestVoteResult, TimeoutNow
from raftcore.types import State

if TYPE_CHECKING:
    from raftcore.raft import Raft


def follower_tick(r: Raft) -> None:
    """TIMEOUT on a follower or candidate: start an election when its timer has run out."""
    if r.now < r.election_deadline:
        return
    if not r.configuration.is_voter(r.id) and not _voter_before_pending_change(r):
        r.trace("election timeout but not a voter -> stay follower")
        if r.leader_id:
            r.trace("no news from leader %d -> forget it", r.leader_id)
        r.leader_id = 0
        r.leader_address = None
        r.reset_election_timer()
        return
    r.trace("election timeout in state %s -> start election", r.state.name)
    start_election(r, disrupt_leader=False)


def _voter_before_pending_change(r: Raft) -> bool:
    """Whether an uncommitted change (not known committed here) took our vote away.

    Such a server may hold the only log that can win (it has the change);
    if it never campaigned, the cluster could be stuck (dissertation 4.2.2:
    a server left out of its latest configuration still campaigns until it
    knows that configuration committed). Its own vote is not counted.
    """
    pending = r.configuration_pending_index
    if not pending or r.commit_index >= pending:
        return False
    found = r.log.last_change_before(pending)
    if found is not None:
        previous = Configuration.decode(found[1].data)
    elif r.snapshot_metadata is not None:
        previous = r.snapshot_metadata.configuration
    else:
        return False
    return previous.is_voter(r.id)


def start_election(r: Raft, disrupt_leader: bool) -> None:
    convert.to_candidate(r, disrupt_leader)
    if r.in_pre_vote:
        _request_votes(r, term=r.current_term + 1)
    else:
        _start_real_election(r)


def _start_real_election(r: Raft) -> None:
    r.in_pre_vote = False
    r.current_term += 1
    r.voted_for = r.id
    r.trace("start election for term %d, vote for self", r.current_term)
    _request_votes(r, term=r.current_term)


def _request_votes(r: Raft, term: int) -> None:
    """Vote for self, ask every other voter, and win at once if alone."""
    r.votes = {r.id}
    r.reset_election_timer()
    last_index = r.log.persisted
    last_term = r.log.term_of(last_index) or 0
    kind = "pre-vote" if r.in_pre_vote else "vote"
    for server_id in r.configuration.voter_ids():
        if server_id == r.id:
            continue
        r.trace("send request %s to server %d for term %d", kind, server_id, term)
        r.send(
            server_id,
            RequestVote(
                term=term,
                candidate_id=r.id,
                last_log_index=last_index,
                last_log_term=last_term,
                disrupt_leader=r.disrupt_leader,
                pre_vote=r.in_pre_vote,
            ),
        )
    _check_votes(r)


def _check_votes(r: Raft) -> None:
    if not quorum.has_majority(r.configuration.voter_ids(), r.votes):
        return
    if r.in_pre_vote:
        r.trace("pre-vote majority -> start real election")
        _start_real_election(r)
    else:
        convert.to_leader(r)


def recv_request_vote(r: Raft, message: Message) -> None:
    args = message.payload
    assert isinstance(args, RequestVote)
    granted = _decide_vote(r, args)
    term = r.current_term
    if args.pre_vote and args.term > r.current_term:
        # We did not adopt the pre-vote's term; answer in it so that the
        # candidate does not drop our answer as stale.
        term = args.term
    r.send(
        message.server_id,
        RequestVoteResult(
            term=term, vote_granted=granted, pre_vote=args.pre_vote, capacity=r.capacity
        ),
        message.server_address,
    )


def _decide_vote(r: Raft, args: RequestVote) -> bool:
    kind = "pre-vote" if args.pre_vote else "vote"
    candidate = args.candidate_id
    has_leader = r.state == State.LEADER or (r.state == State.FOLLOWER and r.leader_id != 0)
    if has_leader and not args.disrupt_leader and args.term >= r.current_term:
        r.trace("recv request %s from %d: local server has a leader -> reject", kind, candidate)
        return False
    if args.term < r.current_term:
        r.trace("recv request %s from %d: remote term is lower -> reject", kind, candidate)
        return False
    if args.term > r.current_term and not args.pre_vote:
        convert.bump_term(r, args.term)
    # Not checked: whether we are a voter ourselves. The candidate counts only
    # the voters of its configuration, and a stand-by promoted by an entry it
    # has not received yet must still be able to vote (as etcd's learners):
    # the simulator found the cluster stuck otherwise.
    if not args.pre_vote and r.voted_for not in (0, candidate):
        r.trace("recv request vote from %d: already voted for %d -> reject", candidate, r.voted_for)
        return False
    last_term = r.log.last_term
    up_to_date = args.last_log_term > last_term or (
        args.last_log_term == last_term and args.last_log_index >= r.log.last_index
    )
    if not up_to_date:
        r.trace("recv request %s from %d: remote log is behind -> reject", kind, candidate)
        return False
    if args.pre_vote:
        r.trace("recv request pre-vote from %d: grant", candidate)
        return True
    r.trace("recv request vote from %d: grant vote in term %d", candidate, r.current_term)
    r.voted_for = candidate
    r.reset_election_timer()
    return True


def recv_request_vote_result(r: Raft, message: Message) -> None:
    result = message.payload
    assert isinstance(result, RequestVoteResult)
    voter = message.server_id
    if r.state == State.CANDIDATE and r.in_pre_vote and result.pre_vote:
        expected = r.current_term + 1
        if result.term > expected:
            convert.bump_term(r, result.term)
            return
        if result.term < expected:
            r.trace("recv pre-vote result from %d: stale -> ignore", voter)
            return
    else:
        if result.term > r.current_term:
            if result.pre_vote:
                r.trace("recv pre-vote result from %d for a later term -> ignore", voter)
                return
            convert.bump_term(r, result.term)
            return
        if r.state != State.CANDIDATE or result.pre_vote or result.term < r.current_term:
            r.trace("recv vote result from %d: not waiting for it -> ignore", voter)
            return
    if not result.vote_granted:
        r.trace("recv vote result from %d: not granted", voter)
        return
    if not r.configuration.is_voter(voter):
        r.trace("recv vote result from %d: not a voter -> ignore", voter)
        return
    r.trace("recv vote result from %d: granted", voter)
    r.votes.add(voter)
    _check_votes(r)


def recv_timeout_now(r: Raft, message: Message) -> None:
    """The leader hands over: start an election at once that may disrupt it."""
    args = message.payload
    assert isinstance(args, TimeoutNow)
    if args.term < r.current_term:
        r.trace("recv timeout now from %d: stale term -> ignore", message.server_id)
        return
    if args.term > r.current_term:
        convert.bump_term(r, args.term)
    if message.server_id != r.leader_id:
        r.trace("recv timeout now from %d: not the leader -> ignore", message.server_id)
        return
    if r.state != State.FOLLOWER or not r.configuration.is_voter(r.id):
        r.trace("recv timeout now from %d: not a voting follower -> ignore", message.server_id)
        return
    caught_up = (
        args.last_log_index == r.log.last_index == r.log.persisted
        and args.last_log_term == r.log.last_term
    )
    if not caught_up:
        r.trace("recv timeout now from %d: log not caught up -> ignore", message.server_id)
        return
    r.trace("recv timeout now from %d -> start election now", message.server_id)
    start_election(r, disrupt_leader=True)
