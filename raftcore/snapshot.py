"""Snapshots: compaction after the application took one, sending it to a
follower that needs entries no longer kept, and installing a received one.

raftcore deals in snapshot metadata only; the I/O layer moves the data (it
fills InstallSnapshot.data and stores the chunk of a SNAPSHOT update).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore import convert, membership, replication
from raftcore.errors import Invalid
from raftcore.events import Event
from raftcore.messages import InstallSnapshot, Message
from raftcore.progress import Progress
from raftcore.types import SnapshotMetadata, State
from raftcore.update import SnapshotUpdate

if TYPE_CHECKING:
    from raftcore.raft import Raft


def on_snapshot(r: Raft, event: Event) -> None:
    """The application took a snapshot: forget entries before it but ``trailing``."""
    metadata = event.metadata
    if metadata is None:
        raise Invalid("SNAPSHOT needs metadata")
    if event.trailing < 0:
        raise Invalid(f"trailing must not be negative, got {event.trailing}")
    if metadata.index > r.commit_index:
        raise Invalid(f"snapshot index {metadata.index} is past commit index {r.commit_index}")
    if metadata.index < r.log.snapshot_index:
        raise Invalid(
            f"snapshot index {metadata.index} is before the last one {r.log.snapshot_index}"
        )
    term = r.log.term_of(metadata.index)
    if term is not None and term != metadata.term:
        raise Invalid(f"snapshot term {metadata.term} but entry {metadata.index} has {term}")
    r.trace("snapshot at %d, keep %d trailing entries", metadata.index, event.trailing)
    r.snapshot_metadata = metadata
    r.log.compact(metadata.index, metadata.term, event.trailing)


def send_snapshot(r: Raft, server_id: int, progress: Progress) -> None:
    metadata = r.snapshot_metadata
    if metadata is None:
        r.trace("server %d needs entries that are gone and there is no snapshot", server_id)
        return
    r.trace(
        "server %d needs entries before %d -> send snapshot at %d",
        server_id,
        r.log.start,
        metadata.index,
    )
    progress.to_snapshot(metadata.index, r.now)
    progress.last_send = r.now
    r.send(
        server_id,
        InstallSnapshot(
            term=r.current_term,
            last_index=metadata.index,
            last_term=metadata.term,
            conf=metadata.configuration,
            conf_index=metadata.configuration_index,
        ),
    )


def retry_if_timed_out(r: Raft, server_id: int, progress: Progress) -> None:
    """Leader tick for a follower in SNAPSHOT mode: retry a lost snapshot, keep it quiet."""
    if r.now >= progress.snapshot_sent_at + r.install_snapshot_timeout:
        r.trace("snapshot to server %d timed out -> probe again", server_id)
        progress.to_probe()
        replication.replicate(r, server_id, progress)


def recv_install_snapshot(r: Raft, message: Message) -> None:
    args = message.payload
    assert isinstance(args, InstallSnapshot)
    sender = message.server_id
    if args.term < r.current_term:
        r.trace("recv install snapshot from %d: stale term -> reject", sender)
        replication.reply(r, message, rejected=args.last_index or 1, last_index=r.log.last_index)
        return
    if args.term > r.current_term:
        convert.bump_term(r, args.term)
    if r.state == State.LEADER:
        r.trace("recv install snapshot from %d in my own term -> ignore", sender)
        return
    if r.state == State.CANDIDATE:
        convert.to_follower(r)
    replication.follow(r, message)
    if r.installing is not None:
        r.trace("recv install snapshot from %d: already installing one -> ignore", sender)
        return
    if args.last_index <= r.commit_index:
        # Everything up to there is committed here, so it is the leader's too;
        # installing it would take the state machine back (the simulator found
        # a follower that had compacted past an older leader snapshot).
        known = min(r.commit_index, r.log.persisted)
        r.trace(
            "recv install snapshot from %d at %d: committed here already -> ack %d",
            sender,
            args.last_index,
            known,
        )
        r.match_bound = max(r.match_bound, known)
        replication.reply(r, message, rejected=0, last_index=known)
        return
    if r.log.term_of(args.last_index) == args.last_term:
        r.trace("recv install snapshot from %d: log already has index %d", sender, args.last_index)
        r.match_bound = max(r.match_bound, args.last_index)
        if args.last_index <= r.log.persisted:
            replication.reply(r, message, rejected=0, last_index=args.last_index)
        else:
            r.ack_pending = True
        return
    metadata = SnapshotMetadata(args.last_index, args.last_term, args.conf, args.conf_index)
    r.trace("recv install snapshot from %d at index %d -> persist it", sender, args.last_index)
    r.installing = metadata
    r.update.snapshot = SnapshotUpdate(metadata, 0, args.data, True)


def on_persisted_snapshot(r: Raft, event: Event) -> None:
    """The received snapshot is durable: the log now starts after it."""
    metadata = event.metadata
    if r.installing is None or metadata is None or metadata.index != r.installing.index:
        r.trace("persisted snapshot that is not being installed -> ignore")
        return
    if not event.last:
        return
    r.trace("snapshot at %d installed", metadata.index)
    r.installing = None
    r.snapshot_metadata = metadata
    r.log.install(metadata.index, metadata.term)
    r.configuration_committed_index = metadata.configuration_index
    membership.adopt(r, metadata.configuration, metadata.configuration_index)
    if metadata.index > r.commit_index:
        r.commit_index = metadata.index
    r.match_bound = metadata.index
    r.ack_pending = False
    if r.state == State.FOLLOWER and r.leader_id:
        replication.reply_to_leader(r, metadata.index)
