"""Who leads, as the members say: Cluster.Status of every member, polled in rounds.

The rounds give the figures the history cannot: when a new leader was
elected after a fault (time to new leader), when the members agreed on one
again after a heal, and the leader a nemesis should aim at. Status is
answered by each member locally, so a poll costs the cluster nothing that
matters; a paused or dead member simply does not answer within the poll's
timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc.aio

from kvstore.v1 import kv_pb2
from tests.chaos.clients import Channels

__all__ = ["Monitor", "Round", "Sample"]

POLL_TIMEOUT = 0.5


@dataclass(frozen=True)
class Sample:
    member: int
    leader_id: int
    term: int
    is_leader: bool
    applied_index: int
    commit_index: int


@dataclass(frozen=True)
class Round:
    time: float  # monotonic, when the round began
    members: int  # members polled (the configuration as the harness knows it)
    samples: tuple[Sample, ...]  # the members that answered

    def leader(self) -> tuple[int, int] | None:
        """(id, term) of a leader that says it leads and that a majority of the
        members polled name as their leader; None if there is none."""
        for s in self.samples:
            if s.is_leader:
                named = sum(1 for o in self.samples if o.leader_id == s.member)
                if named > self.members // 2:
                    return s.member, s.term
        return None

    def all_follow(self) -> bool:
        """Every member polled answered and names the same leader, which leads."""
        leader = self.leader()
        return (
            leader is not None
            and len(self.samples) == self.members
            and all(s.leader_id == leader[0] for s in self.samples)
        )


class Monitor:
    """Polls every member given by ``members()`` (id -> client address) every
    ``interval`` seconds until stopped; keeps every round."""

    def __init__(
        self,
        members: Callable[[], dict[int, str]],
        channels: Channels,
        interval: float = 0.2,
    ) -> None:
        self.members = members
        self.channels = channels
        self.interval = interval
        self.rounds: list[Round] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            members = self.members()
            polls = [self._poll(i, addr) for i, addr in members.items()]
            samples = [s for s in await asyncio.gather(*polls) if s is not None]
            self.rounds.append(Round(started, len(members), tuple(samples)))
            pause = self.interval - (time.monotonic() - started)
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), pause)

    def stop(self) -> None:
        self._stop.set()

    async def _poll(self, member: int, address: str) -> Sample | None:
        try:
            r = await self.channels.cluster(address).Status(
                kv_pb2.StatusRequest(), timeout=POLL_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return None
        return Sample(
            member,
            r.header.leader_id,
            r.header.raft_term,
            r.state == "LEADER",
            r.applied_index,
            r.commit_index,
        )

    def latest_leader(self) -> tuple[int, int] | None:
        """The leader (id, term) of the last round, if it had one."""
        return self.rounds[-1].leader() if self.rounds else None

    async def wait_leader(self, timeout: float) -> tuple[int, int] | None:
        """The first agreed leader seen from now on, within ``timeout`` seconds."""
        found = await self._wait(lambda r: r.leader() is not None, timeout)
        return None if found is None else found.leader()

    async def wait_all_follow(self, timeout: float) -> bool:
        """Until a round in which every member follows one leader (False: not in time)."""
        return await self._wait(Round.all_follow, timeout) is not None

    async def _wait(self, good: Callable[[Round], bool], timeout: float) -> Round | None:
        deadline = time.monotonic() + timeout
        seen = len(self.rounds)
        while time.monotonic() < deadline:
            for r in self.rounds[seen:]:
                if good(r):
                    return r
            seen = len(self.rounds)
            await asyncio.sleep(self.interval / 2)
        return None
