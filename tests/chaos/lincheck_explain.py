"""Human-readable accounts of why a key's history has no linearization.

The search reports the first completion no linearization reaches (`Stuck`);
this module turns it into a message and, where one of a few classic anomalies
provably explains the failure (a read of a value never written or only
written by a failed op, a read from the future, a stale read, a read of an
older value than an earlier read saw, a lost update), names it with the ops
involved.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tests.chaos.history import Op
from tests.chaos.lincheck_model import State, requirement, show
from tests.chaos.lincheck_search import Stuck

# At most this many lines list the states or the open ops.
_LINES = 12


def explain(key: str, key_ops: list[Op], stuck: Stuck) -> str:
    """The message for a key without linearization; `key_ops` are all its ops."""
    failed = sum(1 for op in key_ops if op.status == "fail")
    info = sum(1 for op in key_ops if op.status == "info")
    open_done = [op for op in stuck.open_ops if op.status != "info"]
    open_info = [op for op in stuck.open_ops if op.status == "info"]
    lines = [
        f"key {key!r} is not linearizable ({len(key_ops)} ops: {failed} failed and dropped, "
        f"{info} of unknown outcome)."
    ]
    anomaly = diagnose([stuck.op, *open_done], key_ops)
    if anomaly:
        lines.append(anomaly)
    lines.append(
        f"The {stuck.completed} ops (of {stuck.total}) that completed before this one fit a "
        "linearization, but none lets it take effect before it completed:"
    )
    lines.append(f"  {stuck.op.describe()}: {requirement(stuck.op)}")
    states: dict[str, int] = {}
    for state, setter, _ in stuck.configurations:
        line = f"  {show(state)}, " + (
            "as at the start" if setter is None else f"set by {setter.describe()}"
        )
        states[line] = states.get(line, 0) + 1
    lines.append("The register could then hold only:")
    if len(stuck.configurations) > len(states):
        lines[-1] = (
            f"The register could then hold only ({len(stuck.configurations)} configurations, "
            "which differ also in the open ops already applied):"
        )
    lines.extend(_cut(list(states)))
    if open_done:
        lines.append("Other ops open then (invoked, not completed):")
        lines.extend(_cut([f"  {op.describe()}" for op in open_done]))
    if open_info:
        lines.append(
            f"{len(open_info)} ops of unknown outcome could still take effect, the latest:"
        )
        lines.extend(f"  {op.describe()}" for op in open_info[-3:])
    return "\n".join(lines)


def _cut(lines: list[str]) -> list[str]:
    if len(lines) <= _LINES:
        return lines
    return [*lines[: _LINES - 1], f"  ... and {len(lines) - _LINES + 1} more"]


def diagnose(suspects: list[Op], key_ops: list[Op]) -> str | None:
    """A proven anomaly involving one of `suspects` (in that order), or None."""
    rules: list[Callable[[Op, list[Op]], str | None]] = [
        _unwritten_read,
        _future_read,
        _stale_read,
        _read_after_read,
        _lost_update,
    ]
    for op in suspects:
        for rule in rules:
            found = rule(op, key_ops)
            if found:
                return found
    return None


def _observed(op: Op) -> tuple[bool, State]:
    """Whether `op` read the register, and what it read (a successful cas reads too)."""
    if op.status != "ok":
        return False, None
    if op.kind == "get":
        return True, op.result
    if op.kind == "cas" and op.ok:
        return True, op.expected
    return False, None


def _writes(op: Op) -> tuple[bool, State]:
    """Whether `op` may set the register, and to what."""
    if op.kind == "put":
        return True, op.value
    if op.kind == "delete":
        return True, None
    if op.kind == "cas" and op.ok is not False:
        return True, op.value
    return False, None


def _writers(value: State, key_ops: list[Op], exclude: tuple[Op, ...] = ()) -> list[Op]:
    """The ops that did not fail and may have set the register to `value`."""
    return [
        op
        for op in key_ops
        if op.status != "fail"
        and all(op is not x for x in exclude)
        and _writes(op) == (True, value)
    ]


def _write_of(value: State) -> str:
    return "delete" if value is None else f"write of {value!r}"


def _end(op: Op) -> float:
    return math.inf if op.status == "info" or op.complete is None else op.complete


def _unwritten_read(reader: Op, key_ops: list[Op]) -> str | None:
    seen, value = _observed(reader)
    if not seen or value is None or _writers(value, key_ops):
        return None
    failed = [op for op in key_ops if op.status == "fail" and _writes(op) == (True, value)]
    if failed:
        return (
            f"{reader.describe()} observed {value!r}, but {value!r} was only written by "
            f"{failed[0].describe()}, which failed (did not take effect)."
        )
    return f"{reader.describe()} observed {value!r}, a value no op ever wrote."


def _future_read(reader: Op, key_ops: list[Op]) -> str | None:
    seen, value = _observed(reader)
    if not seen or value is None:
        return None
    writers = _writers(value, key_ops)
    assert reader.complete is not None
    if not writers or any(op.invoke <= reader.complete for op in writers):
        return None
    return (
        f"{reader.describe()} observed {value!r} before any write of it began: the first, "
        f"{min(writers, key=lambda op: op.invoke).describe()}, started later."
    )


def _stale_read(reader: Op, key_ops: list[Op]) -> str | None:
    seen, value = _observed(reader)
    if not seen:
        return None
    # The start state (absent) counts as a write of "absent" before everything.
    last_write = max((_end(op) for op in _writers(value, key_ops)), default=-math.inf)
    for op in key_ops:
        writes, new = _writes(op)
        if (
            op.status == "ok"
            and writes
            and new != value
            and (op.kind != "cas" or op.ok)
            and _end(op) < reader.invoke
            and op.invoke > last_write
        ):
            done = "deleted the key" if new is None else f"wrote {new!r}"
            return (
                f"{reader.describe()} observed {show(value)}, a stale read: {op.describe()} "
                f"{done} and ended at {_end(op):.6f}, before the read began at "
                f"{reader.invoke:.6f}, and every {_write_of(value)} had ended before it "
                f"began (the last at {last_write:.6f})."
            )
    return None


def _read_after_read(reader: Op, key_ops: list[Op]) -> str | None:
    seen, value = _observed(reader)
    if not seen:
        return None
    assert reader.complete is not None
    writers = [
        (-math.inf if op is None else op.invoke, -math.inf if op is None else _end(op))
        for op in [*_writers(value, key_ops), *([None] if value is None else [])]
    ]
    for earlier in key_ops:
        seen_before, before = _observed(earlier)
        if (
            seen_before
            and before != value
            and _end(earlier) < reader.invoke
            and not any(
                end >= earlier.invoke and start <= reader.complete for start, end in writers
            )
        ):
            return (
                f"{reader.describe()} observed {show(value)} after {earlier.describe()} had "
                f"observed {show(before)}, and no {_write_of(value)} could come between them."
            )
    return None


def _lost_update(cas: Op, key_ops: list[Op]) -> str | None:
    if not (cas.status == "ok" and cas.kind == "cas" and cas.ok and cas.value != cas.expected):
        return None
    for other in key_ops:
        if (
            other is cas
            or other.status != "ok"
            or other.kind != "cas"
            or not other.ok
            or other.expected != cas.expected
            or other.value == other.expected
        ):
            continue
        first = min(cas.invoke, other.invoke)
        last = max(_end(cas), _end(other))
        between = [
            op
            for op in _writers(cas.expected, key_ops, exclude=(cas, other))
            if not (_end(op) < first or op.invoke > last)
        ]
        if not between:
            return (
                f"lost update: {cas.describe()} and {other.describe()} both swapped from "
                f"{show(cas.expected)}, but no {_write_of(cas.expected)} could come "
                "between them."
            )
    return None
