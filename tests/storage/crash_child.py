"""Child process for the crash test: group commits in a loop until killed.

Run as ``python crash_child.py DATA_DIR``. It appends entries (and applies a
put per entry) through a GroupCommitter on an asyncio loop, keeping many
requests in flight so they coalesce, and prints ``durable N`` once the log is
durable up to N and ``applied N`` once the data is applied up to N. It
resumes from whatever the directory holds, so it can be killed and rerun.
The parent kills it with SIGKILL and checks that every reported index is
there. Contents are a function of the index, so the parent can verify them.
"""

from __future__ import annotations

import asyncio
import random
import sys

from kvstore.storage import GroupCommitter, Persist, Put, Storage
from raftcore.types import Entry, EntryType

MAP_SIZE = 256 << 20
IN_FLIGHT = 32


def term_for(index: int) -> int:
    return 1 + index // 500


def data_for(index: int) -> bytes:
    return (b"entry-%d-" % index) * (1 + index % 50)


def entry_for(index: int) -> Entry:
    return Entry(term_for(index), EntryType.COMMAND, data_for(index))


async def main(path: str) -> None:
    storage = Storage(path, map_size=MAP_SIZE)
    loop = asyncio.get_running_loop()
    gc = GroupCommitter(storage, loop=loop)
    gc.start()
    next_index = storage.log.last_index() + 1
    # Entries durable but not yet applied at the crash are applied first, as a
    # node does for committed entries after a restart (nothing before is replayed).
    applied = storage.data.applied_index()
    backlog = storage.log.entries(applied + 1)
    await gc.apply(
        [
            (i, Put(b"key-%d" % i, data_for(i)))
            for i in range(applied + 1, applied + 1 + len(backlog))
        ]
    )
    slots = asyncio.Semaphore(IN_FLIGHT)
    rng = random.Random(next_index)
    print(f"start {next_index}", flush=True)

    async def one(first: int, n: int) -> None:
        last = first + n - 1
        durable = await gc.persist(
            Persist(
                term=term_for(last),
                entries_index=first,
                entries=[entry_for(i) for i in range(first, last + 1)],
            )
        )
        print(f"durable {durable}", flush=True)
        await gc.apply([(i, Put(b"key-%d" % i, data_for(i))) for i in range(first, last + 1)])
        print(f"applied {last}", flush=True)
        slots.release()

    tasks = set()
    while True:
        await slots.acquire()
        n = rng.randint(1, 8)
        task = loop.create_task(one(next_index, n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_index += n


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
