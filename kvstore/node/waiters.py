"""Futures the node loop resolves: client proposals by log index, reads by
read id, and waiters for the applied index to reach a point."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from typing import Any


class NotLeaderError(Exception):
    """This node does not lead (any more); the request was not applied."""


class LeadershipLost(Exception):
    """Leadership was lost after the write entered the log: the outcome is unknown."""


class Proposals:
    """Client writes waiting for their entry (index, term) to be applied."""

    def __init__(self) -> None:
        self._waiting: dict[int, tuple[int, asyncio.Future[Any]]] = {}

    def __len__(self) -> int:
        return len(self._waiting)

    def add(self, index: int, term: int) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[index] = (term, future)
        return future

    def applied(self, index: int, term: int, result: object) -> None:
        waiting = self._waiting.pop(index, None)
        if waiting is None:
            return
        want_term, future = waiting
        if future.done():
            return
        if want_term == term:
            future.set_result(result)
        else:
            future.set_exception(LeadershipLost(f"entry {index} was replaced by a new leader"))

    def fail_all(self, exc: Exception) -> None:
        waiting, self._waiting = self._waiting, {}
        for _, future in waiting.values():
            if not future.done():
                future.set_exception(exc)


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
    share one ReadIndex round (as etcd's read loop)."""

    def __init__(self) -> None:
        self.forming: list[asyncio.Future[int]] = []
        self._sent: dict[int, list[asyncio.Future[int]]] = {}
        self._ids = itertools.count(1)

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
        return read_id, batch

    @property
    def in_flight(self) -> bool:
        """A sealed batch waits for its round."""
        return bool(self._sent)

    def ready(self, read_id: int, index: int) -> None:
        for future in self._sent.pop(read_id, []):
            if not future.done():
                future.set_result(index)

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
