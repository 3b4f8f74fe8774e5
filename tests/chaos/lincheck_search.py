"""The exhaustive search of one key's history, which also says where it fails.

Lowe's just-in-time linearization ("Testing for linearizability", 2017), run
breadth first over time: the call and return events are taken in time order;
an op is placed ("linearized") only when it must be, at its completion,
possibly after other open ops; the frontier holds every configuration
reachable so far (see lincheck_frontier), pruned by dominance. The first
completion that no configuration reaches is where no linearization exists,
and the frontier just before it tells what the register could hold then.

Why not only Wing & Gong's depth-first search with a cache, as Porcupine
(lincheck_dfs, which runs first): to prove that no linearization exists it
must visit every configuration, and it visits those that used more info ops
before those that used fewer, redoing the work below each: 20 to 40 timed-out
writes in a 400-op history with one stale read near its end kept it busy past
a 20 s timeout, where this search takes a fraction of a second. Breadth first,
dominated configurations are never expanded.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tests.chaos.history import Op
from tests.chaos.lincheck_frontier import Config, Frontier, Values
from tests.chaos.lincheck_model import State, step
from tests.chaos.lincheck_normal import Clock, Prepared, place, sets


@dataclass(frozen=True)
class Stuck:
    """Where no linearization exists: `op` cannot take effect by its completion
    from any of the configurations the ops completed before it allow."""

    op: Op
    completed: int  # completed ops that fit before it
    total: int  # completed ops of the key
    # Each configuration just before: the state, the op that set it (None: the
    # initial state) and the ops placed ahead of their completion.
    configurations: list[tuple[State, Op | None, list[Op]]]
    open_ops: list[Op]  # the other ops invoked and not completed then (info ops too)


def search(key: Prepared, deadline: float) -> Stuck | None:
    """A linearization of one key's ops exists: None; else where it fails.
    Raises SearchTimeout once `deadline` has passed."""
    return _Search(key, Clock(deadline)).run()


class _Search:
    def __init__(self, key: Prepared, clock: Clock) -> None:
        self.key = key
        self.clock = clock
        self.values = Values(key.model, key.info, key.bit)
        self.open: list[int] = []  # completed ops invoked and not yet completed
        self.invoked_info: list[int] = []
        # The invoked info ops: blind writes, and cas by expected value.
        self.blind: list[int] = []
        self.swaps_from: dict[State, list[int]] = {}

    def _invoke(self, i: int) -> None:
        if not self.key.info[i]:
            self.open.append(i)
            return
        self.invoked_info.append(i)
        op = self.key.model[i]
        if op.kind == "cas":
            self.swaps_from.setdefault(op.expected, []).append(i)
        else:
            self.blind.append(i)

    def run(self) -> Stuck | None:
        key = self.key
        events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op)
        for i, op in enumerate(key.ops):
            events.append((op.invoke, 0, i))
            if not key.info[i]:
                assert op.complete is not None
                events.append((op.complete, 1, i))
        events.sort()  # calls before returns at equal times: such ops count as concurrent
        done = 0
        frontier = Frontier(self.values, done)
        frontier.add(Config(None, 0, 0, -1))
        completed = 0
        for _, kind, i in events:
            if kind == 0:
                self._invoke(i)
                continue
            bit = key.bit[i]
            reached = Frontier(self.values, done | bit)
            for config in frontier.configs():
                if config.ahead & bit:
                    reached.add(
                        Config(config.state, config.ahead & ~bit, config.info, config.setter)
                    )
                else:
                    for new in self._complete(i, config, done):
                        reached.add(new)
            done |= bit
            if not len(reached):
                return self._stuck(i, frontier, completed)
            self.open.remove(i)
            frontier = reached
            completed += 1
        return None

    def _complete(self, target: int, start: Config, done: int) -> list[Config]:
        """The configurations where `target` took effect, after any open ops;
        `done` holds the ops completed before."""
        found: list[Config] = []
        # Breadth first, so that configurations using fewer ops come first and
        # cover those using more.
        todo = deque([Config(start.state, start.ahead, start.info, start.setter)])
        reached = Frontier(self.values, done)
        bit, model, twin = self.key.bit, self.key.model, self.key.twin
        while todo:
            self.clock.tick()
            node = todo.popleft()
            if node.dropped:
                continue
            state, chain = node.state, node.chain
            for i in self.open:
                if node.ahead & bit[i]:
                    continue
                possible, new_state, new_chain = place(state, chain, model[i], False)
                if not possible:
                    continue
                setter = i if sets(state, model[i]) else node.setter
                if i == target:
                    found.append(Config(new_state, node.ahead, node.info, setter))
                    continue
                new = Config(new_state, node.ahead | bit[i], node.info, setter, new_chain)
                if reached.add(new):
                    todo.append(new)
            for i in self._useful_info(node):
                if node.info & bit[i] or (twin[i] >= 0 and not node.info & bit[twin[i]]):
                    continue
                possible, new_state, new_chain = place(state, chain, model[i], True)
                if not possible:
                    continue
                setter = i if sets(state, model[i]) else node.setter
                new = Config(new_state, node.ahead, node.info | bit[i], setter, new_chain)
                if reached.add(new):
                    todo.append(new)
        return found

    def _useful_info(self, node: Config) -> list[int]:
        """The info ops that may come next in the normal form: in a chain, a cas
        that swaps; to start one, also a blind write, and only if some open op
        cannot take effect in the state as it is."""
        swaps = self.swaps_from.get(node.state, [])
        if node.chain is not None:
            return swaps
        model, bit = self.key.model, self.key.bit
        for i in self.open:
            if not node.ahead & bit[i] and not step(node.state, model[i], False)[0]:
                return self.blind + swaps
        return []

    def _stuck(self, target: int, frontier: Frontier, completed: int) -> Stuck:
        ops, bit = self.key.ops, self.key.bit
        configs = frontier.configs()
        return Stuck(
            op=ops[target],
            completed=completed,
            total=self.key.completed,
            configurations=[
                (
                    # The true state: the search merges values nobody reads.
                    None if config.setter < 0 else ops[config.setter].value,
                    None if config.setter < 0 else ops[config.setter],
                    [ops[i] for i in self.open if config.ahead & bit[i]],
                )
                for config in configs
            ],
            open_ops=[ops[i] for i in self.open if i != target]
            + [
                ops[i]
                for i in self.invoked_info
                if not all(config.info & bit[i] for config in configs)
            ],
        )
