"""Storage benchmark: log appends and state machine applies on real LMDB.

Prints appends/s with 1 and with 100 entries per transaction (every
transaction is one fsync'd commit), the same through the GroupCommitter with
many requests in flight, and puts applied/s (1 and 100 per transaction).

    .venv/bin/python benchmarks/storage_bench.py [--seconds 2] [--dir /path/on/the/real/disk]

Benchmarks are programs, not tests: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kvstore.storage import GroupCommitter, Persist, Put, Storage
from raftcore.types import Entry, EntryType

VALUE = b"v" * 100


def timed(seconds: float, step: Callable[[], int]) -> tuple[float, int]:
    """Run ``step`` (returns items done) until ``seconds`` elapsed; items/s, calls."""
    done = calls = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        done += step()
        calls += 1
    return done / elapsed, calls


def bench_appends(storage: Storage, per_txn: int, seconds: float) -> float:
    entries = [Entry(1, EntryType.COMMAND, VALUE)] * per_txn
    next_index = storage.log.last_index() + 1

    def step() -> int:
        nonlocal next_index
        storage.log.append(next_index, entries)
        next_index += per_txn
        return per_txn

    rate, _ = timed(seconds, step)
    return rate


def bench_group_commit(storage: Storage, in_flight: int, seconds: float) -> tuple[float, float]:
    """Appends/s of 1-entry persist requests, ``in_flight`` outstanding at a time;
    also the mean number of requests per transaction."""

    async def main() -> tuple[float, float]:
        gc = GroupCommitter(storage, loop=asyncio.get_running_loop())
        gc.start()
        next_index = storage.log.last_index() + 1
        entry = [Entry(1, EntryType.COMMAND, VALUE)]
        slots = asyncio.Semaphore(in_flight)
        done = 0
        tasks: set[asyncio.Task[None]] = set()

        async def one(index: int) -> None:
            nonlocal done
            await gc.persist(Persist(term=1, entries_index=index, entries=entry))
            done += 1
            slots.release()

        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(one(next_index))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_index += 1
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
        await asyncio.to_thread(gc.close)
        return done / elapsed, gc.stats.requests / max(1, gc.stats.transactions)

    return asyncio.run(main())


def bench_apply(storage: Storage, per_txn: int, seconds: float, keys: int = 100_000) -> float:
    index = storage.data.applied_index()

    def step() -> int:
        nonlocal index
        batch = [
            (index + i + 1, Put(b"key-%08d" % ((index + i) % keys), VALUE)) for i in range(per_txn)
        ]
        storage.data.apply(batch)
        index += per_txn
        return per_txn

    rate, _ = timed(seconds, step)
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the environment")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(dir=args.dir, prefix="storage-bench-") as tmp,
        Storage(Path(tmp) / "env", map_size=4 << 30) as s,
    ):
        print(f"LMDB environment in {tmp}, {args.seconds:.1f} s per measurement, 100-byte payloads")
        print(
            f"appends, 1 entry per transaction:      {bench_appends(s, 1, args.seconds):10.0f} entries/s"
        )
        print(
            f"appends, 100 entries per transaction:  {bench_appends(s, 100, args.seconds):10.0f} entries/s"
        )
        for in_flight in (1, 16, 64):
            rate, per_txn = bench_group_commit(s, in_flight, args.seconds)
            print(
                f"group commit, {in_flight:2d} requests in flight:  {rate:10.0f} entries/s"
                f"  ({per_txn:.1f} requests per transaction)"
            )
        print(
            f"puts applied, 1 per transaction:       {bench_apply(s, 1, args.seconds):10.0f} puts/s"
        )
        print(
            f"puts applied, 100 per transaction:     {bench_apply(s, 100, args.seconds):10.0f} puts/s"
        )
        print(
            f"database file: {s.db_size_bytes() / 2**20:.1f} MiB, map size {s.map_size / 2**30:.1f} GiB"
        )


if __name__ == "__main__":
    main()
