"""Concurrent writers that record which writes were acknowledged.

Each writer is a thread with a client of its own and writes keys nobody else
writes (``prefix/WW/IIII`` = ``WW-IIII``), once each, so that afterwards

- every acknowledged key must be present with its value (no acknowledged write
  lost);
- every present key must have version 1: the client retries a write with the
  same RequestId across failovers, and a write applied twice would show as
  version 2 (exactly-once);
- a key whose write failed as *not applied* must be absent, one whose outcome
  is unknown may be either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from kvstore.client import Client, KeyValue, KVError, NotApplied


class Load:
    def __init__(
        self,
        endpoints: Sequence[str],
        prefix: str,
        writers: int = 8,
        per_writer: int = 50,
        timeout: float = 15.0,
    ) -> None:
        self.endpoints = list(endpoints)
        self.prefix = prefix
        self.writers = writers
        self.per_writer = per_writer
        self.timeout = timeout
        self.acked: dict[str, str] = {}
        self.unknown: dict[str, KVError] = {}
        self.not_applied: dict[str, KVError] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._write, args=(w,), name=f"writer-{w}", daemon=True)
            for w in range(writers)
        ]

    def key(self, writer: int, i: int) -> str:
        return f"{self.prefix}/{writer:02d}/{i:04d}"

    def start(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def _write(self, w: int) -> None:
        # Writers start on different members: some write through the leader,
        # some through followers that forward (and lose their stream on a crash).
        n = len(self.endpoints)
        endpoints = [self.endpoints[(w + j) % n] for j in range(n)]
        with Client(endpoints, timeout=self.timeout) as client:
            for i in range(self.per_writer):
                if self._stop.is_set():
                    return
                key, value = self.key(w, i), f"{w:02d}-{i:04d}"
                try:
                    client.put(key, value)
                except NotApplied as exc:
                    with self._lock:
                        self.not_applied[key] = exc
                except KVError as exc:  # OutcomeUnknown, or anything else: maybe applied
                    with self._lock:
                        self.unknown[key] = exc
                else:
                    with self._lock:
                        self.acked[key] = value

    def wait_acked(self, count: int, timeout: float) -> None:
        """Block until ``count`` writes were acknowledged (fails after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.acked) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"only {len(self.acked)} of {count} writes acknowledged in {timeout} s; "
                    f"unknown {len(self.unknown)}, not applied {len(self.not_applied)}"
                )
            if not any(t.is_alive() for t in self._threads):
                raise RuntimeError(f"the writers finished with only {len(self.acked)} acked")
            time.sleep(0.01)

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float) -> None:
        """Wait for every writer to finish (each write is bounded by the client's timeout)."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        assert not alive, f"writers still running after {timeout} s: {alive}"

    @property
    def attempted(self) -> int:
        return len(self.acked) + len(self.unknown) + len(self.not_applied)

    def check(self, kvs: Sequence[KeyValue]) -> None:
        """Assert the invariants of the module docstring against the keys found."""
        found = {kv.key.decode(): kv for kv in kvs}
        lost = sorted(k for k in self.acked if k not in found)
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        wrong = sorted(k for k, v in self.acked.items() if found[k].value.decode() != v)
        assert not wrong, f"acknowledged writes with another value: {wrong[:5]}"
        twice = sorted(k for k, kv in found.items() if kv.version != 1)
        assert not twice, f"writes applied more than once (version > 1): {twice[:5]}"
        applied_anyway = sorted(k for k in self.not_applied if k in found)
        assert not applied_anyway, f"writes reported not applied are present: {applied_anyway}"
        strangers = sorted(set(found) - set(self.acked) - set(self.unknown))
        assert not strangers, f"keys nobody wrote (or wrote successfully): {strangers[:5]}"
        revisions = [kv.mod_revision for kv in found.values()]
        assert len(set(revisions)) == len(revisions), "two writes share one revision"
