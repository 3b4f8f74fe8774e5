"""The environment: safe durability flags, durable and light writes, key limit,
map size on reopen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from kvstore.storage import MAX_KEY_SIZE, Put, Storage
from tests.chaos import slowdisk

ROOT = Path(__file__).resolve().parents[2]
FLUSH_DELAY_MS = 200

#: Run under the shim: one durable and one light write, timed; then exit
#: without closing the environment.
TIMED_WRITES = """
import os, sys, time
from kvstore.storage import Put, Storage
s = Storage(sys.argv[1], map_size=8 << 20)
times = []
for index, key, durable in ((1, b"durable", True), (2, b"light", False)):
    started = time.monotonic()
    with s.env.write(durable) as txn:
        s.data.apply_in(txn, [(index, Put(key, b"v"))])
    times.append(time.monotonic() - started)
print(*times, flush=True)
os._exit(0)
"""


def test_durability_flags_keep_the_file_intact(storage: Storage) -> None:
    # Every commit flushes its data pages; the meta page is flushed by durable
    # writes (MDB_NOMETASYNC keeps the database intact, LMDB documents).
    flags = storage.env._env.flags()
    assert flags["sync"] and not flags["metasync"]
    assert not flags["writemap"] and not flags["map_async"]


def test_a_durable_write_flushes_twice_a_light_one_once(tmp_path: Path) -> None:
    """Counted with the slow-disk shim: every flush of the child takes DELAY_MS
    longer. A durable write flushes its data pages and then its meta page; a
    write with ``durable=False`` (the apply of committed entries) only its data
    pages. What it committed is there after the process dies without closing
    (only a machine crash can undo it)."""
    shim = slowdisk.build_shim(tmp_path / "shim")
    delay_file = tmp_path / "delay"
    slowdisk.set_delay(delay_file, FLUSH_DELAY_MS)
    data_dir = tmp_path / "node"
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        LD_PRELOAD=str(shim),
        **{slowdisk.DELAY_ENV: str(delay_file)},
    )
    out = subprocess.run(
        [sys.executable, "-c", TIMED_WRITES, str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    durable, light = (float(x) for x in out.split())
    delay = FLUSH_DELAY_MS / 1000
    assert 2 * delay <= durable < 2.8 * delay, (durable, light)
    assert delay <= light < 1.8 * delay, (durable, light)
    with Storage(data_dir) as s:
        assert [kv.key for kv in s.data.range().kvs] == [b"durable", b"light"]
        assert s.data.applied_index() == 2


def test_lmdb_key_limit_is_the_api_limit(storage: Storage) -> None:
    assert storage.env.max_key_size == MAX_KEY_SIZE == 511


def test_reopen_with_a_smaller_map_keeps_the_data(data_dir: Path) -> None:
    with Storage(data_dir, map_size=8 << 20) as s:
        s.data.apply([(i, Put(b"k%d" % i, b"v" * 1000)) for i in range(1, 1001)])
        used = s.used_bytes()
    with Storage(data_dir, map_size=64 << 10) as s:  # LMDB grows it to the file size
        assert s.map_size >= used
        assert s.data.applied_index() == 1000
        assert len(s.data.range().kvs) == 1000
