"""The sequential specification the checker linearizes against: one register.

The store is checked key by key (P-compositionality: a history is
linearizable iff every key's sub-history is), so the model is a single
register whose state is its value, None meaning absent. An op of status
"info" had an unknown outcome, so its result constrains nothing; it still
changes the register when placed.
"""

from __future__ import annotations

from dataclasses import replace

from tests.chaos.history import KINDS, STATUSES, Op

State = str | None


def step(state: State, op: Op, info: bool) -> tuple[bool, State]:
    """Apply `op` to the register: (the op's recorded outcome is possible, new state)."""
    kind = op.kind
    if kind == "put":
        return True, op.value
    if kind == "get":
        return info or op.result == state, state
    if kind == "delete":
        # A delete always leaves the key absent; `ok` says whether it was present.
        return info or op.ok is None or op.ok == (state is not None), None
    matches = state == op.expected
    if info or op.ok is None:
        return True, op.value if matches else state
    if op.ok:
        return matches, op.value
    return not matches, state


def show(state: State) -> str:
    """A register state for messages: the value quoted, or "absent"."""
    return "absent" if state is None else repr(state)


def requirement(op: Op) -> str:
    """What the register must hold for `op` to take effect as it was answered."""
    if op.status == "info" or op.kind == "put":
        return "can take effect in any state"
    if op.kind == "get":
        return f"needs the register to hold {show(op.result)}"
    if op.kind == "delete":
        if op.ok is None:
            return "can take effect in any state"
        return "needs the key present" if op.ok else "needs the key absent"
    if op.ok is None:
        return "can take effect in any state"
    if op.ok:
        return f"needs the register to hold {show(op.expected)}"
    return f"needs the register to hold anything but {show(op.expected)}"


def validate(op: Op) -> None:
    """Reject ops the model cannot read, rather than check them wrongly."""
    if op.kind not in KINDS:
        raise ValueError(f"unknown op kind {op.kind!r}: {op}")
    if op.status not in STATUSES:
        raise ValueError(f"unknown op status {op.status!r}: {op}")
    if op.kind in ("put", "cas") and op.value is None:
        raise ValueError(f"{op.kind} without a value: {op}")
    if op.status != "info" and (op.complete is None or op.complete < op.invoke):
        raise ValueError(f"{op.status} op without a completion at or after its invocation: {op}")


def merge_unread_values(ops: list[Op]) -> list[Op]:
    """`ops` with every value written but never read replaced by one stand-in.

    No op can tell two such values apart (reads and cas compare only against
    values some op reads), so the register states they give are equivalent and
    the search may treat them as one: fewer distinct configurations to visit.
    """
    read = {op.result for op in ops if op.kind == "get"}
    read |= {op.expected for op in ops if op.kind == "cas"}
    stand_in = "<unread>"
    while stand_in in read:
        stand_in += "'"
    return [
        replace(op, value=stand_in) if op.kind in ("put", "cas") and op.value not in read else op
        for op in ops
    ]
