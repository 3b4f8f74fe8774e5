"""The set of register configurations a history can be in at one instant.

A configuration is the register state, the ops already placed ahead of their
completion (ops that took effect but whose response the client had not yet
seen) and the info ops placed so far. The search keeps, between two
completions, every configuration reachable so far, minus those another one
dominates. Two facts make that pruning strong:

- a value no op still to place reads (a get's result or a cas's expected
  value) is dead: no op can tell it from any other dead value, so dead values
  compare as one;
- info ops with the same effect (kind, value compared as above, expected) are
  interchangeable once invoked, and all configurations at one instant have
  seen the same invocations, so a configuration that used no more info ops of
  any effect than another, and is otherwise alike, can do all that one can.
"""

from __future__ import annotations

from tests.chaos.history import Op
from tests.chaos.lincheck_model import State
from tests.chaos.lincheck_normal import Chain

Effect = tuple[str, object, str | None]

# The canonical form of a dead value.
_DEAD = object()


class Values:
    """Which values are still read, and the info ops' effects in those terms."""

    def __init__(self, ops: list[Op], info: list[bool], bit: list[int]) -> None:
        self._ops = ops
        # value -> completed ops (as bits) that read it; an info cas reads its
        # expected value whenever it is placed, so those values never die.
        self._readers: dict[str, int] = {}
        self._always_read: set[str] = set()
        self._info_ops: dict[int, int] = {}  # bit position of an info op -> op
        for i, op in enumerate(ops):
            if info[i]:
                self._info_ops[bit[i].bit_length() - 1] = i
                if op.kind == "cas" and op.expected is not None:
                    self._always_read.add(op.expected)
                continue
            read = op.result if op.kind == "get" else op.expected if op.kind == "cas" else None
            if read is not None:
                self._readers[read] = self._readers.get(read, 0) | bit[i]

    def canon(self, value: State, done: int) -> object:
        """`value`, or the one dead value if no completed op outside `done` reads it."""
        if value is None or value in self._always_read or self._readers.get(value, 0) & ~done:
            return value
        return _DEAD

    def used(self, info: int, done: int) -> dict[Effect, int]:
        """How many info ops of each effect the bitset `info` holds."""
        used: dict[Effect, int] = {}
        while info:
            low = info & -info
            info ^= low
            op = self._ops[self._info_ops[low.bit_length() - 1]]
            effect = (op.kind, self.canon(op.value, done), op.expected)
            used[effect] = used.get(effect, 0) + 1
        return used


class Config:
    """One configuration; `setter` is the op that gave the register its state
    (-1: the initial absent state), kept for explanations."""

    __slots__ = ("ahead", "chain", "dropped", "info", "setter", "state")

    def __init__(
        self, state: State, ahead: int, info: int, setter: int, chain: Chain = None
    ) -> None:
        self.state = state
        self.ahead = ahead  # bits of the completed ops placed before their completion
        self.info = info  # bits of the info ops placed
        self.setter = setter
        self.chain = chain  # see lincheck_search
        self.dropped = False  # another configuration covers it


class Frontier:
    """The configurations at one instant, with none dominated by another.
    `done` holds the ops completed by then."""

    def __init__(self, values: Values, done: int) -> None:
        self._values = values
        self._done = done
        self._groups: dict[tuple[int, object, tuple[object, ...] | None], list[Config]] = {}

    def __len__(self) -> int:
        return sum(len(group) for group in self._groups.values())

    def configs(self) -> list[Config]:
        return [config for group in self._groups.values() for config in group]

    def _covers(self, a: Config, b: Config) -> bool:
        """`a` can do all `b` can (both alike but for the info ops placed): each
        info op only `a` placed has a twin only `b` placed."""
        only_a = a.info & ~b.info
        if only_a == 0:
            return True
        only_b = b.info & ~a.info
        if only_a.bit_count() > only_b.bit_count():
            return False
        done = self._done | a.ahead
        used_b = self._values.used(only_b, done)
        return all(used_b.get(e, 0) >= n for e, n in self._values.used(only_a, done).items())

    def add(self, config: Config) -> bool:
        """Add `config` unless one already there covers it; drop those it covers."""
        done = self._done | config.ahead
        canon = self._values.canon
        chain = None if config.chain is None else tuple(canon(s, done) for s in config.chain)
        key = (config.ahead, canon(config.state, done), chain)
        group = self._groups.setdefault(key, [])
        if any(self._covers(old, config) for old in group):
            return False
        kept = []
        for old in group:
            if self._covers(config, old):
                old.dropped = True
            else:
                kept.append(old)
        kept.append(config)
        self._groups[key] = kept
        return True
