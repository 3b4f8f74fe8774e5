"""Linearizability checker for recorded client histories of the store.

`check(ops)` says whether a history (tests.chaos.history) is linearizable
with respect to a register per key: P-compositionality lets each key be
checked on its own. Ops of status "fail" did not happen and are dropped; ops
of status "info" may have taken effect at any time after their invocation, or
never, and their results constrain nothing (reads among them are dropped).
A quick depth-first search (lincheck_dfs) looks for a linearization; if it
finds none, an exhaustive one (lincheck_search) decides and says where the
history fails, which lincheck_explain puts in words. Both look for
linearizations of the normal form of lincheck_normal, against the register of
lincheck_model. The answer is never "ok" unless a linearization was found for
every key: a search cut by the timeout is reported as unknown.

Run `python -m tests.chaos.lincheck HISTORY.jsonl...` to check saved histories.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from dataclasses import dataclass

from tests.chaos.history import Op, read_jsonl
from tests.chaos.lincheck_dfs import find
from tests.chaos.lincheck_explain import explain
from tests.chaos.lincheck_model import validate
from tests.chaos.lincheck_normal import Prepared, SearchTimeout
from tests.chaos.lincheck_search import Stuck, search

# The budget of the quick search (lincheck_dfs), in steps: on simulated
# histories it needed 5 to 70 per op to find a linearization; when it needs
# far more, the exhaustive search is faster.
_QUICK_STEPS_PER_OP = 100
_QUICK_STEPS = 20_000


@dataclass(frozen=True)
class CheckResult:
    """The verdict on a history. `ok` is True only when a linearization was found
    for every key; `unknown` means the timeout cut the search (then `ok` is False)."""

    ok: bool
    keys_checked: int
    bad_key: str | None = None  # the key without a linearization, or the one the timeout cut
    explanation: str = ""
    unknown: bool = False


def relevant(op: Op) -> bool:
    """Whether `op` can constrain the history: failed ops and info reads cannot."""
    return op.status != "fail" and not (op.status == "info" and op.kind == "get")


def check_key(key_ops: list[Op], deadline: float) -> Stuck | None:
    """None if one key's ops are linearizable, else where they are not: the quick
    search first, then, if it found nothing, the exhaustive one."""
    key = Prepared.of([op for op in key_ops if relevant(op)])
    if find(key, deadline, budget=_QUICK_STEPS_PER_OP * len(key.ops) + _QUICK_STEPS):
        return None
    return search(key, deadline)


def check(ops: list[Op], timeout: float = 60.0) -> CheckResult:
    """Check that `ops` is linearizable, key by key, within `timeout` seconds in all."""
    deadline = time.monotonic() + timeout
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        validate(op)
        by_key[op.key].append(op)
    done = 0
    for key in sorted(by_key):
        key_ops = by_key[key]
        try:
            stuck = check_key(key_ops, deadline)
        except SearchTimeout:
            return CheckResult(
                ok=False,
                keys_checked=done,
                bad_key=key,
                unknown=True,
                explanation=(
                    f"linearizability unknown: the {timeout:g} s timeout hit while checking "
                    f"key {key!r} ({len(key_ops)} ops); {done} of {len(by_key)} keys "
                    "were checked and linearizable before it"
                ),
            )
        done += 1
        if stuck is not None:
            return CheckResult(
                ok=False, keys_checked=done, bad_key=key, explanation=explain(key, key_ops, stuck)
            )
    return CheckResult(
        ok=True,
        keys_checked=done,
        explanation=f"linearizable: {len(ops)} ops over {done} keys",
    )


def main(argv: list[str]) -> int:
    """Check saved histories (JSON lines); exit 1 if any is not linearizable."""
    worst = 0
    for path in argv:
        result = check(read_jsonl(path))
        print(f"{path}: {'ok' if result.ok else 'NOT OK'}: {result.explanation}")
        worst = max(worst, 0 if result.ok else 1)
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
