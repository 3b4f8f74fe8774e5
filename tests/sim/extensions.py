"""What issue 3 adds to every random run: snapshots, membership, transfers and reads.

``install`` puts the extended checker in place and starts, from the run's own
random stream, the application's snapshot policy (every few applied entries,
with few trailing entries, so that lagging and joining servers often need
InstallSnapshot), the membership nemesis, leadership transfers and read-index
requests. Everything but the snapshots stops at ``end``, when the faults stop.
"""

from __future__ import annotations

import random

from raftcore import Entry, Event, RaftError
from tests.sim.checks import ExtChecker
from tests.sim.cluster import Cluster
from tests.sim.membership import MembershipNemesis
from tests.sim.node import Node


class SnapshotPolicy:
    """Each application snapshots every ``every`` applied entries, keeping a few entries."""

    def __init__(self, rng: random.Random, every: int, max_trailing: int) -> None:
        self._rng = rng
        self.every = every
        self.max_trailing = max_trailing

    def __call__(self, node: Node, index: int, entry: Entry) -> None:
        last = 0 if node.snapshot is None else node.snapshot.index
        if index - last >= self.every:
            node.take_snapshot(self._rng.randint(0, self.max_trailing))

    def __str__(self) -> str:
        return f"every {self.every} trailing 0..{self.max_trailing}"


class Requests:
    """Until ``end``, every few ms, one leader request: a read index or a transfer."""

    def __init__(
        self, rng: random.Random, end: int, checker: ExtChecker, transfer_rate: float
    ) -> None:
        self._rng = rng
        self.end = end
        self.checker = checker
        self.transfer_rate = transfer_rate
        self.reads = 0
        self.reads_refused = 0
        self.transfers = 0
        self.transfers_accepted = 0

    def install(self, cluster: Cluster, start: int) -> None:
        cluster.schedule(start, self._tick, cluster)

    def _tick(self, cluster: Cluster) -> None:
        rng = self._rng
        candidates = [n for n in cluster.nodes.values() if n.alive and not n.paused]
        leaders = [n for n in candidates if n in cluster.leaders()]
        pool = leaders if leaders and rng.random() < 0.9 else candidates
        if pool:
            node = rng.choice(pool)
            if rng.random() < self.transfer_rate:
                self._transfer(cluster, node)
            else:
                self._read(cluster, node)
        later = cluster.now + rng.randint(10, 300)
        if later < self.end:
            cluster.schedule(later, self._tick, cluster)

    def _read(self, cluster: Cluster, node: Node) -> None:
        self.reads += 1
        self.checker.read_asked(self.reads)
        try:
            node.step(Event.read_index(cluster.now, self.reads))
        except RaftError:
            self.checker.read_refused(self.reads)
            self.reads_refused += 1

    def _transfer(self, cluster: Cluster, node: Node) -> None:
        target = 0 if self._rng.random() < 0.4 else self._rng.choice(sorted(cluster.nodes))
        self.transfers += 1
        cluster.trace.add(cluster.now, "operator->s{} transfer to s{}", node.id, target)
        try:
            node.step(Event.transfer(cluster.now, target))
        except RaftError as exc:
            cluster.trace.add(cluster.now, "s{} refused it: {}", node.id, exc.code)
            return
        self.transfers_accepted += 1


class Extensions:
    """The extended checker and the drivers of one run, for its summary line."""

    def __init__(self, cluster: Cluster, rng: random.Random, end: int) -> None:
        self.checker = ExtChecker(cluster.seed, cluster.trace, cluster.describe)
        cluster.observer = self.checker
        self.snapshots = SnapshotPolicy(rng, rng.randint(5, 40), rng.randint(0, 5))
        cluster.appliers.append(self.snapshots)
        servers = cluster.options.servers
        self.membership = MembershipNemesis(
            rng, end, max_servers=servers + rng.randint(1, 3), mean_interval=rng.randint(500, 3000)
        )
        self.membership.install(cluster, rng.randint(0, 3000))
        self.requests = Requests(rng, end, self.checker, transfer_rate=rng.choice((0.02, 0.05)))
        self.requests.install(cluster, rng.randint(0, 1000))

    def __str__(self) -> str:
        counts = self.checker.snapshots
        requests = self.requests
        return (
            f"snapshots {self.snapshots}: {counts['took']} taken {counts['installed']} installed "
            f"{counts['restored']} restored; membership: {self.membership}; transfers "
            f"{requests.transfers_accepted} of {requests.transfers}; reads "
            f"{self.checker.reads_answered} of {requests.reads} answered "
            f"({requests.reads_refused} refused)"
        )
