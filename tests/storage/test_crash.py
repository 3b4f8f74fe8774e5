"""Crash safety: SIGKILL a process in the middle of group commits; everything it
reported durable is there after reopening, and the environment opens."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvstore.storage import Storage

from . import crash_child

CHILD = Path(crash_child.__file__)
ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 15.0  # seconds for one run of the child, start to kill


def run_and_kill(data_dir: Path, min_reports: int) -> tuple[int, int, int]:
    """Run the child until it reported ``min_reports`` durable indexes (and a bit
    more), SIGKILL it, and return (start index, max durable, max applied)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + DEADLINE
        durable_reports = 0
        while durable_reports < min_reports:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"child reported only {durable_reports} durable indexes in time")
            if not sel.select(timeout=remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"child exited early: {err}")
            buf += chunk
            *complete, buf = buf.split(b"\n")
            lines += [c.decode() for c in complete]
            durable_reports = sum(1 for line in lines if line.startswith("durable"))
        proc.kill()  # SIGKILL to this child's PID only, mid-commit
    finally:
        if proc.poll() is None:
            proc.kill()
        out, _ = proc.communicate(timeout=DEADLINE)
    # Lines already in the pipe were printed after their commit: they count too.
    lines += (buf + out).decode().splitlines()
    assert proc.returncode == -9
    start = next(int(line.split()[1]) for line in lines if line.startswith("start"))
    durable = [int(line.split()[1]) for line in lines if line.startswith("durable")]
    applied = [int(line.split()[1]) for line in lines if line.startswith("applied")]
    return start, max(durable), max(applied, default=0)


def verify(data_dir: Path, start: int, max_durable: int, max_applied: int) -> None:
    with Storage(data_dir, map_size=crash_child.MAP_SIZE) as s:
        last = s.log.last_index()
        assert last >= max_durable, f"reported durable {max_durable}, log ends at {last}"
        for first, batch in s.log.iter_batches(1):
            for offset, e in enumerate(batch):
                assert e == crash_child.entry_for(first + offset)
        assert s.log.first_index() == 1
        assert s.stable.current_term() >= crash_child.term_for(max_durable)
        applied = s.data.applied_index()
        assert applied >= max_applied
        assert s.data.revision() == applied  # one put per index, nothing lost or doubled
        assert len(s.data.range().kvs) == applied
        for i in range(1, applied + 1):
            kv = s.data.get(b"key-%d" % i)
            assert kv is not None and kv.value == crash_child.data_for(i)
    assert start >= 1


@pytest.mark.timeout(60)
def test_sigkill_during_group_commits_loses_nothing_reported(tmp_path: Path) -> None:
    data_dir = tmp_path / "node"
    start, durable, applied = run_and_kill(data_dir, min_reports=300)
    assert start == 1 and durable > 300
    verify(data_dir, start, durable, applied)
    # Again on the same directory: the child resumes after what is there.
    start2, durable2, applied2 = run_and_kill(data_dir, min_reports=200)
    assert start2 > durable
    verify(data_dir, start2, durable2, applied2)
