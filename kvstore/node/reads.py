"""When a ReadIndex round starts: Nagle's rule for linearizable reads.

A round costs a frame to and from each follower whatever it carries, and
rounds started back to back as each ended (~1 ms on loopback) carried ~2
reads at 64 clients. So reads gather, at most ``gap`` (--read-round-gap):

- while a round is in flight, the next starts when it ends, ``gap`` after it
  started (reads came during it: more readers than take turns);
- else a batch goes at once if it holds the readers the last round had (a
  lone reader never waits), or once they are back, at most ``gap`` after the
  first.

Measured, gets/s with gap 0 against 4 ms (medians of 3): 2 clients 1,036 vs
1,083, 4 clients 1,260 vs 1,634, 16 clients 1,581 vs 1,820, 64 clients 1,770
vs 2,231; one client unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from kvstore.node.waiters import ReadBatches


class ReadScheduler:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        reads: ReadBatches,
        gap: float,
        linger: float,
        start_round: Callable[[bool], None],
    ) -> None:
        """``start_round(even_in_flight)`` seals the forming batch and steps
        raftcore; it does nothing when there is none, or when a round is in
        flight unless ``even_in_flight``."""
        self._loop = loop
        self._reads = reads
        self._gap = gap
        self._linger = linger
        self._start_round = start_round
        self._started = 0.0  # loop time the last round started

    def joined(self, first: bool) -> None:
        """A read joined the forming batch (``first``: it opened it)."""
        reads = self._reads
        if reads.in_flight:
            if first:  # should that round be lost, this batch goes after the linger
                self._loop.call_later(self._linger, self._start_round, True)
        elif reads.gathered or not self._gap:
            self._loop.call_soon(self._start_round, False)
        elif first:
            self._loop.call_later(self._gap, self._start_round, False)

    def round_ended(self) -> None:
        """A round's reads are answered: the reads that came meanwhile go next."""
        if self._reads.forming and not self._reads.in_flight:
            self._loop.call_at(self._started + self._gap, self._start_round, False)

    def started(self) -> None:
        """A round was sealed and stepped just now."""
        self._started = self._loop.time()
