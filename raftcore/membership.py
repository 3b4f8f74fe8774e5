"""Configuration changes and catch-up rounds.

A configuration takes effect as soon as its CHANGE entry is appended
(dissertation 4.1), and is rolled back if that entry is truncated. It counts
as committed when the application reports it with a CONFIGURATION event;
until then no other change is accepted. Changes are single-server: each
adds, removes or re-roles one server, so old and new majorities overlap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from raftcore import convert, replication
from raftcore.configuration import Configuration
from raftcore.errors import BadId, CantChange, Invalid, Malformed, NotFound, NotLeader
from raftcore.events import Event
from raftcore.progress import Progress
from raftcore.types import CatchUpStatus, Entry, EntryType, Role, State

if TYPE_CHECKING:
    from raftcore.raft import Raft


def decode_or_malformed(data: bytes) -> Configuration:
    configuration = Configuration.decode(data)
    if not configuration.voters:
        raise Malformed("a configuration needs at least one voter")
    return configuration


def check_change(r: Raft, data: bytes) -> None:
    """Refuse a CHANGE submission that cannot be applied safely now."""
    if r.configuration_pending_index:
        raise CantChange(
            f"configuration change at index {r.configuration_pending_index} not yet committed"
        )
    new = decode_or_malformed(data)
    changed = {s.id for s in new if r.configuration.get(s.id) != s}
    changed |= {s.id for s in r.configuration if s.id not in new}
    if len(changed) > 1:
        raise Invalid(f"a change may touch one server, this one touches {sorted(changed)}")


def on_appended(r: Raft, first: int, entries: list[Entry]) -> None:
    """Adopt the configurations of CHANGE entries just appended to the log."""
    for offset, entry in enumerate(entries):
        if entry.type == EntryType.CHANGE:
            adopt(r, Configuration.decode(entry.data), first + offset)


def on_truncated(r: Raft, index: int) -> None:
    """Roll back to the last configuration still in the log when its entry was cut."""
    if r.configuration_index < index:
        return
    found = r.log.last_change_before(index)
    if found is not None:
        change_index, entry = found
        configuration, conf_index = Configuration.decode(entry.data), change_index
    elif r.snapshot_metadata is not None:
        configuration = r.snapshot_metadata.configuration
        conf_index = r.snapshot_metadata.configuration_index
    else:
        configuration, conf_index = Configuration(), 0
    r.trace("configuration at %d truncated -> roll back to the one at %d", index, conf_index)
    adopt(r, configuration, conf_index)


def adopt(r: Raft, configuration: Configuration, index: int) -> None:
    """Put ``configuration`` (from the log entry at ``index``) in force."""
    r.configuration = configuration
    r.configuration_index = index
    pending = index > r.configuration_committed_index
    r.configuration_pending_index = index if pending else 0
    if r.state == State.LEADER:
        sync_progress(r)
        replication.maybe_commit(r)


def sync_progress(r: Raft) -> None:
    """Track every member that receives the log (all but self and spares).

    A server that an uncommitted change removes still gets the log until the
    change commits, so that it learns of its removal and stops campaigning.
    """
    wanted = {s.id for s in r.configuration if s.id != r.id and s.role != Role.SPARE}
    for server_id in list(r.progress):
        if server_id not in wanted and not r.configuration_pending_index:
            # A last AppendEntries tells it the removal committed, so that it
            # stops campaigning (see election._voter_before_pending_change).
            replication.replicate(r, server_id, r.progress[server_id])
            del r.progress[server_id]
            r.catch_up_states.pop(server_id, None)
    for server in r.configuration:
        if server.id not in wanted:
            continue
        if server.id in r.progress:
            r.progress[server.id].address = server.address
            continue
        progress = Progress(next_index=r.log.last_index + 1, address=server.address)
        r.progress[server.id] = progress
        replication.replicate(r, server.id, progress)


def on_configuration(r: Raft, event: Event) -> None:
    """The application applied the committed CHANGE entry at ``event.index``."""
    if not _is_committed_change(r, event.index):
        r.trace("configuration event at %d is not a committed change -> ignore", event.index)
        return
    # Record it even when a later change is pending (C-Raft's applyChange):
    # if that later one is rolled back, this one must not count as pending.
    r.configuration_committed_index = event.index
    if event.index != r.configuration_pending_index:
        r.trace("configuration at %d committed, the pending one is later", event.index)
        return
    r.trace("configuration at %d committed", event.index)
    r.configuration_pending_index = 0
    if r.state != State.LEADER:
        return
    if not r.configuration.is_voter(r.id):
        r.trace("leader is no longer a voter -> step down")
        convert.to_follower(r)
        return
    sync_progress(r)


def _is_committed_change(r: Raft, index: int) -> bool:
    if index <= r.configuration_committed_index or index > r.commit_index:
        return False
    entry = r.log.get(index)
    return entry is None or entry.type == EntryType.CHANGE


# -- catch-up --------------------------------------------------------------------


@dataclass(slots=True)
class CatchUp:
    """A round ends when the server holds what the leader held at the round's start."""

    round: int
    round_start: int
    round_target: int


def on_catch_up(r: Raft, event: Event) -> None:
    server_id = event.server_id
    if r.state != State.LEADER:
        raise NotLeader("only the leader catches servers up")
    if server_id == r.id:
        raise BadId("a leader cannot catch itself up")
    server = r.configuration.get(server_id)
    if server is None:
        raise NotFound(f"server {server_id} is not in the configuration")
    if server.role == Role.SPARE:
        raise BadId(f"server {server_id} is a spare and receives no entries")
    r.trace("start catching up server %d to index %d", server_id, r.log.last_index)
    r.catch_up_results.pop(server_id, None)
    r.catch_up_states[server_id] = CatchUp(1, r.now, r.log.last_index)
    catch_up_progress(r, server_id, r.progress[server_id])


def catch_up_progress(r: Raft, server_id: int, progress: Progress) -> None:
    state = r.catch_up_states.get(server_id)
    if state is None or progress.match_index < state.round_target:
        return
    if r.now - state.round_start <= r.max_catch_up_round_duration:
        r.trace("server %d caught up in round %d -> finished", server_id, state.round)
        _finish(r, server_id, CatchUpStatus.FINISHED)
        return
    _next_round(r, server_id, state)


def catch_up_tick(r: Raft) -> None:
    """A round that outlasts its duration counts as a slow round."""
    for server_id, state in list(r.catch_up_states.items()):
        if r.now - state.round_start > r.max_catch_up_round_duration:
            _next_round(r, server_id, state)


def _next_round(r: Raft, server_id: int, state: CatchUp) -> None:
    if state.round >= r.max_catch_up_rounds:
        r.trace("server %d not caught up after %d rounds -> abort", server_id, state.round)
        _finish(r, server_id, CatchUpStatus.ABORTED)
        return
    state.round += 1
    state.round_start = r.now
    state.round_target = r.log.last_index
    r.trace(
        "catch-up of server %d: round %d to index %d", server_id, state.round, state.round_target
    )


def _finish(r: Raft, server_id: int, status: CatchUpStatus) -> None:
    del r.catch_up_states[server_id]
    r.catch_up_results[server_id] = status


def abort_all_catch_ups(r: Raft) -> None:
    for server_id in list(r.catch_up_states):
        _finish(r, server_id, CatchUpStatus.ABORTED)
