"""Linearizable reads without log entries: the ReadIndex protocol (dissertation 6.4).

A read asked of the leader gets the commit index as its read index once
(1) the leader has committed an entry of its own term, so that the commit
index is at least that of any earlier leader, and (2) a majority of voters
has answered an AppendEntries sent after the read arrived, proving that no
newer leader existed then. Each batch of reads starts a round; heartbeats
carry the round number as ``context`` and followers echo it. The caller
serves the read once its applied index reaches the read index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from raftcore import quorum, replication
from raftcore.errors import NotLeader
from raftcore.events import Event
from raftcore.types import Entry, EntryType, State

if TYPE_CHECKING:
    from raftcore.raft import Raft


@dataclass(slots=True)
class PendingRead:
    read_id: int
    index: int = 0
    round: int = 0
    acks: set[int] = field(default_factory=set)


def on_read_index(r: Raft, event: Event) -> None:
    if r.state != State.LEADER:
        raise NotLeader("only the leader serves read indexes")
    if r.transferee:
        raise NotLeader(f"leadership is being transferred to server {r.transferee}")
    read = PendingRead(event.index)
    if r.log.term_of(r.commit_index) != r.current_term:
        r.trace("read %d waits until an entry of term %d commits", read.read_id, r.current_term)
        r.reads_waiting_commit.append(read)
        if r.log.last_term != r.current_term:
            r.trace("no entry of term %d in the log -> append barrier", r.current_term)
            replication.append_as_leader(r, [Entry(r.current_term, EntryType.BARRIER, b"")])
            replication.broadcast(r, heartbeat=False)
        return
    _start_round(r, [read])


def on_commit(r: Raft) -> None:
    """The leader committed: reads that waited for its first commit can start."""
    if r.reads_waiting_commit and r.log.term_of(r.commit_index) == r.current_term:
        waiting, r.reads_waiting_commit = r.reads_waiting_commit, []
        _start_round(r, waiting)


def _start_round(r: Raft, reads: list[PendingRead]) -> None:
    r.read_round += 1
    for read in reads:
        read.index = r.commit_index
        read.round = r.read_round
        read.acks = {r.id}
        r.trace(
            "read %d at index %d: confirm leadership in round %d",
            read.read_id,
            read.index,
            read.round,
        )
    r.reads_in_round.extend(reads)
    _release_confirmed(r)
    if r.reads_in_round:
        for server_id, progress in r.progress.items():
            if r.configuration.is_voter(server_id):
                replication.replicate(r, server_id, progress)


def on_result_context(r: Raft, server_id: int, context: int) -> None:
    """A voter answered an AppendEntries of read round ``context``."""
    if not context or not r.reads_in_round or not r.configuration.is_voter(server_id):
        return
    for read in r.reads_in_round:
        if read.round <= context:
            read.acks.add(server_id)
    _release_confirmed(r)


def _release_confirmed(r: Raft) -> None:
    voters = r.configuration.voter_ids()
    still: list[PendingRead] = []
    for read in r.reads_in_round:
        if quorum.has_majority(voters, read.acks):
            r.trace("read %d confirmed -> read index %d", read.read_id, read.index)
            r.update.reads.append((read.read_id, read.index))
        else:
            still.append(read)
    r.reads_in_round = still


def current_context(r: Raft) -> int:
    """The round to put on outgoing AppendEntries (0 when no read waits)."""
    return r.read_round if r.reads_in_round else 0


def drop_all(r: Raft) -> None:
    """Leadership is lost: the caller fails its reads (it sees the STATE flag)."""
    if r.reads_in_round or r.reads_waiting_commit:
        r.trace("drop %d pending reads", len(r.reads_in_round) + len(r.reads_waiting_commit))
    r.reads_in_round = []
    r.reads_waiting_commit = []
