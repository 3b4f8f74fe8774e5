"""One random run per seed: faults for a while, then heal and demand progress.

The run draws its cluster size (3..7), pre-vote and timeouts, lets clients
submit continuously while the random nemesis crashes, restarts, pauses and
partitions servers and degrades links and disks, and then heals everything:
within RECOVERY_TIMEOUTS election timeouts a leader must be elected among the
voters and a fresh entry applied on every member. Every run also takes
snapshots, changes membership, transfers leadership and asks for read indexes
(``tests/sim/extensions.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftcore import Entry
from tests.sim.cluster import Cluster, Options, derived_rng
from tests.sim.extensions import Extensions
from tests.sim.membership import current_members
from tests.sim.nemesis import Heal, RandomNemesis, perform
from tests.sim.node import Node
from tests.sim.trace import Trace

# Elections are random: without pre-vote, a server with a stale log that times
# out first bumps everyone's term and restarts their timers (as C-Raft does),
# and the race starts over. Over 2000 seeds recovery took at most 8 election
# timeouts and the tail fell about 2.5x per timeout, so 20 keeps false alarms
# out of reach while a real liveness bug (no progress at all) still fails.
RECOVERY_TIMEOUTS = 20


class Workload:
    """Clients submitting small batches of COMMAND entries to a leader until ``end``.

    Like a real service, clients back off while a leader has ``max_backlog``
    uncommitted entries, so replication can keep up and liveness stays decidable.
    """

    def __init__(
        self, rng: random.Random, end: int, max_gap: int = 80, max_backlog: int = 300
    ) -> None:
        self._rng = rng
        self.end = end
        self.max_gap = max_gap
        self.max_backlog = max_backlog
        self.submitted = 0
        self.accepted = 0

    def install(self, cluster: Cluster, start: int = 0) -> None:
        cluster.schedule(start, self._tick, cluster)

    def _tick(self, cluster: Cluster) -> None:
        burst = self._rng.random() < 0.03  # now and then more than max_inflight_entries
        count = self._rng.randint(20, 100) if burst else self._rng.randint(1, 4)
        payloads = [b"c%d" % (self.submitted + i) for i in range(count)]
        self.submitted += count
        if cluster.submit(payloads, self.max_backlog) is not None:
            self.accepted += count
        later = cluster.now + self._rng.randint(1, self.max_gap)
        if later < self.end:
            cluster.schedule(later, self._tick, cluster)


class Probe:
    """Submits fresh entries until one of them is applied on every member (voters and
    stand-bys of the newest leader's configuration, that leader being a voter)."""

    def __init__(self, cluster: Cluster, every: int = 100) -> None:
        self.cluster = cluster
        self.every = every
        self.sent = 0
        self._reached: dict[bytes, set[int]] = {}
        self.done = False
        cluster.appliers.append(self._applied)

    def start(self) -> None:
        self.cluster.schedule(self.cluster.now, self._tick)

    def _tick(self) -> None:
        if self.done:
            return
        payload = b"probe%d" % self.sent
        self._reached[payload] = set()
        if self.cluster.submit([payload]) is None:
            del self._reached[payload]
        else:
            self.sent += 1
        self.cluster.schedule(self.cluster.now + self.every, self._tick)

    def _applied(self, node: Node, index: int, entry: Entry) -> None:
        reached = self._reached.get(entry.data)
        if reached is not None:
            reached.add(node.id)
            members = current_members(self.cluster)
            if members is not None and reached >= members:
                self.done = True


def await_progress(cluster: Cluster, within: int) -> int:
    """Fail unless a fresh entry reaches every server's application within ``within`` ms."""
    probe = Probe(cluster)
    since = cluster.now
    probe.start()
    if not cluster.run_until(since + within, lambda: probe.done):
        leaders = ", ".join(f"s{n.id}" for n in cluster.leaders()) or "none"
        cluster.fail(
            f"liveness: {within} ms after healing no fresh entry was applied on every member "
            f"(leaders now: {leaders}; {probe.sent} probes accepted)"
        )
    return cluster.now - since


@dataclass(frozen=True)
class RunResult:
    seed: int
    options: Options
    fault_ms: int
    faults: int
    steps: int
    commit_index: int
    terms: int
    recovery_ms: int
    extensions: str = ""

    def __str__(self) -> str:
        o = self.options
        return (
            f"seed {self.seed}: {o.servers} servers pre_vote={o.pre_vote} "
            f"faults {self.faults} in {self.fault_ms} ms, {self.steps} events, "
            f"{self.terms} terms with leaders, commit {self.commit_index}, "
            f"recovered in {self.recovery_ms} ms; {self.extensions}"
        )


def random_options(rng: random.Random) -> Options:
    return Options(
        servers=rng.randint(3, 7),
        pre_vote=rng.random() < 0.5,
        election_timeout=rng.choice((800, 1000, 1000, 1200)),
        heartbeat_timeout=100,
        max_inflight_entries=rng.choice((4, 32, 32)),
        install_snapshot_timeout=rng.choice((1000, 2000, 5000)),
    )


def run_seed(seed: int, trace: Trace | None = None, fault_ms: int | None = None) -> RunResult:
    """One random run; raises AssertionError (seed, replay command, trace) on a violation."""
    rng = derived_rng(seed, "scenario")
    options = random_options(rng)
    if fault_ms is None:
        fault_ms = rng.randint(15000, 40000)
    cluster = Cluster(seed, options, trace=trace)
    extensions = Extensions(cluster, derived_rng(seed, "extensions"), end=fault_ms)
    recovery_window = RECOVERY_TIMEOUTS * options.election_timeout
    Workload(derived_rng(seed, "clients"), end=fault_ms + recovery_window).install(cluster)
    nemesis = RandomNemesis(derived_rng(seed, "nemesis"), end=fault_ms)
    nemesis.install(cluster, start=rng.randint(0, 1500))
    cluster.start()
    cluster.run_until(fault_ms)
    perform(cluster, Heal())
    recovery_ms = await_progress(cluster, recovery_window)
    return RunResult(
        seed=seed,
        options=options,
        fault_ms=fault_ms,
        faults=nemesis.actions,
        steps=cluster.steps,
        commit_index=max(n.last_applied for n in cluster.nodes.values()),
        terms=len(getattr(cluster.observer, "leaders", ())),
        recovery_ms=recovery_ms,
        extensions=str(extensions),
    )
