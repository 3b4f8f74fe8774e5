"""A transcript harness for raftcore unit tests (in the style of etcd-io/raft and C-Raft).

A ``Cluster`` holds N ``Raft`` servers, a manual clock, a network of in-flight
messages and, per server, a disk and an application:

- the disk stores term and vote synchronously, whenever an update carries the
  CURRENT_TERM or VOTED_FOR flag, and entries only when the test (or a helper
  such as ``settle``) acknowledges the pending writes with ``persist``;
- the application applies committed entries and, for a CHANGE entry, steps
  ``Event.configuration`` (that is how raftcore learns a change committed).

Nothing happens on its own: time moves with ``advance`` or ``fire_timeout``,
messages move with ``deliver``, writes land with ``persist``. Servers are
numbered from 1 and their address is ``f"s{id}"``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from raftcore import (
    AppendEntries,
    Configuration,
    Entry,
    EntryType,
    Event,
    EventType,
    Message,
    Raft,
    Role,
    Server,
    State,
    Update,
    UpdateFlags,
)
from raftcore.messages import Payload

ELECTION_TIMEOUT = 1000
HEARTBEAT_TIMEOUT = 100

_MAX_ROUNDS = 50


def address(server_id: int) -> str:
    return f"s{server_id}"


def configuration(n: int, roles: Mapping[int, Role] | None = None) -> Configuration:
    """Servers 1..n, all voters unless ``roles`` says otherwise."""
    roles = roles or {}
    return Configuration(Server(i, address(i), roles.get(i, Role.VOTER)) for i in range(1, n + 1))


def cmd(term: int, data: bytes = b"") -> Entry:
    return Entry(term, EntryType.COMMAND, data)


def barrier(term: int) -> Entry:
    return Entry(term, EntryType.BARRIER, b"")


@dataclass
class Envelope:
    """A message on the wire: who sent it, to whom, and when."""

    src: int
    dst: int
    payload: Payload
    time: int


@dataclass
class Disk:
    """What survives a crash: term, vote and the acknowledged entries."""

    term: int = 1
    voted_for: int = 0
    entries: list[Entry] = field(default_factory=list)


@dataclass
class Node:
    id: int
    raft: Raft
    disk: Disk
    up: bool = True
    #: True until the first step of this incarnation (``r.timeout`` is not yet meaningful).
    fresh: bool = True
    #: The in-memory log as raftcore told us to write it (index i at log[i - 1]).
    log: list[Entry] = field(default_factory=list)
    #: Writes issued by ENTRIES updates, not yet acknowledged: (index, entries).
    pending: list[tuple[int, list[Entry]]] = field(default_factory=list)
    applied: int = 0
    applied_entries: list[Entry] = field(default_factory=list)
    #: Every (event, update) pair, in order.
    history: list[tuple[Event, Update]] = field(default_factory=list)
    #: Every message this server sent, dropped or not.
    sent: list[Envelope] = field(default_factory=list)

    @property
    def last_update(self) -> Update:
        return self.history[-1][1]

    @property
    def start_update(self) -> Update:
        """The update that START returned (the application may have stepped since)."""
        return next(u for e, u in self.history if e.type == EventType.START)


class Cluster:
    """N raftcore servers, a manual clock and a controllable network."""

    def __init__(
        self,
        n: int = 3,
        *,
        roles: Mapping[int, Role] | None = None,
        terms: Mapping[int, int] | None = None,
        votes: Mapping[int, int] | None = None,
        logs: Mapping[int, Iterable[Entry]] | None = None,
        seeds: Mapping[int, int] | None = None,
        start: bool = True,
        **options: Any,
    ) -> None:
        """``logs`` are the entries each server has persisted after the bootstrap
        CHANGE entry at index 1; ``terms`` and ``votes`` their persisted term and vote."""
        self.now = 0
        self.conf = configuration(n, roles)
        self.options = options
        self.seeds = {i: (seeds or {}).get(i, i) for i in range(1, n + 1)}
        self.network: list[Envelope] = []
        self.groups: list[set[int]] | None = None
        #: Broken update rules seen on any step (see ``_check_timeout`` and ``_check_durable``).
        self.violations: list[str] = []
        self.nodes: dict[int, Node] = {}
        bootstrap = Entry(1, EntryType.CHANGE, self.conf.encode())
        for i in range(1, n + 1):
            disk = Disk(
                term=(terms or {}).get(i, 1),
                voted_for=(votes or {}).get(i, 0),
                entries=[bootstrap, *(logs or {}).get(i, ())],
            )
            self.nodes[i] = Node(i, self._new_raft(i), disk)
        if start:
            self.start()

    # -- servers -----------------------------------------------------------

    def _new_raft(self, server_id: int) -> Raft:
        return Raft(
            id=server_id, address=address(server_id), seed=self.seeds[server_id], **self.options
        )

    def __getitem__(self, server_id: int) -> Node:
        return self.nodes[server_id]

    def raft(self, server_id: int) -> Raft:
        return self.nodes[server_id].raft

    @property
    def ids(self) -> list[int]:
        return sorted(self.nodes)

    def up_ids(self) -> list[int]:
        return [i for i in self.ids if self.nodes[i].up]

    def leaders(self) -> list[int]:
        return [i for i in self.up_ids() if self.raft(i).state == State.LEADER]

    def start(self, *ids: int) -> None:
        """Step START on each server (all by default) from its disk."""
        for i in ids or self.ids:
            node = self.nodes[i]
            node.log = list(node.disk.entries)
            self.step(
                i,
                Event.start(
                    time=self.now,
                    term=node.disk.term,
                    voted_for=node.disk.voted_for,
                    metadata=None,
                    start_index=1,
                    entries=list(node.disk.entries),
                ),
            )
            node.applied = max(node.applied, node.raft.commit_index)

    def crash(self, server_id: int) -> None:
        """The server stops: unacknowledged writes and messages to it are lost."""
        node = self.nodes[server_id]
        node.up = False
        node.pending.clear()
        self.network = [e for e in self.network if server_id not in (e.src, e.dst)]

    def restart(self, server_id: int) -> None:
        """Crash (if up) and start again from what the disk holds."""
        if self.nodes[server_id].up:
            self.crash(server_id)
        node = self.nodes[server_id]
        node.raft = self._new_raft(server_id)
        node.fresh = True
        node.applied = 0
        node.up = True
        self.start(server_id)

    # -- stepping ----------------------------------------------------------

    def step(self, server_id: int, event: Event) -> Update:
        node = self.nodes[server_id]
        assert node.up, f"server {server_id} is down"
        before = None if node.fresh else node.raft.timeout
        update = node.raft.step(event)
        node.fresh = False
        node.history.append((event, update))
        self._check_timeout(node, event, update, before)
        self._carry_out(node, update)
        self._check_durable(node, event)
        self._apply(node)
        return update

    def _check_timeout(self, node: Node, event: Event, update: Update, before: int | None) -> None:
        after = node.raft.timeout
        if after != before and not update.flags & UpdateFlags.TIMEOUT:
            self.violations.append(
                f"server {node.id}: {event.type.name} at {event.time} moved r.timeout "
                f"{before} -> {after} without the TIMEOUT flag"
            )
        if after <= self.now:
            self.violations.append(
                f"server {node.id}: after {event.type.name} at {event.time} r.timeout "
                f"is {after}, not in the future"
            )

    def _check_durable(self, node: Node, event: Event) -> None:
        r = node.raft
        if (r.current_term, r.voted_for) != (node.disk.term, node.disk.voted_for):
            self.violations.append(
                f"server {node.id}: {event.type.name} at {event.time} changed term/vote to "
                f"{r.current_term}/{r.voted_for} without CURRENT_TERM/VOTED_FOR "
                f"(disk has {node.disk.term}/{node.disk.voted_for})"
            )

    def _carry_out(self, node: Node, update: Update) -> None:
        r = node.raft
        if update.flags & (UpdateFlags.CURRENT_TERM | UpdateFlags.VOTED_FOR):
            # Synchronously durable, before any message of this update leaves.
            node.disk.term = r.current_term
            node.disk.voted_for = r.voted_for
        if update.flags & UpdateFlags.ENTRIES:
            index = update.entries_index
            assert 1 <= index <= len(node.log) + 1, (
                f"server {node.id}: entries_index {index} leaves a gap after {len(node.log)}"
            )
            entries = list(update.entries)
            node.log[index - 1 :] = entries
            node.pending.append((index, entries))
        for message in update.messages:
            envelope = Envelope(node.id, message.server_id, message.payload, self.now)
            node.sent.append(envelope)
            if self.connected(node.id, message.server_id):
                self.network.append(envelope)

    def _apply(self, node: Node) -> None:
        while node.up and node.applied < node.raft.commit_index:
            node.applied += 1
            entry = node.log[node.applied - 1]
            node.applied_entries.append(entry)
            if entry.type == EntryType.CHANGE:
                conf = Configuration.decode(entry.data)
                self.step(node.id, Event.configuration(self.now, node.applied, conf))

    def submit(
        self, server_id: int, data: bytes = b"x", type: EntryType = EntryType.COMMAND
    ) -> Update:
        """Submit one entry of the server's current term."""
        entry = Entry(self.raft(server_id).current_term, type, data)
        return self.step(server_id, Event.submit(self.now, [entry]))

    def persist(self, server_id: int) -> Update | None:
        """Land every pending write of the server and tell it with PERSISTED_ENTRIES."""
        node = self.nodes[server_id]
        if not node.pending:
            return None
        for index, entries in node.pending:
            node.disk.entries[index - 1 :] = entries
        index, entries = node.pending[-1]
        node.pending.clear()
        last = index + len(entries) - 1
        return self.step(server_id, Event.persisted_entries(self.now, last, term=entries[-1].term))

    def persist_all(self) -> None:
        for i in self.up_ids():
            self.persist(i)

    # -- network -----------------------------------------------------------

    def connected(self, a: int, b: int) -> bool:
        if not (self.nodes[a].up and self.nodes[b].up):
            return False
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    def partition(self, *groups: Iterable[int]) -> None:
        """Only servers in the same group talk; a server in no group talks to nobody."""
        self.groups = [set(g) for g in groups]
        self.network = [e for e in self.network if self.connected(e.src, e.dst)]

    def isolate(self, server_id: int) -> None:
        self.partition([server_id], [i for i in self.ids if i != server_id])

    def heal(self) -> None:
        self.groups = None

    def in_flight(
        self, src: int | None = None, dst: int | None = None, kind: type | None = None
    ) -> list[Envelope]:
        return [e for e in self.network if _matches(e, src, dst, kind)]

    def sent(
        self, src: int, dst: int | None = None, kind: type | None = None, *, since: int = 0
    ) -> list[Any]:
        """Payloads of the messages ``src`` sent (dropped ones too), from its
        ``since``-th message on (``len(cluster[src].sent)`` taken earlier)."""
        sent = self.nodes[src].sent[since:]
        return [e.payload for e in sent if _matches(e, src, dst, kind)]

    def send(self, src: int, dst: int, payload: Payload) -> Update:
        """Deliver a hand-made message, as if ``src`` had sent it."""
        return self.step(dst, Event.receive(self.now, Message(src, address(src), payload)))

    def deliver(
        self, src: int | None = None, dst: int | None = None, kind: type | None = None
    ) -> list[Update]:
        """Deliver the matching messages in flight now (not the ones they cause)."""
        batch = [e for e in self.network if _matches(e, src, dst, kind)]
        self.network = [e for e in self.network if not _matches(e, src, dst, kind)]
        updates = []
        for e in batch:
            if self.connected(e.src, e.dst):
                message = Message(e.src, address(e.src), e.payload)
                updates.append(self.step(e.dst, Event.receive(self.now, message)))
        return updates

    def deliver_from(self, server_id: int) -> list[Update]:
        return self.deliver(src=server_id)

    def deliver_to(self, server_id: int) -> list[Update]:
        return self.deliver(dst=server_id)

    def drop(self, src: int | None = None, dst: int | None = None, kind: type | None = None) -> int:
        before = len(self.network)
        self.network = [e for e in self.network if not _matches(e, src, dst, kind)]
        return before - len(self.network)

    def drop_to(self, server_id: int) -> int:
        return self.drop(dst=server_id)

    def settle(self) -> None:
        """Persist and deliver until nothing is in flight or pending (time stands still)."""
        for _ in range(_MAX_ROUNDS):
            if not self.network and not any(self.nodes[i].pending for i in self.up_ids()):
                return
            self.persist_all()
            self.deliver()
        raise AssertionError("cluster did not settle")

    # -- time --------------------------------------------------------------

    def fire_timeout(self, server_id: int) -> Update:
        """Move the clock to the server's ``r.timeout`` (if later) and fire it there only."""
        self.now = max(self.now, self.raft(server_id).timeout)
        return self.step(server_id, Event.timeout(self.now))

    def advance(self, ms: int, *, settle: bool = False) -> None:
        """Let ``ms`` pass, firing TIMEOUT at each server when its ``r.timeout`` comes;
        with ``settle``, messages and writes complete instantly after each firing."""
        target = self.now + ms
        for _ in range(100_000):
            due = [self.raft(i).timeout for i in self.up_ids()]
            if not due or min(due) > target:
                break
            self.now = max(self.now, min(due))
            for i in self.up_ids():
                if self.raft(i).timeout <= self.now:
                    self.step(i, Event.timeout(self.now))
            if settle:
                self.settle()
        else:
            raise AssertionError("r.timeout does not move forward")
        self.now = target

    def elect(self, server_id: int) -> None:
        """Fire the server's election timeout, then persist and deliver until it leads,
        and until the cluster is quiet again."""
        self.fire_timeout(server_id)
        for _ in range(_MAX_ROUNDS):
            if self.raft(server_id).state == State.LEADER:
                self.settle()
                return
            if not self.network and not any(self.nodes[i].pending for i in self.up_ids()):
                break
            self.persist_all()
            self.deliver()
        r = self.raft(server_id)
        raise AssertionError(
            f"server {server_id} did not win: state {r.state!r}, term {r.current_term}"
        )

    # -- inspection --------------------------------------------------------

    def updates(self, server_id: int) -> list[Update]:
        return [u for _, u in self.nodes[server_id].history]


def _matches(e: Envelope, src: int | None, dst: int | None, kind: type | None) -> bool:
    return (
        (src is None or e.src == src)
        and (dst is None or e.dst == dst)
        and (kind is None or isinstance(e.payload, kind))
    )


def entries_sent(payloads: Iterable[AppendEntries]) -> set[int]:
    """Indexes of every entry carried by these AppendEntries."""
    return {ae.prev_log_index + 1 + k for ae in payloads for k in range(len(ae.entries))}
