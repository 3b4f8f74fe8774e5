"""Membership changes as a nemesis: servers join, are promoted, demoted and removed.

One change at a time, through a leader, as an operator would make it: a new
server starts with an empty disk and is added as a stand-by; once that change
is committed the leader catches it up (CATCH_UP, then ``catch_up_status``) and,
when a round finished in time, promotes it to voter with a second change.
Voters are demoted to stand-by or spare, stand-bys and spares promoted the same
way, and any member may be removed, the leader too. Ids are never reused, so a
removed server stays removed (and keeps running, as a forgotten process would).

What raftcore refuses (CantChange while a change is pending, NotLeader from a
deposed leader, Invalid for a change touching two servers) must change nothing;
the task is retried on a later tick, and dropped when it does not finish in time.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from raftcore import CatchUpStatus, Configuration, Entry, EntryType, Event, RaftError, Role
from tests.sim.cluster import Cluster
from tests.sim.node import Node

MAX_VOTERS = 7


def current_members(cluster: Cluster) -> set[int] | None:
    """The servers that receive the log (voters and stand-bys) in the configuration of
    the newest leader; None while that leader is not one of its voters (or none leads)."""
    leaders = [node for node in cluster.leaders() if node.raft is not None]
    if not leaders:
        return None
    leader = max(leaders, key=lambda node: node.raft.current_term if node.raft else 0)
    assert leader.raft is not None
    conf = leader.raft.configuration
    if not conf.is_voter(leader.id):
        return None
    return {server.id for server in conf if server.role != Role.SPARE}


def submit_change(cluster: Cluster, node: Node, conf: Configuration) -> bool:
    """Submit ``conf`` as a CHANGE entry to ``node``; False when raftcore refused it."""
    raft = node.raft
    assert raft is not None
    cluster.trace.add(cluster.now, "operator->s{} change to {}", node.id, conf)
    try:
        node.step(
            Event.submit(cluster.now, [Entry(raft.current_term, EntryType.CHANGE, conf.encode())])
        )
    except RaftError as exc:
        cluster.trace.add(cluster.now, "s{} refused it: {}", node.id, exc.code)
        return False
    return True


@dataclass
class Task:
    """Bring ``server_id`` to ``role`` (None: remove it) before ``deadline``."""

    server_id: int
    role: Role | None
    deadline: int
    catch_ups: int = 0

    def __str__(self) -> str:
        goal = "remove" if self.role is None else f"make {self.role.name}"
        return f"{goal} s{self.server_id}"


class MembershipNemesis:
    """Until ``end``, works through one membership task at a time."""

    def __init__(
        self, rng: random.Random, end: int, max_servers: int, mean_interval: int = 1500
    ) -> None:
        self._rng = rng
        self.end = end
        self.max_servers = max_servers
        self.mean_interval = mean_interval
        self.task: Task | None = None
        self._idle_until = 0
        self.submitted = 0  # changes raftcore accepted
        self.refused = 0
        self.finished = 0  # tasks
        self.dropped = 0

    def install(self, cluster: Cluster, start: int) -> None:
        self._idle_until = start
        cluster.schedule(start, self._tick, cluster)

    def _tick(self, cluster: Cluster) -> None:
        rng = self._rng
        now = cluster.now
        task = self.task
        if task is not None and now > task.deadline:
            cluster.trace.add(now, "operator: give up on {}", task)
            self.dropped += 1
            task = self.task = None
        leaders = [node for node in cluster.leaders() if not node.paused]
        if leaders:
            leader = rng.choice(leaders)
            if task is None and now >= self._idle_until:
                task = self.task = self._draw(cluster, leader)
            if task is not None and self._advance(cluster, leader, task):
                cluster.trace.add(now, "operator: done: {}", task)
                self.finished += 1
                self.task = None
                self._idle_until = now + rng.randint(0, 2 * self.mean_interval)
        later = now + rng.randint(50, 400)
        if later < self.end:
            cluster.schedule(later, self._tick, cluster)

    def _draw(self, cluster: Cluster, leader: Node) -> Task | None:
        """A new task, or an invalid change tried at once (and None)."""
        rng = self._rng
        assert leader.raft is not None
        conf = leader.raft.configuration
        voters = conf.voter_ids()
        others = [server.id for server in conf if server.role != Role.VOTER]
        deadline = cluster.now + rng.randint(5_000, 20_000)
        choices: list[tuple[int, int, Role | None]] = [(1, 0, None)]  # 0: invalid change
        if len(cluster.nodes) < self.max_servers:
            choices.append((3, -1, Role.VOTER if rng.random() < 0.8 else Role.STANDBY))
        if len(voters) > 1:
            choices.append((2, rng.choice(voters), None))
            choices.append((1, leader.id, None))
            choices.append((2, rng.choice(voters), rng.choice((Role.STANDBY, Role.SPARE))))
        if others:
            if len(voters) < MAX_VOTERS:
                choices.append((3, rng.choice(others), Role.VOTER))
            choices.append((1, rng.choice(others), None))
            choices.append((1, rng.choice(others), rng.choice((Role.STANDBY, Role.SPARE))))
        pick = rng.randrange(sum(weight for weight, _, _ in choices))
        for weight, server_id, role in choices:  # noqa: B007 (the loop picks them)
            if pick < weight:
                break
            pick -= weight
        if server_id == 0:
            self._invalid_change(cluster, leader, conf)
            return None
        if server_id == -1:
            server_id = max(cluster.nodes) + 1
            cluster.trace.add(cluster.now, "operator: new server s{}", server_id)
            cluster.add_node(server_id).start()
        return Task(server_id, role, deadline)

    def _invalid_change(self, cluster: Cluster, leader: Node, conf: Configuration) -> None:
        """Two servers changed at once: raftcore must refuse it (Invalid or CantChange)."""
        voters = conf.voter_ids()
        new = max(cluster.nodes) + 1
        bad = conf.with_server(new, f"s{new}", Role.STANDBY).without_server(voters[-1])
        if submit_change(cluster, leader, bad):
            cluster.fail(f"s{leader.id} accepted a change of two servers: {conf} -> {bad}")

    def _advance(self, cluster: Cluster, leader: Node, task: Task) -> bool:
        """One step towards ``task`` through ``leader``; True once it is reached."""
        raft = leader.raft
        assert raft is not None
        conf = raft.configuration
        server = conf.get(task.server_id)
        if task.role is None:
            if server is None:
                return True
            return self._change(cluster, leader, conf.without_server(task.server_id))
        if server is not None and server.role == task.role:
            return True
        address = cluster.nodes[task.server_id].address
        if task.role != Role.VOTER or server is None or server.role == Role.SPARE:
            role = Role.STANDBY if task.role == Role.VOTER else task.role
            return self._change(cluster, leader, conf.with_server(task.server_id, address, role))
        # A stand-by to promote: once its configuration is committed, catch it up first.
        if leader.app.configuration != conf:
            return False
        status = raft.catch_up_status(task.server_id)
        if status == CatchUpStatus.FINISHED:
            conf = conf.with_server(task.server_id, address, Role.VOTER)
            return self._change(cluster, leader, conf)
        if status != CatchUpStatus.RUNNING and task.catch_ups < 3:
            task.catch_ups += 1
            cluster.trace.add(cluster.now, "operator->s{} catch up s{}", leader.id, task.server_id)
            try:
                leader.step(Event.catch_up(cluster.now, task.server_id))
            except RaftError as exc:
                cluster.trace.add(cluster.now, "s{} refused it: {}", leader.id, exc.code)
        return False

    def _change(self, cluster: Cluster, leader: Node, conf: Configuration) -> bool:
        """Submit ``conf``, mostly only once the one in force is committed; never done."""
        assert leader.raft is not None
        pending = leader.app.configuration != leader.raft.configuration
        if pending and self._rng.random() < 0.8:
            return False
        if submit_change(cluster, leader, conf):
            self.submitted += 1
        else:
            self.refused += 1
        return False

    def __str__(self) -> str:
        return (
            f"changes {self.submitted} (+{self.refused} refused), tasks {self.finished} done "
            f"{self.dropped} dropped"
        )
