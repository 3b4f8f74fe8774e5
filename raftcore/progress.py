"""What a leader knows of each follower's log, and how it replicates to it.

As in C-Raft and etcd-raft, a follower is in one of three modes: PROBE (find
where the logs match, one message per heartbeat or response), PIPELINE
(stream entries optimistically, at most ``max_inflight_entries`` unacknowledged;
a full window gets only heartbeats and read rounds until an answer moves the
match index) or SNAPSHOT (an InstallSnapshot is on its way).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Mode(IntEnum):
    PROBE = 0
    PIPELINE = 1
    SNAPSHOT = 2


@dataclass(slots=True)
class Progress:
    next_index: int
    address: str = ""
    match_index: int = 0
    mode: Mode = Mode.PROBE
    last_send: int = -(2**62)
    recent_recv: bool = False
    snapshot_index: int = 0
    snapshot_sent_at: int = 0
    capacity: int | None = None  # None until the follower reports it
    features: int = 0

    def in_flight(self) -> int:
        """Entries sent but not yet acknowledged."""
        return max(self.next_index - 1 - self.match_index, 0)

    def to_probe(self) -> None:
        self.mode = Mode.PROBE
        self.next_index = self.match_index + 1
        self.snapshot_index = 0

    def to_pipeline(self) -> None:
        self.mode = Mode.PIPELINE
        self.next_index = max(self.next_index, self.match_index + 1)
        self.snapshot_index = 0

    def to_snapshot(self, snapshot_index: int, now: int) -> None:
        self.mode = Mode.SNAPSHOT
        self.snapshot_index = snapshot_index
        self.snapshot_sent_at = now

    def acknowledge(self, last_index: int) -> bool:
        """Record a successful append up to ``last_index``; True when the match moved."""
        moved = last_index > self.match_index
        if moved:
            self.match_index = last_index
        self.next_index = max(self.next_index, self.match_index + 1)
        return moved

    def reject(self, rejected: int, hint_last_index: int) -> bool:
        """Step back after a rejection; False when the rejection is stale."""
        if self.mode == Mode.SNAPSHOT:
            return False
        if self.mode == Mode.PIPELINE:
            if rejected <= self.match_index:
                return False
            self.to_probe()
            return True
        if rejected != self.next_index - 1:
            return False
        self.next_index = max(min(rejected, hint_last_index + 1), self.match_index + 1, 1)
        return True
