"""State transitions between follower, candidate and leader (C-Raft's convert.c)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore import membership, read, replication
from raftcore.progress import Progress
from raftcore.types import Entry, EntryType, Role, State

if TYPE_CHECKING:
    from raftcore.raft import Raft


def bump_term(r: Raft, term: int) -> None:
    """Adopt a higher term: forget the vote and follow (leader still unknown)."""
    r.trace("remote term %d is higher than %d -> bump term, step down", term, r.current_term)
    r.current_term = term
    r.voted_for = 0
    to_follower(r)


def to_follower(r: Raft) -> None:
    if r.state == State.LEADER:
        r.trace("step down from leader in term %d", r.current_term)
    _clear_leader_state(r)
    r.state = State.FOLLOWER
    r.leader_id = 0
    r.leader_address = None
    r.votes.clear()
    r.in_pre_vote = False
    r.disrupt_leader = False
    r.match_bound = 0
    r.ack_pending = False
    r.reset_election_timer()


def to_candidate(r: Raft, disrupt_leader: bool) -> None:
    """Start an election; with pre-vote, first a round that changes no term or vote."""
    _clear_leader_state(r)
    r.state = State.CANDIDATE
    r.leader_id = 0
    r.leader_address = None
    r.disrupt_leader = disrupt_leader
    r.match_bound = 0
    r.ack_pending = False
    r.in_pre_vote = r.pre_vote and not disrupt_leader


def to_leader(r: Raft) -> None:
    """Won the election: track every follower, assert leadership, commit old terms."""
    r.trace("won election in term %d -> become leader", r.current_term)
    r.state = State.LEADER
    r.leader_id = r.id
    r.leader_address = r.address
    r.votes.clear()
    r.in_pre_vote = False
    r.disrupt_leader = False
    r.quorum_check_start = r.now
    next_index = r.log.last_index + 1
    r.progress = {
        server.id: Progress(next_index=next_index, address=server.address)
        for server in r.configuration
        if server.id != r.id and server.role != Role.SPARE
    }
    if r.log.last_index > r.commit_index:
        # Entries of earlier terms commit only under one of the current term
        # (Raft paper 5.4.2), so append one at once rather than wait for a client.
        r.trace("log has uncommitted entries -> append barrier")
        replication.append_as_leader(r, [Entry(r.current_term, EntryType.BARRIER, b"")])
    replication.broadcast(r, heartbeat=True)


def _clear_leader_state(r: Raft) -> None:
    membership.abort_all_catch_ups(r)
    read.drop_all(r)
    r.progress = {}
    r.transferee = 0
    r.transfer_start = 0
    r.transfer_sent = False
