"""The slow-disk shim delays LMDB's commits in a process started with it, and only there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.chaos.slowdisk import DELAY_ENV, build_shim, set_delay

# One LMDB write transaction (synced, as kvstore's are) and its duration.
_COMMIT = """
import sys, time, lmdb
env = lmdb.open(sys.argv[1], map_size=1 << 20)
started = time.monotonic()
with env.begin(write=True) as txn:
    txn.put(b"k", b"v")
print(time.monotonic() - started)
"""


def _commit_seconds(tmp_path: Path, env: dict[str, str]) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _COMMIT, str(tmp_path / "db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return float(done.stdout)


def test_the_delay_file_slows_every_commit_while_it_says_so(tmp_path: Path) -> None:
    shim = build_shim(tmp_path / "shim")
    assert build_shim(tmp_path / "shim") == shim  # built once
    delay_file = tmp_path / "delay"
    env = {**os.environ, "LD_PRELOAD": str(shim), DELAY_ENV: str(delay_file)}
    set_delay(delay_file, 400)
    # A lower bound: the commit cannot be faster than the injected delay.
    assert _commit_seconds(tmp_path, env) >= 0.4
    set_delay(delay_file, 0)
    assert delay_file.read_text() == "0"
    _commit_seconds(tmp_path, env)  # and with 0 (or no file) it still works
    delay_file.unlink()
    _commit_seconds(tmp_path, env)
