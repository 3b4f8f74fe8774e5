"""Group commit: many persist requests, one LMDB transaction, one fsync.

The node loop (asyncio) must not block on fsync, and at ~0.2-4 ms per fsync
one transaction per Raft update would cap the node at a few hundred to a few
thousand updates a second. So a single worker thread owns all writes of the
node: requests queue up while a transaction is in flight, and the worker
takes everything queued (up to ``max_batch``) into the next transaction. The
more load, the bigger the batches; under light load a request commits alone
with no added latency (there is no timer). Requests submitted from the event
loop wake the worker at the end of the loop's turn, not one by one, so that
what one turn produces (a batch's apply and the next batch's log write, say)
shares a transaction and its fsync.

Each request is a function run inside the shared transaction, with a
completion callback that runs after the commit returned (so the data is on
disk): the typed helpers build them for Raft persistence (term, vote,
entries; the result is the last durable log index, for PERSISTED_ENTRIES),
for applying committed operations, and for anything else given as a
function of the transaction. A request submitted with ``durable=False`` (the
apply of committed entries) does not need the final flush of the meta page
(kvstore.storage.env); a transaction of only such requests skips it. Callbacks are delivered in submission order,
on the event loop given to the constructor (one wake-up per transaction) or,
without one, in the worker thread.

If a shared transaction fails (NoSpace, a bug in one request), nothing of it
was written; the worker then retries its requests one per transaction, so
each gets its own outcome: a small term/vote update can still succeed when a
big append hits a full map. A request that depended on a failed one (an
append after a failed append) fails by itself with LogError.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from kvstore.storage.env import Txn
from kvstore.storage.ops import Operation, Result
from kvstore.storage.storage import Persist, Storage

log = logging.getLogger("kvstore.storage")

T = TypeVar("T")
OnDone = Callable[[Any, BaseException | None], None]


def _yield_on_wakeup() -> None:
    """Make the calling thread (the worker) SCHED_BATCH on Linux: woken by a
    submit, it then waits for the CPU's next turn instead of preempting the
    event loop thread, which holds the GIL the worker needs anyway. Without
    it the leader's loop thread was preempted several times per write, for
    nothing; measured at 64 clients: 7-16% more puts/s. Elsewhere (or where
    the policy cannot be set) the thread stays as it is."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None or not hasattr(os, "sched_setscheduler"):
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        log.debug("group commit worker stays at the default scheduling policy: %s", exc)


@dataclass(slots=True)
class _Request:
    work: Callable[[Txn], Any]
    on_done: OnDone
    durable: bool


@dataclass(slots=True)
class CommitStats:
    """Counters for metrics: batching shows as requests/transactions > 1."""

    transactions: int = 0
    requests: int = 0
    failed_transactions: int = 0
    largest_batch: int = 0


class GroupCommitter:
    """Runs write requests in a worker thread, coalescing them into transactions.

    ``submit`` is thread-safe; the ``persist``/``apply``/``run`` coroutines
    are for the event loop given as ``loop``. Call :meth:`start` first and
    :meth:`close` at shutdown (it commits everything already submitted).
    """

    def __init__(
        self,
        storage: Storage,
        *,
        loop: asyncio.AbstractEventLoop | None = None,
        max_batch: int = 1024,
        name: str = "kvstore-group-commit",
    ) -> None:
        self.storage = storage
        self._loop = loop
        self._max_batch = max_batch
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._loop_thread: int | None = None
        self._wake_scheduled = False
        self._ready = 0  # queued requests the worker may take (see _release)
        self.stats = CommitStats()

    # -- lifetime ------------------------------------------------------------

    def start(self) -> None:
        """Start the worker. Called on the loop's thread when there is a loop."""
        if self._loop is not None:
            self._loop_thread = threading.get_ident()
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit what was submitted, then stop the worker. Idempotent."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"group commit worker did not stop within {timeout} s")

    # -- submitting ------------------------------------------------------------

    def submit(
        self,
        work: Callable[[Txn], T],
        on_done: Callable[[T | None, BaseException | None], None],
        *,
        durable: bool = True,
    ) -> None:
        """Queue ``work(txn)``; ``on_done(result, None)`` after the commit, or
        ``on_done(None, exc)`` if it was not written. Thread-safe. With
        ``durable=False`` the commit may be undone by a machine crash (for
        work that the log can redo).

        ``work`` may run twice (again alone after a failed shared transaction),
        so it must act only through ``txn``, which is rolled back on failure.
        """
        with self._cond:
            if self._closing:
                raise RuntimeError("group committer is closed")
            self._queue.append(_Request(work, on_done, durable))
            if self._loop_thread is None or threading.get_ident() != self._loop_thread:
                self._release()
                return
            if self._wake_scheduled:
                return
            self._wake_scheduled = True
        assert self._loop is not None
        self._loop.call_soon(self._wake)

    def _wake(self) -> None:
        """End of the loop turn that submitted: the worker takes it all at once."""
        with self._cond:
            self._wake_scheduled = False
            self._release()

    def _release(self) -> None:
        """Let the worker take everything queued so far (``_cond`` held). What
        the loop thread submits waits for the end of its turn even when the
        worker comes back from a transaction in the meantime."""
        self._ready = len(self._queue)
        self._cond.notify()

    def submit_persist(
        self, request: Persist, on_done: Callable[[int | None, BaseException | None], None]
    ) -> None:
        """Persist term/vote/entries; ``on_done`` gets the last durable log index."""
        self.submit(lambda txn: self.storage.persist_in(txn, request), on_done)

    async def run(self, work: Callable[[Txn], T]) -> T:
        """Run ``work(txn)`` in the next transaction; returns its result once durable."""
        loop = self._require_loop()
        future: asyncio.Future[T] = loop.create_future()

        def done(result: T | None, exc: BaseException | None) -> None:
            if future.done():  # the awaiting task was cancelled
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        self.submit(work, done)
        return await future

    async def persist(self, request: Persist) -> int:
        """Persist one raftcore update's term/vote/entries; the last durable index."""
        return await self.run(lambda txn: self.storage.persist_in(txn, request))

    async def apply(
        self, batch: Sequence[tuple[int, Operation | None]], *, last_index: int = 0
    ) -> list[Result | None]:
        """Apply committed operations (and record the applied index) durably."""
        data = self.storage.data
        return await self.run(lambda txn: data.apply_in(txn, batch, last_index=last_index))

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("GroupCommitter was created without an event loop")
        return self._loop

    # -- the worker ------------------------------------------------------------

    def _run(self) -> None:
        _yield_on_wakeup()
        while True:
            with self._cond:
                while not self._ready and not self._closing:
                    self._cond.wait()
                if self._closing:
                    self._ready = len(self._queue)  # commit what was submitted, then stop
                if not self._ready:
                    return
                n = min(self._ready, self._max_batch)
                self._ready -= n
                batch = [self._queue.popleft() for _ in range(n)]
            outcomes = self._commit(batch)
            self._deliver(batch, outcomes)

    def _commit(self, batch: list[_Request]) -> list[tuple[Any, BaseException | None]]:
        stats = self.stats
        stats.requests += len(batch)
        stats.largest_batch = max(stats.largest_batch, len(batch))
        try:
            results: list[Any] = []
            durable = any(request.durable for request in batch)
            with self.storage.env.write(durable) as txn:
                for request in batch:
                    results.append(request.work(txn))
            stats.transactions += 1
            return [(r, None) for r in results]
        except Exception as exc:
            stats.failed_transactions += 1
            if len(batch) == 1:
                return [(None, exc)]
            log.warning(
                "group commit of %d requests failed (%s); retrying one by one", len(batch), exc
            )
        outcomes: list[tuple[Any, BaseException | None]] = []
        for request in batch:
            try:
                with self.storage.env.write(request.durable) as txn:
                    result = request.work(txn)
                stats.transactions += 1
                outcomes.append((result, None))
            except Exception as exc:
                stats.failed_transactions += 1
                outcomes.append((None, exc))
        return outcomes

    def _deliver(
        self, batch: list[_Request], outcomes: list[tuple[Any, BaseException | None]]
    ) -> None:
        def call_all() -> None:
            for request, (result, exc) in zip(batch, outcomes, strict=True):
                try:
                    request.on_done(result, exc)
                except Exception:
                    log.exception("group commit completion callback failed")

        if self._loop is None:
            call_all()
            return
        try:
            self._loop.call_soon_threadsafe(call_all)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            log.debug("event loop closed; dropping %d completions", len(batch))
