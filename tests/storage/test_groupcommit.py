"""Group commit: coalescing into one transaction, ordered completions, asyncio API."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable

import pytest

from kvstore.storage import GroupCommitter, LogError, Persist, Put, PutResult, Storage
from kvstore.storage.env import Txn
from raftcore.types import Entry, EntryType

WAIT = 10.0  # seconds: every wait in these tests is bounded


def entry(term: int, i: int) -> Entry:
    return Entry(term, EntryType.COMMAND, b"entry-%d" % i)


def hold_worker(
    gc: GroupCommitter, on_done: Callable[[None, BaseException | None], None], durable: bool = True
) -> threading.Event:
    """Submit a request that keeps the worker in its transaction until the
    returned event is set; returns once that transaction is running."""
    in_flight = threading.Event()
    release = threading.Event()

    def slow(txn: Txn) -> None:
        in_flight.set()
        assert release.wait(WAIT)

    gc.submit(slow, on_done, durable=durable)
    assert in_flight.wait(WAIT)
    return release


def test_requests_arriving_during_a_commit_share_the_next_transaction(storage: Storage) -> None:
    gc = GroupCommitter(storage)
    gc.start()
    done: list[tuple[str, object]] = []
    release = hold_worker(gc, lambda r, e: done.append(("slow", e)))

    # While that transaction is in flight, 50 updates arrive, each with 2 entries.
    def report(i: int) -> Callable[[int | None, BaseException | None], None]:
        return lambda r, e: done.append((f"p{i}", e or r))

    for i in range(50):
        gc.submit_persist(
            Persist(
                term=1, entries_index=2 * i + 1, entries=[entry(1, 2 * i), entry(1, 2 * i + 1)]
            ),
            report(i),
        )
    release.set()
    gc.close(timeout=WAIT)
    assert gc.stats.transactions == 2  # the slow one, then all 50 in ONE transaction
    assert gc.stats.requests == 51 and gc.stats.largest_batch == 50
    # Completions in submission order, each with its own last durable index.
    assert done == [("slow", None)] + [(f"p{i}", 2 * i + 2) for i in range(50)]
    assert storage.log.last_index() == 100


def test_a_transaction_of_light_requests_only_is_not_synced_to_the_end(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apply of committed entries is submitted with durable=False
    (kvstore.storage.env says why that is safe); a transaction gets the final
    flush when any of its requests needs it."""
    syncs: list[bool] = []
    real_write = storage.env.write

    def recording_write(durable: bool = True) -> object:
        syncs.append(durable)
        return real_write(durable)

    monkeypatch.setattr(storage.env, "write", recording_write)
    gc = GroupCommitter(storage)
    gc.start()
    done: list[object] = []
    release = hold_worker(gc, lambda r, e: done.append(e), durable=False)
    # Two light requests and a durable one arrive during it: one transaction.
    apply = storage.data.apply_in
    gc.submit(
        lambda txn: apply(txn, [(1, Put(b"a", b"1"))]), lambda r, e: done.append(e), durable=False
    )
    gc.submit_persist(
        Persist(term=1, entries_index=1, entries=[entry(1, 1)]), lambda r, e: done.append(e)
    )
    gc.submit(
        lambda txn: apply(txn, [(2, Put(b"b", b"1"))]), lambda r, e: done.append(e), durable=False
    )
    release.set()
    gc.close(timeout=WAIT)
    assert syncs == [False, True]
    assert done == [None] * 4
    assert storage.data.applied_index() == 2 and storage.log.last_index() == 1


def test_truncation_within_one_batch(storage: Storage) -> None:
    gc = GroupCommitter(storage)
    results: list[object] = []
    gc.submit_persist(
        Persist(term=1, entries_index=1, entries=[entry(1, i) for i in range(5)]),
        lambda r, e: results.append(e or r),
    )
    gc.submit_persist(
        Persist(term=2, entries_index=3, entries=[entry(2, 100)]),
        lambda r, e: results.append(e or r),
    )
    gc.start()
    gc.close(timeout=WAIT)
    assert results == [5, 3]
    assert gc.stats.transactions == 1
    assert storage.log.entries(1) == [entry(1, 0), entry(1, 1), entry(2, 100)]


def test_a_failing_request_does_not_sink_the_others(storage: Storage) -> None:
    gc = GroupCommitter(storage)
    results: list[object] = []
    gc.submit_persist(
        Persist(entries_index=1, entries=[entry(1, 0)]), lambda r, e: results.append(e or r)
    )
    gc.submit_persist(  # a gap: a bug in the caller
        Persist(entries_index=9, entries=[entry(1, 9)]), lambda r, e: results.append(e or r)
    )
    gc.submit_persist(Persist(term=3), lambda r, e: results.append(e or r))
    gc.start()
    gc.close(timeout=WAIT)
    assert results[0] == 1 and isinstance(results[1], LogError) and results[2] == 1
    assert storage.stable.current_term() == 3
    with pytest.raises(RuntimeError, match="closed"):
        gc.submit_persist(Persist(term=4), lambda r, e: None)


def test_asyncio_api_delivers_on_the_loop_and_coalesces(storage: Storage) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gc = GroupCommitter(storage, loop=loop)
        gc.start()
        loop_thread = threading.get_ident()
        seen_threads: set[int] = set()

        async def one(i: int) -> int:
            last = await gc.persist(Persist(term=1, entries_index=i, entries=[entry(1, i)]))
            seen_threads.add(threading.get_ident())
            return last

        # Each coroutine submits in order (gather starts them in order); none waits
        # for another, so the worker finds several queued per transaction.
        lasts = await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1, 201))), WAIT)
        assert lasts == list(range(1, 201))
        assert seen_threads == {loop_thread}
        assert gc.stats.transactions < 200  # coalesced
        results = await asyncio.wait_for(
            gc.apply([(1, Put(b"a", b"1")), (2, None)], last_index=3), WAIT
        )
        assert results == [PutResult(revision=1), None]
        assert (
            await asyncio.wait_for(gc.run(lambda txn: storage.data.applied_index(txn)), WAIT) == 3
        )
        await asyncio.to_thread(gc.close, WAIT)

    asyncio.run(main())
    assert storage.log.last_index() == 200
    assert storage.data.applied_index() == 3


def test_what_one_loop_turn_submits_shares_one_transaction(storage: Storage) -> None:
    """A batch's apply and the next batch's log write are submitted by
    different callbacks of one loop turn: they must share one fsync, not
    race the worker into two transactions."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gc = GroupCommitter(storage, loop=loop)
        gc.start()
        for round_ in range(20):
            done = [loop.create_future() for _ in range(3)]
            before = gc.stats.transactions
            first = round_ * 3 + 1
            for k, future in enumerate(done):
                persist = Persist(term=1, entries_index=first + k, entries=[entry(1, first + k)])
                gc.submit_persist(persist, lambda r, e, f=future: f.set_result((r, e)))
                # Block the loop a moment (as a busy turn would): the worker is
                # free to run, yet must wait for the turn's end.
                time.sleep(0.002)
            outcomes = await asyncio.wait_for(asyncio.gather(*done), WAIT)
            assert [r for r, _ in outcomes] == [first, first + 1, first + 2]
            assert gc.stats.transactions == before + 1, f"round {round_}"
        await asyncio.to_thread(gc.close, WAIT)

    asyncio.run(main())
    assert storage.log.last_index() == 60


def test_the_worker_does_not_preempt_the_loop_thread_when_woken(storage: Storage) -> None:
    """SCHED_BATCH (Linux, the project's platform): a woken worker waits for
    the CPU's next turn rather than preempting the thread that submitted."""
    gc = GroupCommitter(storage)
    gc.start()
    try:
        native_id = gc._thread.native_id
        assert native_id is not None
        deadline = time.monotonic() + WAIT  # the worker sets it as it starts
        while os.sched_getscheduler(native_id) != os.SCHED_BATCH:
            assert time.monotonic() < deadline, "the worker is not SCHED_BATCH"
            time.sleep(0.01)
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # only the worker
    finally:
        gc.close(WAIT)
