"""Faults as actions on the cluster: scripted schedules and a random nemesis.

An ``Action`` is anything with ``apply(cluster)``; a schedule is a list of
(time, action). Issue 3 adds actions here (take a snapshot, add or promote a
server, transfer leadership) without touching the event loop.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from tests.sim.cluster import Cluster
from tests.sim.network import LinkFaults


class Action(Protocol):
    def apply(self, cluster: Cluster) -> None: ...


@dataclass(frozen=True)
class Crash:
    server_id: int

    def apply(self, cluster: Cluster) -> None:
        cluster.crash(self.server_id)


@dataclass(frozen=True)
class Restart:
    server_id: int

    def apply(self, cluster: Cluster) -> None:
        cluster.restart(self.server_id)


@dataclass(frozen=True)
class Pause:
    """Freeze a server's process for ``duration`` ms; it then handles everything late."""

    server_id: int
    duration: int

    def apply(self, cluster: Cluster) -> None:
        node = cluster.nodes[self.server_id]
        if node.alive:
            node.pause(cluster.now + self.duration)


@dataclass(frozen=True)
class Partition:
    """Split the servers into ``groups``; one left out of every group is isolated."""

    groups: tuple[frozenset[int], ...]

    def apply(self, cluster: Cluster) -> None:
        cluster.network.partition(self.groups)


@dataclass(frozen=True)
class Cut:
    """Block single directions: messages from ``src`` to ``dst`` for each pair."""

    links: tuple[tuple[int, int], ...]

    def apply(self, cluster: Cluster) -> None:
        cluster.network.cut(self.links)


@dataclass(frozen=True)
class Reconnect:
    """Remove partitions and cuts (link faults stay)."""

    def apply(self, cluster: Cluster) -> None:
        cluster.network.reconnect()


@dataclass(frozen=True)
class SetLinks:
    faults: LinkFaults

    def apply(self, cluster: Cluster) -> None:
        cluster.network.faults = self.faults


@dataclass(frozen=True)
class SetDisk:
    """Make writes on one server slow (or fast again)."""

    server_id: int
    min_delay: int
    max_delay: int

    def apply(self, cluster: Cluster) -> None:
        disk = cluster.nodes[self.server_id].disk
        disk.min_delay, disk.max_delay = self.min_delay, self.max_delay


@dataclass(frozen=True)
class Heal:
    """Everything back to normal: servers up, network whole and calm, disks fast."""

    def apply(self, cluster: Cluster) -> None:
        cluster.network.heal()
        options = cluster.options
        for node in cluster.nodes.values():
            node.disk.min_delay = options.disk_min_delay
            node.disk.max_delay = options.disk_max_delay
            cluster.restart(node.id)


def perform(cluster: Cluster, action: Action) -> None:
    cluster.trace.add(cluster.now, "nemesis: {}", action)
    action.apply(cluster)


def play(cluster: Cluster, schedule: Iterable[tuple[int, Action]]) -> None:
    """Queue a scripted schedule of faults."""
    for time, action in schedule:
        cluster.schedule(time, perform, cluster, action)


class RandomNemesis:
    """Until ``end``, every second or so, injects a fault suited to the cluster's state.

    Most faults are undone after a random while (a crashed server restarts, a
    partition heals), so that quorums come and go rather than erode for good.
    """

    def __init__(self, rng: random.Random, end: int, mean_interval: int = 1000) -> None:
        self._rng = rng
        self.end = end
        self.mean_interval = mean_interval
        self.actions = 0

    def install(self, cluster: Cluster, start: int) -> None:
        cluster.schedule(start, self._tick, cluster)

    def _tick(self, cluster: Cluster) -> None:
        rng = self._rng
        action, undo = self.draw(cluster)
        self.actions += 1
        perform(cluster, action)
        if undo is not None:
            later = cluster.now + rng.randint(100, 3 * self.mean_interval)
            cluster.schedule(min(later, self.end), perform, cluster, undo)
        later = cluster.now + rng.randint(self.mean_interval // 4, self.mean_interval * 7 // 4)
        if later < self.end:
            cluster.schedule(later, self._tick, cluster)

    def draw(self, cluster: Cluster) -> tuple[Action, Action | None]:
        """A fault and what undoes it (None: stays until something else changes it)."""
        rng = self._rng
        ids = sorted(cluster.nodes)
        up = [i for i in ids if cluster.nodes[i].alive]
        down = [i for i in ids if i not in up]
        leaders = [n.id for n in cluster.leaders()]
        calm_disk = cluster.options.disk_min_delay, cluster.options.disk_max_delay
        slow = rng.choice(ids)
        choices: list[tuple[int, Action, Action | None]] = [
            (2, self._split(ids), Reconnect()),
            (1, self._cut(ids), Reconnect()),
            (2, SetLinks(self._links()), SetLinks(LinkFaults())),
            (1, SetDisk(slow, 20, rng.choice((50, 200, 600))), SetDisk(slow, *calm_disk)),
        ]
        if up:
            victim = rng.choice(up)
            choices.append((2, Crash(victim), Restart(victim)))
            choices.append((1, Pause(rng.choice(up), rng.randint(100, 3000)), None))
        if down:
            choices.append((1, Restart(rng.choice(down)), None))
        if leaders:
            leader = rng.choice(leaders)
            choices.append((1, Crash(leader), Restart(leader)))
            choices.append((1, Pause(leader, rng.randint(100, 3000)), None))
            choices.append((2, self._isolate(ids, leader), Reconnect()))
            deaf = Cut(tuple((i, leader) for i in ids if i != leader))
            choices.append((1, deaf, Reconnect()))
        pick = rng.randrange(sum(weight for weight, _, _ in choices))
        for weight, action, undo in choices:
            if pick < weight:
                return action, undo
            pick -= weight
        raise AssertionError("unreachable")

    def _split(self, ids: list[int]) -> Partition:
        groups: list[set[int]] = [set() for _ in range(self._rng.choice((2, 2, 2, 3)))]
        for i in ids:
            self._rng.choice(groups).add(i)
        return Partition(tuple(frozenset(g) for g in groups if g))

    def _cut(self, ids: list[int]) -> Cut:
        """A few one-way cuts, e.g. a leader that can send but not hear back."""
        pairs = (self._rng.sample(ids, 2) for _ in range(self._rng.randint(1, len(ids))))
        return Cut(tuple((src, dst) for src, dst in pairs))

    def _isolate(self, ids: list[int], leader: int) -> Partition:
        """Cut the leader off with a minority (possibly alone)."""
        others = [i for i in ids if i != leader]
        self._rng.shuffle(others)
        minority = others[: self._rng.randint(0, max(0, (len(ids) - 1) // 2 - 1))]
        return Partition((frozenset([leader, *minority]), frozenset(others[len(minority) :])))

    def _links(self) -> LinkFaults:
        rng = self._rng
        low, high = rng.choice(((1, 10), (1, 30), (1, 100), (5, 300), (50, 600)))
        drop = rng.choice((0, 0.02, 0.1, 0.3))
        late = rng.choice((0, 0, 0.01, 0.05))
        return LinkFaults(low, high, drop, rng.choice((0, 0.02, 0.1)), late)
