"""Faults ("nemeses") injected while the clients run, and healed.

Each nemesis has ``inject`` (returns the members it hit and a few words) and
``heal``; the runner records both moments in a `Fault`. Whatever they do to
processes goes through `ChaosCluster` (by PID, members started by the
harness only); blocking calls run in a worker thread so the clients' loop
keeps going.

- kill: SIGKILL of a random member, of the leader, of a majority; the heal
  restarts them on their data;
- pause: SIGSTOP of a random member or the leader; the heal is SIGCONT;
- partition: majority/minority halves, a bridge (two halves that cannot
  talk, one member that talks to both), the leader isolated; made real in the
  proxies (DROP: silence; CUT: connections reset);
- slow disk: every sync of the leader (or all members) takes 50-300 ms
  longer (LD_PRELOAD shim); slow network: every peer link delays by 20-100 ms;
- membership: a new member joins in a free slot (``--join``: stand-by,
  catch-up, promotion), then the heal removes a random member (MemberRemove,
  the leader too) and stops it, so the cluster returns to its size.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from kvstore.client import Client, KVError
from tests.chaos.cluster import ChaosCluster
from tests.chaos.monitor import Monitor
from tests.chaos.proxy import Mode

__all__ = ["NEMESES", "Fault", "Nemesis", "NemesisContext", "make_nemeses"]

LEADER_WAIT = 10.0
JOIN_WAIT = 60.0
REMOVE_WAIT = 30.0


@dataclass
class Fault:
    """One fault as it happened; times are monotonic seconds like the history's."""

    name: str
    start: float
    injected: float = 0.0
    heal: float | None = None
    healed: float | None = None
    targets: list[int] = field(default_factory=list)
    detail: str = ""
    leader_before: int | None = None
    term_before: int | None = None


@dataclass
class NemesisContext:
    cluster: ChaosCluster
    monitor: Monitor
    rng: random.Random

    async def leader(self) -> int | None:
        found = self.monitor.latest_leader() or await self.monitor.wait_leader(LEADER_WAIT)
        return found[0] if found is not None and found[0] in self.cluster.nodes else None

    def members(self) -> list[int]:
        return sorted(self.cluster.nodes)

    def majority(self) -> int:
        return len(self.cluster.nodes) // 2 + 1


class Nemesis(Protocol):
    name: str

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]: ...

    async def heal(self, ctx: NemesisContext) -> str: ...


async def _pick(ctx: NemesisContext, which: str) -> list[int]:
    """Targets: "random" (one member), "leader" (a random one if none), "majority"."""
    members = ctx.members()
    if which == "majority":
        return sorted(ctx.rng.sample(members, ctx.majority()))
    if which == "leader":
        leader = await ctx.leader()
        if leader is not None:
            return [leader]
    return [ctx.rng.choice(members)]


class Kill:
    def __init__(self, which: str) -> None:
        self.which = which
        self.name = f"kill-{which}"
        self.targets: list[int] = []

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        self.targets = await _pick(ctx, self.which)
        await asyncio.to_thread(ctx.cluster.kill, self.targets)
        return self.targets, f"SIGKILL {self.targets}"

    async def heal(self, ctx: NemesisContext) -> str:
        for i in self.targets:
            await asyncio.to_thread(ctx.cluster.start_node, i)
        return f"restarted {self.targets}"


class Pause:
    def __init__(self, which: str) -> None:
        self.which = which
        self.name = f"pause-{which}"
        self.targets: list[int] = []

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        self.targets = await _pick(ctx, self.which)
        ctx.cluster.pause(self.targets)
        return self.targets, f"SIGSTOP {self.targets}"

    async def heal(self, ctx: NemesisContext) -> str:
        ctx.cluster.resume(self.targets)
        return f"SIGCONT {self.targets}"


class Partition:
    """``shape``: "halves" (a random minority from the rest), "bridge", "leader"."""

    def __init__(self, shape: str, mode: Mode | None = None) -> None:
        self.shape = shape
        self.mode = mode
        self.name = f"partition-{shape}"

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        members = ctx.members()
        ctx.rng.shuffle(members)
        mode = self.mode or ctx.rng.choice([Mode.DROP, Mode.DROP, Mode.CUT])
        if self.shape == "leader":
            leader = await ctx.leader() or members[0]
            sides = [[leader], [m for m in members if m != leader]]
        elif self.shape == "bridge":
            half = (len(members) - 1) // 2
            bridge = members[-1]
            sides = [members[:half], members[half:-1]]
        else:
            minority = len(members) // 2
            sides = [members[:minority], members[minority:]]
        blocked = [(a, b) for a in sides[0] for b in sides[1]]
        ctx.cluster.partition(blocked, mode)
        what = f"{sorted(sides[0])} | {sorted(sides[1])}"
        if self.shape == "bridge":
            what += f", bridge {bridge}"
        return sorted(sides[0]), f"{mode.value} {what}"

    async def heal(self, ctx: NemesisContext) -> str:
        ctx.cluster.net.heal()
        return "links pass"


class SlowDisk:
    def __init__(self, which: str) -> None:
        self.which = which
        self.name = f"slow-disk-{which}"
        self.targets: list[int] = []

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        self.targets = ctx.members() if self.which == "all" else await _pick(ctx, self.which)
        delay = ctx.rng.choice([50, 100, 300])
        ctx.cluster.set_disk_delay(self.targets, delay)
        return self.targets, f"fsync +{delay} ms on {self.targets}"

    async def heal(self, ctx: NemesisContext) -> str:
        ctx.cluster.set_disk_delay(self.targets, 0)
        return "disks fast"


class SlowNet:
    name = "slow-net"

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        delay = ctx.rng.choice([0.02, 0.05, 0.1])
        ctx.cluster.net.set(ctx.cluster.net.modes(), Mode.PASS, delay)
        return ctx.members(), f"every peer link +{delay * 1000:.0f} ms"

    async def heal(self, ctx: NemesisContext) -> str:
        ctx.cluster.net.heal()
        return "links without delay"


class Membership:
    """Grow by one member (it must become a voter), then shrink by a random one."""

    name = "membership"

    async def inject(self, ctx: NemesisContext) -> tuple[list[int], str]:
        member = await asyncio.to_thread(ctx.cluster.add_joiner)
        await asyncio.to_thread(_wait_voter, ctx.cluster, member.id)
        return [member.id], f"member {member.id} joined at {member.peer_addr}"

    async def heal(self, ctx: NemesisContext) -> str:
        victim = ctx.rng.choice(ctx.members())
        await asyncio.to_thread(_remove, ctx.cluster, victim)
        await asyncio.to_thread(ctx.cluster.retire, victim)
        return f"member {victim} removed"


def _voters(cluster: ChaosCluster) -> dict[int, str]:
    with Client(cluster.client_endpoints, timeout=2.0) as client:
        return {m.id: m.role for m in client.member_list().members}


def _wait_voter(cluster: ChaosCluster, member_id: int) -> None:
    """Until ``member_id`` votes; fails (with its log) when it exited or timed out."""
    deadline = time.monotonic() + JOIN_WAIT
    last: object = None
    while time.monotonic() < deadline:
        cluster.check_running([member_id])
        try:
            roles = _voters(cluster)
            if roles.get(member_id) == "VOTER":
                return
            last = roles
        except KVError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"member {member_id} not a voter within {JOIN_WAIT} s (last: {last!r})")


def _remove(cluster: ChaosCluster, member_id: int) -> None:
    """MemberRemove until it is gone: a retry after an unknown outcome finds it gone."""
    deadline = time.monotonic() + REMOVE_WAIT
    last: object = None
    while time.monotonic() < deadline:
        try:
            if member_id not in _voters(cluster):
                return
            with Client(cluster.client_endpoints, timeout=10.0) as client:
                client.member_remove(member_id)
            return
        except KVError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"member {member_id} not removed within {REMOVE_WAIT} s (last: {last!r})")


NEMESES: dict[str, Callable[[], Nemesis]] = {
    "kill-random": lambda: Kill("random"),
    "kill-leader": lambda: Kill("leader"),
    "kill-majority": lambda: Kill("majority"),
    "pause-random": lambda: Pause("random"),
    "pause-leader": lambda: Pause("leader"),
    "partition-halves": lambda: Partition("halves", Mode.DROP),
    "partition-bridge": lambda: Partition("bridge", Mode.DROP),
    "partition-leader": lambda: Partition("leader", Mode.CUT),
    "slow-disk-leader": lambda: SlowDisk("leader"),
    "slow-disk-all": lambda: SlowDisk("all"),
    "slow-net": SlowNet,
    "membership": Membership,
}


def make_nemeses(names: Sequence[str]) -> list[Nemesis]:
    unknown = [n for n in names if n not in NEMESES]
    if unknown:
        raise ValueError(f"unknown nemeses {unknown}; known: {', '.join(NEMESES)}")
    return [NEMESES[n]() for n in names]
