"""Leadership transfer (dissertation 3.10): bring the target up to date, then
send it TimeoutNow so that it starts an election at once."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftcore.errors import BadId, NotFound, NotLeader
from raftcore.events import Event
from raftcore.messages import TimeoutNow
from raftcore.progress import Progress
from raftcore.types import State

if TYPE_CHECKING:
    from raftcore.raft import Raft


def on_transfer(r: Raft, event: Event) -> None:
    if r.state != State.LEADER:
        raise NotLeader("only the leader can transfer leadership")
    if r.transferee:
        raise NotLeader(f"leadership is already being transferred to {r.transferee}")
    target = event.server_id or _best_voter(r)
    if target == r.id:
        raise BadId("cannot transfer leadership to self")
    server = r.configuration.get(target)
    if server is None:
        raise BadId(f"server {target} is not in the configuration")
    if not r.configuration.is_voter(target):
        raise BadId(f"server {target} is not a voter")
    r.trace("transfer leadership to server %d", target)
    r.transferee = target
    r.transfer_start = r.now
    r.transfer_sent = False
    on_progress(r, target, r.progress[target])


def _best_voter(r: Raft) -> int:
    candidates = [
        (progress.match_index, -server_id)
        for server_id, progress in r.progress.items()
        if r.configuration.is_voter(server_id)
    ]
    if not candidates:
        raise NotFound("no other voter to transfer leadership to")
    return -max(candidates)[1]


def on_progress(r: Raft, server_id: int, progress: Progress) -> None:
    """Once the target holds the whole log, tell it to time out now."""
    if server_id != r.transferee or r.transfer_sent:
        return
    if progress.match_index < r.log.last_index:
        return
    r.trace("server %d has the whole log -> send timeout now", server_id)
    r.transfer_sent = True
    r.send(
        server_id,
        TimeoutNow(
            term=r.current_term,
            last_log_index=r.log.last_index,
            last_log_term=r.log.last_term,
        ),
    )


def tick(r: Raft) -> None:
    if r.transferee and r.now >= r.transfer_start + r.election_timeout:
        r.trace("transfer to server %d did not finish in time -> abandon", r.transferee)
        r.transferee = 0
        r.transfer_sent = False
