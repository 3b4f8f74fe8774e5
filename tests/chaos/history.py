"""Client histories of the chaos tests: the operations as clients saw them.

The chaos harness records one `Op` per client request with a `Recorder`, saves
the history as JSON lines (so a failing run can be re-checked by hand) and
gives it to the linearizability checker (`tests.chaos.lincheck`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

KINDS = ("put", "get", "delete", "cas")
STATUSES = ("ok", "fail", "info")


@dataclass(frozen=True)
class Op:
    """One operation of one client, as completed.

    status "fail" means definitely not applied, "info" means the outcome is
    unknown (timeout, crash): the op may take effect at any time after its
    invocation, or never.
    """

    process: int  # client id; one client runs one op at a time
    kind: str  # "put" | "get" | "delete" | "cas"
    key: str
    value: str | None  # put: the value written; cas: the new value; get/delete: None
    expected: str | None  # cas only: expected current value; None means "expected absent"
    invoke: float  # client-side monotonic time (seconds) of the invocation
    complete: float | None  # time of the ok/fail; None for info (outcome unknown)
    status: str  # "ok" | "fail" | "info"
    result: str | None  # get: value read (None = key absent)
    ok: bool | None  # cas: swapped or not (status ok); delete: a key was deleted; else None

    def describe(self) -> str:
        """A one-line account of the op, for checker explanations and logs."""
        if self.kind == "put":
            what = f"put {self.key} {self.value!r}"
        elif self.kind == "get":
            shown = "absent" if self.result is None else repr(self.result)
            what = f"get {self.key} -> {shown}" if self.status == "ok" else f"get {self.key}"
        elif self.kind == "delete":
            what = f"delete {self.key}" + ("" if self.ok is None else f" -> {self.ok}")
        else:
            exp = "absent" if self.expected is None else repr(self.expected)
            what = f"cas {self.key} {exp}->{self.value!r}"
            if self.ok is not None:
                what += f" -> {self.ok}"
        end = "?" if self.complete is None else f"{self.complete:.6f}"
        return f"{self.status} {what} by p{self.process} at [{self.invoke:.6f}, {end}]"


def op_to_json(op: Op) -> str:
    """One JSON line for an op (field names as in `Op`)."""
    return json.dumps(asdict(op), sort_keys=True)


def op_from_json(line: str) -> Op:
    """The op of one JSON line; unknown fields are an error (a format mismatch)."""
    data: dict[str, Any] = json.loads(line)
    return Op(**data)


def write_jsonl(path: str | Path, ops: Iterable[Op]) -> None:
    """Write a history as JSON lines, one op per line."""
    with open(path, "w", encoding="utf-8") as f:
        for op in ops:
            f.write(op_to_json(op))
            f.write("\n")


def read_jsonl(path: str | Path) -> list[Op]:
    """Read a history written by `write_jsonl` (blank lines are skipped)."""
    with open(path, encoding="utf-8") as f:
        return [op_from_json(line) for line in f if line.strip()]


class Recorder:
    """Records ops of concurrent clients of one asyncio loop (one thread).

    `invoke` stamps the invocation time and returns a handle; the client then
    calls exactly one of `ok`, `fail` or `info` with it. An op never completed
    (the client was cancelled mid-request) counts as info: it may have applied.
    """

    def __init__(self) -> None:
        self._ops: list[Op] = []
        self._done: list[bool] = []

    def invoke(
        self,
        process: int,
        kind: str,
        key: str,
        value: str | None = None,
        expected: str | None = None,
    ) -> int:
        """Record the invocation now; the returned handle completes it."""
        if kind not in KINDS:
            raise ValueError(f"unknown op kind {kind!r}")
        op = Op(
            process=process,
            kind=kind,
            key=key,
            value=value,
            expected=expected,
            invoke=time.monotonic(),
            complete=None,
            status="info",
            result=None,
            ok=None,
        )
        self._ops.append(op)
        self._done.append(False)
        return len(self._ops) - 1

    def _complete(self, handle: int, **changes: Any) -> None:
        if self._done[handle]:
            raise RuntimeError(f"op {handle} completed twice: {self._ops[handle].describe()}")
        self._done[handle] = True
        self._ops[handle] = replace(self._ops[handle], **changes)

    def ok(self, handle: int, result: str | None = None, ok: bool | None = None) -> None:
        """The op succeeded: `result` is a get's value, `ok` a cas/delete outcome."""
        self._complete(handle, complete=time.monotonic(), status="ok", result=result, ok=ok)

    def fail(self, handle: int) -> None:
        """The op definitely did not take effect."""
        self._complete(handle, complete=time.monotonic(), status="fail")

    def info(self, handle: int) -> None:
        """The outcome of the op is unknown: it may or may not have taken effect."""
        self._complete(handle, status="info")

    def ops(self) -> list[Op]:
        """All ops so far, in invocation order; open ones are reported as info."""
        return list(self._ops)
