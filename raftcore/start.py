"""START: load persisted state, then follow (or lead at once when alone)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore import election, membership
from raftcore.configuration import Configuration
from raftcore.errors import Invalid, Malformed
from raftcore.events import Event
from raftcore.types import Entry, EntryType

if TYPE_CHECKING:
    from raftcore.raft import Raft


def on_start(r: Raft, event: Event) -> None:
    entries = list(event.entries)
    metadata = event.metadata
    _check(event, entries)
    r.current_term = event.term
    r.voted_for = event.voted_for
    r.snapshot_metadata = metadata
    if metadata is not None:
        r.log.restore(event.start_index, entries, metadata.index, metadata.term)
        r.commit_index = metadata.index
        r.configuration_committed_index = metadata.configuration_index
        membership.adopt(r, metadata.configuration, metadata.configuration_index)
    else:
        r.log.restore(event.start_index, entries, 0, 0)
    if event.start_index == 1 and entries and entries[0].type == EntryType.CHANGE:
        # As C-Raft: every server is bootstrapped with the same first entry,
        # so it is committed from the start and no barrier is needed for it.
        r.commit_index = max(r.commit_index, 1)
        r.configuration_committed_index = max(r.configuration_committed_index, 1)
    found = r.log.last_change_before(r.log.last_index + 1)
    if found is not None and found[0] > r.configuration_index:
        index, entry = found
        membership.adopt(r, Configuration.decode(entry.data), index)
    r.started = True
    r.trace("start in term %d with log %d..%d", r.current_term, r.log.start, r.log.last_index)
    r.reset_election_timer()
    if r.configuration.voter_ids() == [r.id]:
        r.trace("self is the only voter -> elect self")
        election.start_election(r, disrupt_leader=False)


def _check(event: Event, entries: list[Entry]) -> None:
    if event.term < 0 or event.voted_for < 0:
        raise Invalid("term and voted_for must not be negative")
    if event.start_index < 1:
        raise Invalid(f"start_index must be at least 1, got {event.start_index}")
    metadata = event.metadata
    snapshot_index = metadata.index if metadata is not None else 0
    if entries and event.start_index > snapshot_index + 1:
        raise Invalid(
            f"entries start at {event.start_index}, leaving a gap after index {snapshot_index}"
        )
    for entry in entries:
        if not isinstance(entry, Entry):
            raise Malformed(f"not an entry: {entry!r}")
        if entry.term > event.term:
            raise Invalid(f"entry term {entry.term} is after the current term {event.term}")
        if entry.type == EntryType.CHANGE:
            membership.decode_or_malformed(entry.data)
