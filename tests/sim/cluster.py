"""The simulated cluster: a clock, an event queue and N servers around raftcore.

Events are ordered by (time, sequence number), so a run is a pure function of
its seed. Each server's I/O layer is a ``Node``; the network, disks, clients
and faults only ever act through events on this queue.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Configuration,
    Entry,
    EntryType,
    Event,
    InstallSnapshot,
    Message,
    RaftError,
    Role,
    Server,
    State,
)
from tests.sim.disk import Disk
from tests.sim.invariants import Checker, Observer
from tests.sim.network import Network
from tests.sim.node import Node
from tests.sim.trace import Trace


def derived_rng(seed: int, purpose: str) -> random.Random:
    """An independent stream per purpose, so one component's draws never shift another's."""
    return random.Random(f"{seed}:{purpose}")


@dataclass(frozen=True, slots=True)
class Options:
    """The cluster's shape and the Raft options every server runs with."""

    servers: int = 3
    pre_vote: bool = False
    election_timeout: int = 1000
    heartbeat_timeout: int = 100
    max_inflight_entries: int = 32
    install_snapshot_timeout: int = 30000
    disk_min_delay: int = 1
    disk_max_delay: int = 15
    max_steps: int = 3_000_000  # a run stepping more than this is livelocked

    def raft_kwargs(self) -> dict[str, Any]:
        return {
            "election_timeout": self.election_timeout,
            "heartbeat_timeout": self.heartbeat_timeout,
            "pre_vote": self.pre_vote,
            "max_inflight_entries": self.max_inflight_entries,
            "install_snapshot_timeout": self.install_snapshot_timeout,
        }


Applier = Callable[[Node, int, Entry], None]


class Cluster:
    """Servers 1..N bootstrapped with one CHANGE entry naming all of them as voters."""

    def __init__(
        self,
        seed: int,
        options: Options,
        observer: Observer | None = None,
        trace: Trace | None = None,
    ) -> None:
        self.seed = seed
        self.options = options
        self.now = 0
        self.steps = 0
        self.trace = trace if trace is not None else Trace()
        self.observer = (
            observer if observer is not None else Checker(seed, self.trace, self.describe)
        )
        self.network = Network(derived_rng(seed, "network"))
        self.rng = derived_rng(seed, "cluster")
        self.appliers: list[Applier] = []
        self._queue: list[tuple[int, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        ids = range(1, options.servers + 1)
        conf = Configuration(Server(i, f"s{i}", Role.VOTER) for i in ids)
        bootstrap = [Entry(1, EntryType.CHANGE, conf.encode())]
        self.nodes: dict[int, Node] = {}
        for i in ids:
            self.add_node(i, bootstrap)

    def add_node(self, server_id: int, bootstrap: Sequence[Entry] = ()) -> Node:
        """A server with a fresh disk (empty: it joins when a configuration names it)."""
        options = self.options
        disk = Disk(
            derived_rng(self.seed, f"disk{server_id}"),
            options.disk_min_delay,
            options.disk_max_delay,
        )
        if bootstrap:
            disk.bootstrap(1, 0, bootstrap)
        node = self.nodes[server_id] = Node(self, server_id, disk)
        return node

    def raft_seed(self, server_id: int, life: int) -> int:
        return derived_rng(self.seed, f"raft{server_id}:{life}").getrandbits(32)

    # the event loop -------------------------------------------------------------------

    def schedule(self, time: int, action: Callable[..., None], *args: Any) -> None:
        """Run ``action(*args)`` at simulated ``time`` (ms)."""
        self._seq += 1
        heapq.heappush(self._queue, (time, self._seq, action, args))

    def start(self) -> None:
        """Boot every server at the current time."""
        for node in self.nodes.values():
            self._guarded(node.start)

    def run_until(self, end: int, done: Callable[[], bool] | None = None) -> bool:
        """Process events up to time ``end``; stop early (returning True) once ``done()``."""
        queue = self._queue
        limit = self.options.max_steps
        while queue and queue[0][0] <= end:
            time, _, action, args = heapq.heappop(queue)
            self.now = time
            self._guarded(action, *args)
            self.steps += 1
            if self.steps > limit:
                self.fail(f"livelock: more than {limit} events by t={time}")
            if done is not None and done():
                return True
        self.now = max(self.now, end)
        return done is not None and done()

    def _guarded(self, action: Callable[..., None], *args: Any) -> None:
        """Turn anything but a checker failure into a failure carrying the seed and trace."""
        try:
            action(*args)
        except AssertionError:
            raise
        except Exception as exc:
            raise AssertionError(self.observer.report(f"unexpected {exc!r}")) from exc

    def fail(self, problem: str) -> None:
        raise AssertionError(self.observer.report(problem))

    # network --------------------------------------------------------------------------

    def send(self, node: Node, message: Message) -> None:
        """Put ``message`` from ``node`` on the wire (its server_id is the destination)."""
        dst = message.server_id
        if dst not in self.nodes or dst == node.id:
            self.fail(f"contract: s{node.id} sent {message} to an unknown server or itself")
        if message.server_address != self.nodes[dst].address:
            self.fail(f"contract: s{node.id} sent {message} to s{dst} at the wrong address")
        payload = message.payload
        if type(payload) is AppendEntries and type(payload.entries) is not tuple:
            # What raftcore handed over is serialised now, as a real transport would.
            payload = replace(payload, entries=tuple(payload.entries))
        elif type(payload) is AppendEntriesResult and not payload.rejected:
            node.check_acknowledged(payload.last_log_index)
        elif type(payload) is InstallSnapshot:
            payload = node.fill_snapshot(payload)
        for delay in self.network.delays(node.id, dst):
            self.schedule(self.now + delay, self._deliver, node.id, dst, payload)

    def _deliver(self, src: int, dst: int, payload: Any) -> None:
        node = self.nodes[dst]
        if not node.alive or not self.network.connected(src, dst):
            return
        if node.defer_while_paused(self._deliver, src, dst, payload):
            return
        self.trace.add(self.now, "s{}->s{} {}", src, dst, payload)
        sender = self.nodes[src]
        node.step(Event.receive(self.now, Message(src, sender.address, payload)))

    # clients and application ------------------------------------------------------------

    def leaders(self) -> list[Node]:
        return [n for n in self.nodes.values() if n.state == State.LEADER]

    def submit(self, payloads: Sequence[bytes], max_backlog: int = 0) -> Node | None:
        """Submit COMMAND entries to some leader; the leader that took them, or None.

        With ``max_backlog``, a leader with that many uncommitted entries is left alone.
        """
        leaders = [node for node in self.leaders() if not node.paused]
        if not leaders:
            return None
        node = leaders[0] if len(leaders) == 1 else self.rng.choice(leaders)
        raft = node.raft
        assert raft is not None
        if max_backlog and raft.last_index - raft.commit_index >= max_backlog:
            return None
        term = raft.current_term
        entries = [Entry(term, EntryType.COMMAND, p) for p in payloads]
        self.trace.add(
            self.now, "client->s{} {} entries from {!r}", node.id, len(entries), payloads[0]
        )
        try:
            node.step(Event.submit(self.now, entries))
        except RaftError as exc:
            self.trace.add(self.now, "s{} refused them: {}", node.id, exc.code)
            return None
        return node

    def on_applied(self, node: Node, index: int, entry: Entry) -> None:
        for applier in self.appliers:
            applier(node, index, entry)

    # faults ---------------------------------------------------------------------------

    def crash(self, server_id: int) -> None:
        node = self.nodes[server_id]
        if node.alive:
            node.crash()

    def restart(self, server_id: int) -> None:
        node = self.nodes[server_id]
        if not node.alive:
            node.start()

    def describe(self) -> str:
        return "\n".join("  " + node.describe() for node in self.nodes.values())
