"""Extensions of the transcript harness for issue 3's behaviours.

``ExtCluster`` is a ``harness.Cluster`` whose servers can also:

- join from nothing (``add_server``: a new, empty server outside the configuration);
- hold back their application (``hold``/``release``), so that a committed CHANGE
  entry reaches raftcore as a CONFIGURATION event only when the test says so;
- report a disk capacity (``capacity[id]`` goes into every event they step);
- take snapshots (``take_snapshot``), persist received ones (automatically, or by
  ``persist_snapshot`` when ``auto_install`` is off) and restart from them.

A server's ``node.log`` keeps "index i at log[i - 1]"; the part a snapshot
covers is filled with placeholder entries that only carry the snapshot's term.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from raftcore import (
    Configuration,
    Entry,
    EntryType,
    Event,
    Message,
    Raft,
    RaftError,
    Role,
    SnapshotMetadata,
    UpdateFlags,
)
from raftcore.messages import Payload
from raftcore.update import SnapshotUpdate, Update
from tests.raftcore.harness import HEARTBEAT_TIMEOUT, Cluster, Disk, Node, address

_PLACEHOLDER = b"<in snapshot>"


class ExtCluster(Cluster):
    """A ``Cluster`` with joining servers, held applications, capacities and snapshots."""

    def __init__(self, n: int = 3, **kwargs: Any) -> None:
        self.held: set[int] = set()
        self.capacity: dict[int, int] = {}
        self.auto_install = True
        #: Message kinds the network loses (they still count as sent).
        self.lose: set[type] = set()
        self.pending_snapshots: dict[int, SnapshotUpdate] = {}
        #: Per server: the snapshot on its disk and the first index of the log it keeps.
        self.snapshots: dict[int, SnapshotMetadata] = {}
        self.disk_start: dict[int, int] = {}
        super().__init__(n, **kwargs)

    # -- membership --------------------------------------------------------

    def add_server(self, server_id: int) -> Node:
        """A brand-new server: empty disk, term 0, not in any configuration yet."""
        self.seeds[server_id] = server_id
        node = Node(server_id, self._new_raft(server_id), Disk(term=0, voted_for=0, entries=[]))
        self.nodes[server_id] = node
        self.start(server_id)
        return node

    def connected(self, a: int, b: int) -> bool:
        """A message to a server that does not exist (yet) is lost."""
        return a in self.nodes and b in self.nodes and super().connected(a, b)

    def change(self, leader: int, conf: Configuration) -> int:
        """Submit ``conf`` as a CHANGE entry on ``leader``; returns its index."""
        self.submit(leader, conf.encode(), EntryType.CHANGE)
        return self.raft(leader).last_index

    def change_event(self, server_id: int, data: bytes) -> Event:
        """A SUBMIT of one CHANGE entry with ``data``, in the server's term."""
        entry = Entry(self.raft(server_id).current_term, EntryType.CHANGE, data)
        return Event.submit(self.now, [entry])

    def with_role(self, server_id: int, role: Role, base: int = 1) -> Configuration:
        """Server ``base``'s configuration with ``server_id`` added or given ``role``."""
        return self.raft(base).configuration.with_server(server_id, address(server_id), role)

    def without(self, server_id: int, base: int = 1) -> Configuration:
        """Server ``base``'s configuration with ``server_id`` removed."""
        return self.raft(base).configuration.without_server(server_id)

    # -- application -------------------------------------------------------

    def hold(self, server_id: int) -> None:
        """Stop the server's application: nothing more gets applied until ``release``."""
        self.held.add(server_id)

    def release(self, server_id: int) -> None:
        self.held.discard(server_id)
        self._apply(self.nodes[server_id])

    def _apply(self, node: Node) -> None:
        if node.id not in self.held:
            super()._apply(node)

    def step(self, server_id: int, event: Event) -> Update:
        if server_id in self.capacity and event.capacity == 0:
            event = dataclasses.replace(event, capacity=self.capacity[server_id])
        return super().step(server_id, event)

    # -- snapshots ---------------------------------------------------------

    def take_snapshot(self, server_id: int, trailing: int, index: int | None = None) -> Update:
        """The server's application snapshots what it applied (or up to ``index``)."""
        node = self.nodes[server_id]
        index = node.applied if index is None else index
        metadata = SnapshotMetadata(index, node.log[index - 1].term, *self._conf_at(node, index))
        update = self.step(server_id, Event.snapshot(self.now, metadata, trailing))
        self.snapshots[server_id] = metadata
        start = self.disk_start.get(server_id, 1)
        self.disk_start[server_id] = max(start, index - trailing + 1)
        return update

    def _conf_at(self, node: Node, index: int) -> tuple[Configuration, int]:
        for i in range(index, 0, -1):
            entry = node.log[i - 1]
            if entry.type == EntryType.CHANGE and entry.data != _PLACEHOLDER:
                return Configuration.decode(entry.data), i
        metadata = self.snapshots[node.id]
        return metadata.configuration, metadata.configuration_index

    def _carry_out(self, node: Node, update: Update) -> None:
        super()._carry_out(node, update)
        self.network = [e for e in self.network if type(e.payload) not in self.lose]
        if update.flags & UpdateFlags.SNAPSHOT:
            assert update.snapshot is not None
            self.pending_snapshots[node.id] = update.snapshot
            if self.auto_install:
                self.persist_snapshot(node.id)

    def persist_snapshot(self, server_id: int) -> Update:
        """The received snapshot lands on disk; the log and the application restart from it."""
        snapshot = self.pending_snapshots.pop(server_id)
        metadata = snapshot.metadata
        node = self.nodes[server_id]
        node.log = [Entry(metadata.term, EntryType.BARRIER, _PLACEHOLDER)] * metadata.index
        node.disk.entries = list(node.log)
        node.pending.clear()
        node.applied = metadata.index
        self.snapshots[server_id] = metadata
        self.disk_start[server_id] = metadata.index + 1
        return self.step(server_id, Event.persisted_snapshot(self.now, metadata, 0, True))

    def start(self, *ids: int) -> None:
        """START from the disk, with the snapshot's metadata when there is one."""
        for i in ids or self.ids:
            metadata = self.snapshots.get(i)
            if metadata is None:
                super().start(i)
                continue
            node = self.nodes[i]
            node.log = list(node.disk.entries)
            first = self.disk_start[i]
            event = Event.start(
                time=self.now,
                term=node.disk.term,
                voted_for=node.disk.voted_for,
                metadata=metadata,
                start_index=first,
                entries=node.disk.entries[first - 1 :],
            )
            self.step(i, event)
            node.applied = max(node.applied, node.raft.commit_index)

    # -- common steps ------------------------------------------------------

    def received(self, src: int, payload: Payload) -> Event:
        """The RECEIVE event of a hand-made message from ``src``."""
        return Event.receive(self.now, Message(src, address(src), payload))

    def last_term(self, server_id: int) -> int:
        """The term of the server's last log entry (0 for an empty log)."""
        log = self.nodes[server_id].log
        return log[-1].term if log else 0

    def heartbeat(self) -> None:
        """One heartbeat interval with instant delivery: followers learn the commit index."""
        self.advance(HEARTBEAT_TIMEOUT, settle=True)

    def await_leader(self, among: list[int], limit: int = 5000) -> int:
        """Let time pass (instant delivery) until one of ``among`` leads; returns it."""
        for _ in range(limit // HEARTBEAT_TIMEOUT):
            self.heartbeat()
            leaders = [i for i in self.leaders() if i in among]
            if leaders:
                return leaders[0]
        raise AssertionError(f"none of {among} became leader")

    def commands(self, leader: int, count: int) -> int:
        """Submit ``count`` commands on ``leader``; returns the last one's index."""
        for k in range(count):
            self.submit(leader, b"cmd%d" % k)
        return self.raft(leader).last_index


def leader_cluster(n: int = 3, leader: int = 1, **kwargs: Any) -> ExtCluster:
    """N servers where ``leader`` won the first election, and one heartbeat later
    every follower has its log and commit index."""
    c = ExtCluster(n, **kwargs)
    c.elect(leader)
    c.heartbeat()
    return c


def observe(r: Raft, ids: list[int]) -> tuple[object, ...]:
    """Everything a failed step must leave as it was."""
    return (
        r.state,
        r.current_term,
        r.voted_for,
        r.leader,
        r.last_index,
        r.commit_index,
        r.configuration,
        r.transferee,
        r.timeout,
        tuple(r.match_index(i) for i in ids),
        tuple(r.catch_up_status(i) for i in ids),
    )


def assert_refused(c: Cluster, server_id: int, event: Event, error: type[RaftError]) -> None:
    """Stepping ``event`` raises ``error`` and changes nothing, sends nothing."""
    r = c.raft(server_id)
    ids = sorted(set(c.ids) | {s.id for s in r.configuration})
    before = observe(r, ids)
    in_flight = list(c.network)
    steps = len(c.nodes[server_id].history)
    with pytest.raises(error):
        c.step(server_id, event)
    assert observe(r, ids) == before
    assert c.network == in_flight
    assert len(c.nodes[server_id].history) == steps
