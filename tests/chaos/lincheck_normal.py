"""What the two searches of a key's history share: its preparation, the clock,
and the normal form of linearizations they look for.

Ops of unknown outcome ("info") never complete and may also never take
effect, as Knossos and Porcupine treat crashed ops. Left alone they make the
search exponential (a few dozen timed-out writes, each of which may have
happened anywhere), so the searches place them only in a normal form that
exists whenever any linearization does:

- just in time: a run of consecutive info ops (a chain) is followed by a
  completed op that could not take effect in the state before any op of the
  chain (else the rest of the chain from there can be dropped or moved after
  that op), and a blind write (put, delete) can only start a chain (it
  overwrites what the chain did before it);
- info ops of the same effect are placed in the order of their invocations
  (once invoked they are interchangeable).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from tests.chaos.history import Op
from tests.chaos.lincheck_model import State, merge_unread_values, step

# None outside a chain of info ops; in one, the states before each of its ops.
Chain = tuple[State, ...] | None

# How many search steps between two looks at the clock.
_CLOCK_EVERY = 2048


class SearchTimeout(Exception):
    """The deadline passed before the search of a key ended."""


class Clock:
    """Counts search steps and raises SearchTimeout once the deadline passed."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.steps = 0
        if time.monotonic() >= deadline:
            raise SearchTimeout

    def tick(self) -> None:
        self.steps += 1
        if self.steps % _CLOCK_EVERY == 0 and time.monotonic() >= self.deadline:
            raise SearchTimeout


@dataclass(frozen=True)
class Prepared:
    """One key's ops as the searches use them."""

    ops: list[Op]  # as recorded, for explanations
    model: list[Op]  # the same, values nobody reads merged (see merge_unread_values)
    info: list[bool]  # status "info"
    twin: list[int]  # of an info op: the one of the same effect invoked just before, or -1
    # Completed ops and info ops are numbered apart: the bit of each in its bitsets.
    bit: list[int]

    @classmethod
    def of(cls, ops: list[Op]) -> Prepared:
        info = [op.status == "info" for op in ops]
        model = merge_unread_values(ops)
        bit = [0] * len(ops)
        counts = [0, 0]
        for i in range(len(ops)):
            bit[i] = 1 << counts[info[i]]
            counts[info[i]] += 1
        return cls(ops, model, info, _earlier_twins(model, info), bit)

    @property
    def completed(self) -> int:
        """How many ops completed (are not info)."""
        return self.info.count(False)


def place(state: State, chain: Chain, op: Op, info: bool) -> tuple[bool, State, Chain]:
    """Whether the normal form lets `op` come next and it can: then the new state
    and chain."""
    if info:
        if chain is not None and op.kind in ("put", "delete"):
            return False, state, chain
        possible, new_state = step(state, op, True)
        return possible, new_state, (state,) if chain is None else (*chain, state)
    if (
        chain is not None
        and not (op.kind == "cas" and op.ok is None)
        and any(step(before, op, False)[0] for before in chain)
    ):
        return False, state, chain  # the chain, or its end, was not needed for this op
    possible, new_state = step(state, op, False)
    return possible, new_state, None


def sets(state: State, op: Op) -> bool:
    """Whether `op` gives the register its state (rather than reading it)."""
    return op.kind in ("put", "delete") or (op.kind == "cas" and state == op.expected)


def _earlier_twins(ops: list[Op], info: list[bool]) -> list[int]:
    twin = [-1] * len(ops)
    last: dict[tuple[str, str | None, str | None], int] = {}
    for i in sorted(range(len(ops)), key=lambda i: ops[i].invoke):
        if info[i]:
            effect = (ops[i].kind, ops[i].value, ops[i].expected)
            twin[i] = last.get(effect, -1)
            last[effect] = i
    return twin
