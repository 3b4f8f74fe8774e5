"""Futures the node loop resolves: client proposals by log index, reads by
read id, and waiters for the applied index to reach a point."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any

from kvstore.storage import Operation


class NotLeaderError(Exception):
    """This node does not lead (any more); the request was not applied."""


class LeadershipLost(Exception):
    """Leadership was lost after the write entered the log: the outcome is unknown."""


class WriteTimeout(Exception):
    """A write's deadline passed before it was applied: the outcome is unknown."""


class _Proposal:
    __slots__ = ("deadline", "future", "operation", "term")

    def __init__(
        self, term: int, future: asyncio.Future[Any], operation: Operation | None, deadline: float
    ) -> None:
        self.term = term
        self.future = future
        self.operation = operation
        self.deadline = deadline


class Proposals:
    """Client writes waiting for their entry (index, term) to be applied.

    Each may carry its decoded operation, so that the leader applies it without
    decoding the entry again, and a deadline: :meth:`expire`, run by the node
    every few milliseconds while writes wait, fails the late ones. One sweep
    for all is much cheaper than a timer per write (asyncio.timeout).
    """

    def __init__(self) -> None:
        self._waiting: dict[int, _Proposal] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    @property
    def have_deadlines(self) -> bool:
        """Writes with a deadline still wait (the sweep goes on)."""
        return any(p.deadline and not p.future.done() for p in self._waiting.values())

    def add(
        self, index: int, term: int, operation: Operation | None = None, deadline: float = 0.0
    ) -> asyncio.Future[Any]:
        """``deadline`` is in the loop's time; 0 is none."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[index] = _Proposal(term, future, operation, deadline)
        return future

    def operation(self, index: int, term: int) -> Operation | None:
        """The operation proposed here for entry (index, term), if any."""
        proposal = self._waiting.get(index)
        if proposal is None or proposal.term != term:
            return None
        return proposal.operation

    def applied(self, index: int, term: int, result: object) -> None:
        proposal = self._waiting.pop(index, None)
        if proposal is None:
            return
        future = proposal.future
        if future.done():
            return
        if proposal.term == term:
            future.set_result(result)
        else:
            future.set_exception(LeadershipLost(f"entry {index} was replaced by a new leader"))

    def expire(self, now: float) -> None:
        """Fail the writes whose deadline is past (their entries may still apply)."""
        for proposal in self._waiting.values():
            if proposal.deadline and proposal.deadline <= now and not proposal.future.done():
                proposal.future.set_exception(WriteTimeout())

    def fail_all(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for proposal in waiting.values():
            if not proposal.future.done():
                proposal.future.set_exception(exc)


class AppliedWaiters:
    """Futures that complete once the applied index reaches their index."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    def wait(self, index: int, applied: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if index <= applied:
            future.set_result(None)
        else:
            heapq.heappush(self._heap, (index, next(self._order), future))
        return future

    def advance(self, applied: int) -> None:
        while self._heap and self._heap[0][0] <= applied:
            _, _, future = heapq.heappop(self._heap)
            if not future.done():
                future.set_result(None)

    def fail_all(self, exc: Exception) -> None:
        heap, self._heap = self._heap, []
        for _, _, future in heap:
            if not future.done():
                future.set_exception(exc)


class ReadBatches:
    """Linearizable reads that arrive together, or while a round is in flight,
    share one ReadIndex round (as etcd's read loop). Between rounds it keeps
    how many readers the next round may expect (see Node._schedule_reads)."""

    def __init__(self) -> None:
        self.forming: list[asyncio.Future[int]] = []
        self._sent: dict[int, list[asyncio.Future[int]]] = {}
        self._ids = itertools.count(1)
        self.rounds = 0  # sealed so far (metrics: reads per round is the batching)
        self._last_size = 0  # reads in the round sealed last
        self._expected = 1  # readers the next round may wait for

    def join(self) -> tuple[asyncio.Future[int], bool]:
        """A future for the read index; True when this read opened a new batch."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        first = not self.forming
        self.forming.append(future)
        return future, first

    def seal(self) -> tuple[int, list[asyncio.Future[int]]]:
        read_id = next(self._ids)
        batch, self.forming = self.forming, []
        self._sent[read_id] = batch
        self.rounds += 1
        self._last_size = len(batch)
        return read_id, batch

    @property
    def in_flight(self) -> bool:
        """A sealed batch waits for its round."""
        return bool(self._sent)

    @property
    def gathered(self) -> bool:
        """The forming batch holds as many reads as the next round may expect:
        the last round's readers (who read again once answered) and those who
        came while it was in flight."""
        return len(self.forming) >= self._expected

    def ready(self, read_id: int, index: int) -> None:
        for future in self._sent.pop(read_id, []):
            if not future.done():
                future.set_result(index)
        self._expected = max(1, self._last_size + len(self.forming))

    def fail_round(self, read_id: int, exc: Exception) -> None:
        self.fail(self._sent.pop(read_id, []), exc)

    def fail(self, batch: list[asyncio.Future[int]], exc: Exception) -> None:
        for future in batch:
            if not future.done():
                future.set_exception(exc)

    def fail_all(self, exc: Exception) -> None:
        sent, self._sent = self._sent, {}
        for batch in sent.values():
            self.fail(batch, exc)
        forming, self.forming = self.forming, []
        self.fail(forming, exc)
