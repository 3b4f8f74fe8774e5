"""The quick search of one key's history: a witness, if one is easy to find.

Wing & Gong's search as improved by Lowe and used by Porcupine: the call and
return events sorted by time form a doubly linked list; the search places
("lifts") any op whose call comes before the first remaining return, and
backtracks ("unlifts") when it reaches a return whose op it could not place.
A cache of visited configurations (completed ops placed, state, chain, and the
info ops placed, where fewer dominate more) keeps it from exploring one twice.
It tries completed ops before info ops, and places info ops only in the normal
form of lincheck_normal.

Depth first, it usually finds a linearization of a linearizable history in
tens of steps per op, several times faster than the exhaustive search, so it
runs first; but proving that none exists can take it exponential time (see
lincheck_search), so it gives up after a budget of steps and leaves the
answer to the exhaustive search.
"""

from __future__ import annotations

import math

from tests.chaos.lincheck_model import State, step
from tests.chaos.lincheck_normal import Chain, Clock, Prepared, place


class _Entries:
    """The call and return events in time order as a doubly linked list over
    arrays: entry 0 is the head, the last entry the tail."""

    def __init__(self, key: Prepared) -> None:
        events: list[tuple[float, int, int]] = []  # (time, 0 call / 1 return, op)
        for i, op in enumerate(key.ops):
            events.append((op.invoke, 0, i))
            end = math.inf if key.info[i] or op.complete is None else op.complete
            events.append((end, 1, i))
        events.sort()  # calls before returns at equal times: such ops count as concurrent
        size = len(events) + 2
        self.op = [-1] * size  # the op of each entry
        self.is_call = [False] * size
        self.match = [0] * size  # of a call entry: its return entry
        self.nxt = [*range(1, size + 1)]
        self.prv = [*range(-1, size - 1)]
        call_of = [0] * len(key.ops)
        for e, (_, kind, i) in enumerate(events, start=1):
            self.op[e] = i
            if kind == 0:
                self.is_call[e] = True
                call_of[i] = e
            else:
                self.match[call_of[i]] = e

    def lift(self, call: int) -> None:
        """Take a placed op's call and return out of the list."""
        nxt, prv = self.nxt, self.prv
        for e in (call, self.match[call]):
            nxt[prv[e]] = nxt[e]
            prv[nxt[e]] = prv[e]

    def unlift(self, call: int) -> None:
        """Put them back, in the reverse order."""
        nxt, prv = self.nxt, self.prv
        for e in (self.match[call], call):
            nxt[prv[e]] = e
            prv[nxt[e]] = e

    def needs_info(self, key: Prepared, state: State) -> bool:
        """Whether some open completed op cannot take effect in `state` (else no
        info op is worth placing now)."""
        e = self.nxt[0]
        while self.is_call[e]:
            i = self.op[e]
            if not key.info[i] and not step(state, key.model[i], False)[0]:
                return True
            e = self.nxt[e]
        return False


def find(key: Prepared, deadline: float, budget: int) -> bool:
    """Whether a linearization was found within `budget` steps (False: none
    exists, or the budget ran out). Raises SearchTimeout past `deadline`."""
    clock = Clock(deadline)
    info, model, twin, bit = key.info, key.model, key.twin, key.bit
    remaining = key.completed
    entries = _Entries(key)
    entry_op, is_call, nxt = entries.op, entries.is_call, entries.nxt
    state: State = None
    chain: Chain = None
    placed_done = 0  # bitset of the completed ops placed
    placed_info = 0  # bitset of the info ops placed
    cache: dict[tuple[int, State, Chain], list[int]] = {(0, None, None): [0]}
    stack: list[tuple[int, State, Chain]] = []  # (call entry placed, state and chain before)
    e = nxt[0]
    infos_pass = False  # each walk tries completed ops, then (second pass) info ops
    while remaining:
        clock.tick()
        if clock.steps > budget:
            return False
        if not is_call[e]:
            if not infos_pass and (chain is not None or entries.needs_info(key, state)):
                infos_pass = True
                e = nxt[0]
                continue
            # The op of this return could not be placed before it: backtrack.
            if not stack:
                return False
            e, state, chain = stack.pop()
            i = entry_op[e]
            infos_pass = info[i]
            if info[i]:
                placed_info &= ~bit[i]
            else:
                placed_done &= ~bit[i]
                remaining += 1
            entries.unlift(e)
            e = nxt[e]
            continue
        i = entry_op[e]
        if info[i] != infos_pass or (twin[i] >= 0 and not placed_info & bit[twin[i]]):
            e = nxt[e]
            continue
        possible, new_state, new_chain = place(state, chain, model[i], info[i])
        new_done, new_info = placed_done, placed_info
        if info[i]:
            new_info |= bit[i]
        else:
            new_done |= bit[i]
        if possible:
            seen = cache.setdefault((new_done, new_state, new_chain), [])
            if any(old & ~new_info == 0 for old in seen):
                possible = False  # visited, or one that placed fewer info ops was
            else:
                seen.append(new_info)
        if not possible:
            e = nxt[e]
            continue
        stack.append((e, state, chain))
        state, chain, placed_done, placed_info = new_state, new_chain, new_done, new_info
        if not info[i]:
            remaining -= 1
        entries.lift(e)
        e = nxt[0]
        infos_pass = False
    return True
