"""Log replication: SUBMIT, AppendEntries and its result, durability and commit.

Leader side: entries go to each follower according to its ``Progress`` mode;
the commit index moves when a majority of voters hold an entry of the current
term (the leader counts its own entries once durable). Follower side: append,
truncate a conflicting suffix, and acknowledge only what is durable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore import convert, membership, quorum, read, snapshot, transfer
from raftcore.errors import CantChange, Invalid, Malformed, NoSpace, NotLeader
from raftcore.events import Event
from raftcore.messages import AppendEntries, AppendEntriesResult, Message
from raftcore.progress import Mode, Progress
from raftcore.types import Entry, EntryType, State

if TYPE_CHECKING:
    from raftcore.raft import Raft


# -- leader: new entries -------------------------------------------------------


def on_submit(r: Raft, event: Event) -> None:
    entries = list(event.entries)
    _check_submit(r, entries)
    append_as_leader(r, entries)
    broadcast(r, heartbeat=False)


def _check_submit(r: Raft, entries: list[Entry]) -> None:
    if r.state != State.LEADER:
        raise NotLeader("not the leader")
    if r.transferee:
        raise NotLeader(f"leadership is being transferred to server {r.transferee}")
    if not entries:
        raise Invalid("SUBMIT needs at least one entry")
    changes = 0
    for entry in entries:
        if not isinstance(entry, Entry) or not isinstance(entry.data, bytes | bytearray):
            raise Malformed(f"not an entry with bytes data: {entry!r}")
        if entry.type not in (EntryType.COMMAND, EntryType.BARRIER, EntryType.CHANGE):
            raise Malformed(f"unknown entry type {entry.type!r}")
        if entry.term != r.current_term:
            raise Invalid(f"entry term {entry.term} is not the current term {r.current_term}")
        if entry.type == EntryType.CHANGE:
            changes += 1
            membership.check_change(r, entry.data)
    if changes > 1:
        raise CantChange("only one configuration change at a time")
    if _out_of_space(r):
        raise NoSpace(f"a majority of voters has less than {r.capacity_threshold} of disk capacity")


def _out_of_space(r: Raft) -> bool:
    if r.capacity_threshold <= 0:
        return False
    low = []
    for server_id in r.configuration.voter_ids():
        if server_id == r.id:
            capacity: int | None = r.capacity
        else:
            progress = r.progress.get(server_id)
            capacity = progress.capacity if progress is not None else None
        if capacity is not None and capacity < r.capacity_threshold:
            low.append(server_id)
    return bool(low) and quorum.has_majority(r.configuration.voter_ids(), low)


def append_as_leader(r: Raft, entries: list[Entry]) -> None:
    """Append to the leader's own log and ask the caller to persist it."""
    first = r.log.append(entries)
    r.update.add_entries(first, entries)
    membership.on_appended(r, first, entries)
    r.trace("append %d entries from index %d in term %d", len(entries), first, r.current_term)


# -- leader: sending -----------------------------------------------------------


def broadcast(r: Raft, heartbeat: bool) -> None:
    """An AppendEntries to every follower, or (not ``heartbeat``) new entries
    to the followers whose window has room, as etcd's bcastAppend."""
    for server_id, progress in r.progress.items():
        if heartbeat:
            replicate(r, server_id, progress)
        else:
            send_more(r, server_id, progress)


def send_more(r: Raft, server_id: int, progress: Progress) -> None:
    """Send a PIPELINE follower the entries it lacks if its window has room.

    Never an empty AppendEntries (etcd's maybeSendAppend without sendIfEmpty):
    a follower whose window is full waits for an answer that moves its match
    index, and meanwhile hears from the leader at heartbeat pace and once per
    read round. Answering every result instead made a ping-pong with a
    follower that answers a read round's AppendEntries at once.
    """
    if progress.next_index > r.log.last_index or progress.mode != Mode.PIPELINE:
        return
    if progress.in_flight() >= r.max_inflight_entries:
        r.trace("server %d has %d entries in flight -> wait", server_id, progress.in_flight())
        return
    replicate(r, server_id, progress)


def replicate(r: Raft, server_id: int, progress: Progress) -> None:
    """Send the follower what it needs next: entries, a heartbeat, or the snapshot."""
    if progress.mode == Mode.SNAPSHOT:
        _heartbeat_during_snapshot(r, server_id, progress)
        return
    next_index = progress.next_index
    prev_index = next_index - 1
    prev_term = r.log.term_of(prev_index)
    if prev_term is None or not r.log.has_entries_from(next_index):
        snapshot.send_snapshot(r, server_id, progress)
        return
    room = r.max_inflight_entries - progress.in_flight()
    if progress.mode == Mode.PROBE:
        room = r.max_inflight_entries
    entries = r.log.slice(next_index, max(room, 0)) if next_index <= r.log.last_index else []
    if progress.mode == Mode.PIPELINE:
        progress.next_index += len(entries)
    progress.last_send = r.now
    r.send(
        server_id,
        AppendEntries(
            term=r.current_term,
            prev_log_index=prev_index,
            prev_log_term=prev_term,
            leader_commit=r.commit_index,
            entries=entries,
            context=read.current_context(r),
        ),
    )


def _heartbeat_during_snapshot(r: Raft, server_id: int, progress: Progress) -> None:
    """Keep a follower that installs the snapshot from starting an election; its
    success answer (it has the snapshot) also ends SNAPSHOT mode if the
    snapshot's own answer was lost."""
    progress.last_send = r.now
    r.send(
        server_id,
        AppendEntries(
            term=r.current_term,
            prev_log_index=r.log.snapshot_index,
            prev_log_term=r.log.snapshot_term,
            leader_commit=r.commit_index,
            context=read.current_context(r),
        ),
    )


def leader_tick(r: Raft) -> None:
    """TIMEOUT on the leader: check quorum, expire transfers, send heartbeats."""
    if r.now >= r.quorum_check_start + r.election_timeout:
        if not _contact_quorum(r):
            r.trace("heard from no majority within an election timeout -> step down")
            convert.to_follower(r)
            return
        r.quorum_check_start = r.now
    transfer.tick(r)
    membership.catch_up_tick(r)
    for server_id, progress in r.progress.items():
        if progress.mode == Mode.SNAPSHOT:
            snapshot.retry_if_timed_out(r, server_id, progress)
        if r.now >= progress.last_send + r.heartbeat_timeout:
            replicate(r, server_id, progress)


def _contact_quorum(r: Raft) -> bool:
    heard = [server_id for server_id, p in r.progress.items() if p.recent_recv]
    for progress in r.progress.values():
        progress.recent_recv = False
    heard.append(r.id)
    return quorum.has_majority(r.configuration.voter_ids(), heard)


# -- leader: results -----------------------------------------------------------


def recv_append_entries_result(r: Raft, message: Message) -> None:
    result = message.payload
    assert isinstance(result, AppendEntriesResult)
    sender = message.server_id
    if result.term > r.current_term:
        convert.bump_term(r, result.term)
        return
    if result.term < r.current_term or r.state != State.LEADER:
        r.trace("recv append entries result from %d: stale -> ignore", sender)
        return
    progress = r.progress.get(sender)
    if progress is None:
        r.trace("recv append entries result from %d: not a member -> ignore", sender)
        return
    progress.recent_recv = True
    progress.capacity = result.capacity
    progress.features = result.features
    read.on_result_context(r, sender, result.context)
    if result.rejected:
        if progress.reject(result.rejected, result.last_log_index):
            r.trace(
                "recv append entries result from %d: rejected %d -> retry from %d",
                sender,
                result.rejected,
                progress.next_index,
            )
            replicate(r, sender, progress)
        return
    if progress.acknowledge(min(result.last_log_index, r.log.last_index)):
        maybe_commit(r)
    if progress.mode == Mode.PROBE or (
        progress.mode == Mode.SNAPSHOT and progress.match_index >= progress.snapshot_index
    ):
        r.trace(
            "recv append entries result from %d: match %d -> pipeline", sender, progress.match_index
        )
        progress.to_pipeline()
    if r.state != State.LEADER:
        return
    transfer.on_progress(r, sender, progress)
    membership.catch_up_progress(r, sender, progress)
    send_more(r, sender, progress)


def maybe_commit(r: Raft) -> None:
    """Advance the commit index to what a majority of voters holds (Raft paper 5.4.2)."""
    matches = []
    for server_id in r.configuration.voter_ids():
        if server_id == r.id:
            matches.append(r.log.persisted)
        else:
            progress = r.progress.get(server_id)
            matches.append(progress.match_index if progress else 0)
    index = quorum.committed_index(matches)
    if index <= r.commit_index:
        return
    if r.log.term_of(index) != r.current_term:
        return
    r.trace("majority holds index %d -> commit", index)
    r.commit_index = index
    read.on_commit(r)


# -- follower ------------------------------------------------------------------


def recv_append_entries(r: Raft, message: Message) -> None:
    args = message.payload
    assert isinstance(args, AppendEntries)
    sender = message.server_id
    for entry in args.entries:
        if entry.type == EntryType.CHANGE:
            membership.decode_or_malformed(entry.data)
    if args.term < r.current_term:
        r.trace("recv append entries from %d: stale term %d -> reject", sender, args.term)
        reply(r, message, rejected=args.prev_log_index or 1, last_index=r.log.last_index)
        return
    if args.term > r.current_term:
        convert.bump_term(r, args.term)
    if r.state == State.LEADER:
        r.trace("recv append entries from %d in my own term -> ignore", sender)
        return
    if r.state == State.CANDIDATE:
        r.trace("recv append entries from %d: a leader exists -> become follower", sender)
        convert.to_follower(r)
    follow(r, message)
    if r.installing is not None:
        r.trace("recv append entries from %d while installing a snapshot -> ignore", sender)
        return
    if not _append(r, args):
        # As C-Raft: the hint is our last index when the previous entry is
        # missing, and the index before it when its term differs.
        hint = min(r.log.last_index, args.prev_log_index - 1)
        reply(r, message, rejected=args.prev_log_index, last_index=hint)
        return
    matched = args.prev_log_index + len(args.entries)
    r.match_bound = max(r.match_bound, matched)
    commit = min(args.leader_commit, matched)
    if commit > r.commit_index:
        r.trace("leader commit %d -> commit index %d", args.leader_commit, commit)
        r.commit_index = commit
    if matched <= r.log.persisted:
        reply(r, message, rejected=0, last_index=matched)
        return
    r.ack_pending = True
    if args.context:
        # A read round waits on us: confirm the leader now, acknowledging
        # only what is durable; the rest is acknowledged once persisted.
        reply(r, message, rejected=0, last_index=min(matched, r.log.persisted))


def follow(r: Raft, message: Message) -> None:
    """A message from the leader of the current term: remember it, reset the timer."""
    if r.leader_id != message.server_id:
        r.trace("server %d is the leader of term %d", message.server_id, r.current_term)
        r.leader_id = message.server_id
        r.leader_address = message.server_address
        r.match_bound = 0
        r.ack_pending = False
    r.reset_election_timer()


def _append(r: Raft, args: AppendEntries) -> bool:
    """Check the previous entry and merge the new ones in; False to reject."""
    prev = args.prev_log_index
    if prev > r.log.last_index:
        r.trace("missing previous entry %d (last is %d) -> reject", prev, r.log.last_index)
        return False
    local_term = r.log.term_of(prev)
    if local_term is not None and local_term != args.prev_log_term:
        if prev <= r.commit_index:
            r.trace("previous entry %d conflicts with a committed one -> reject", prev)
        else:
            r.trace(
                "previous entry %d has term %d, not %d -> reject",
                prev,
                local_term,
                args.prev_log_term,
            )
        return False
    # local_term None: the entry is inside the snapshot, so committed and matching.
    index = prev + 1
    new: list[Entry] = []
    for position, entry in enumerate(args.entries):
        index = prev + 1 + position
        if index <= r.log.snapshot_index and r.log.get(index) is None:
            continue
        if index > r.log.last_index:
            new = list(args.entries[position:])
            break
        if r.log.term_of(index) == entry.term:
            continue
        if index <= r.commit_index:
            r.trace("entry %d conflicts with a committed one -> reject", index)
            return False
        r.trace(
            "entry %d conflicts (term %s vs %d) -> truncate",
            index,
            r.log.term_of(index),
            entry.term,
        )
        r.log.truncate(index)
        membership.on_truncated(r, index)
        new = list(args.entries[position:])
        break
    if new:
        first = r.log.append(new)
        r.update.add_entries(first, new)
        membership.on_appended(r, first, new)
        r.trace("append %d entries from index %d", len(new), first)
    return True


def on_persisted_entries(r: Raft, event: Event) -> None:
    if not r.log.mark_persisted(event.index, event.term):
        return
    r.trace("entries up to %d are durable", r.log.persisted)
    if r.state == State.LEADER:
        maybe_commit(r)
    elif r.state == State.FOLLOWER and r.ack_pending and r.leader_id:
        acked = min(r.log.persisted, r.match_bound)
        if acked >= r.match_bound:
            r.ack_pending = False
        reply_to_leader(r, acked)


def reply_to_leader(r: Raft, last_index: int) -> None:
    """Acknowledge to the current leader that entries up to ``last_index`` are durable."""
    r.send(
        r.leader_id,
        AppendEntriesResult(
            term=r.current_term, rejected=0, last_log_index=last_index, capacity=r.capacity
        ),
        r.leader_address,
    )


def reply(r: Raft, message: Message, rejected: int, last_index: int) -> None:
    """Answer an AppendEntries (or InstallSnapshot), echoing its read round."""
    payload = message.payload
    context = payload.context if isinstance(payload, AppendEntries) else 0
    r.send(
        message.server_id,
        AppendEntriesResult(
            term=r.current_term,
            rejected=rejected,
            last_log_index=last_index,
            capacity=r.capacity,
            context=context,
        ),
        message.server_address,
    )
