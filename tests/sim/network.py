"""A simulated network between servers.

Each message copy gets its own random delay, so reordering comes for free; a
few may be held back for seconds (stale messages from old terms are where
term checks go wrong); messages may be dropped or duplicated. Partitions split
the servers into groups, and one-way cuts block single directions; both drop
what they block when a message is sent and again when it would arrive, so a
partition also cuts messages in flight.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LinkFaults:
    """How badly every link behaves; ``CALM`` is the healed network."""

    min_delay: int = 1
    max_delay: int = 10
    drop: float = 0.0
    duplicate: float = 0.0
    late: float = 0.0  # probability that a copy is held back up to ``LATE_MAX`` ms

    def __str__(self) -> str:
        return (
            f"delay {self.min_delay}..{self.max_delay}ms drop {self.drop:.0%} "
            f"dup {self.duplicate:.0%} late {self.late:.0%}"
        )


CALM = LinkFaults()
LATE_MAX = 5000


class Network:
    """Decides the fate of each message: the delays of the copies that will arrive."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.faults = CALM
        self._group_of: dict[int, int] = {}
        self._cut: set[tuple[int, int]] = set()
        self.sent = 0
        self.dropped = 0
        self.duplicated = 0

    def partition(self, groups: Iterable[Collection[int]]) -> None:
        """Split the servers; a server in no group is isolated from everybody."""
        self._group_of = {}
        for number, group in enumerate(groups):
            for server_id in group:
                self._group_of[server_id] = number

    def cut(self, links: Iterable[tuple[int, int]]) -> None:
        """Block messages from ``src`` to ``dst`` for each (src, dst), not the way back."""
        self._cut.update(links)

    def reconnect(self) -> None:
        """Remove partitions and cuts (link faults stay)."""
        self._group_of = {}
        self._cut = set()

    @property
    def partitioned(self) -> bool:
        return bool(self._group_of or self._cut)

    def heal(self) -> None:
        """Remove partitions, cuts and link faults."""
        self.reconnect()
        self.faults = CALM

    def connected(self, src: int, dst: int) -> bool:
        if self._cut and (src, dst) in self._cut:
            return False
        if not self._group_of:
            return True
        group = self._group_of.get(src, -src)
        return group >= 0 and group == self._group_of.get(dst, -dst)

    def delays(self, src: int, dst: int) -> list[int]:
        """Delays of the copies of one message from ``src`` to ``dst`` (none if dropped)."""
        self.sent += 1
        faults = self.faults
        rng = self._rng
        if not self.connected(src, dst) or (faults.drop and rng.random() < faults.drop):
            self.dropped += 1
            return []
        copies = 1
        if faults.duplicate and rng.random() < faults.duplicate:
            copies = 2
            self.duplicated += 1
        delays = [rng.randint(faults.min_delay, faults.max_delay) for _ in range(copies)]
        if faults.late and rng.random() < faults.late:
            delays[-1] += rng.randint(faults.max_delay, LATE_MAX)
        return delays
