"""Tests of the linearizability checker and of the history format.

Hand-written histories pin the model and the anomalies the checker must name;
random small histories are cross-checked, for the checker and for each of its
two searches, against a brute-force checker that tries every order allowed by
real time (and every subset of info ops); long histories from a simulated
linearizable store must be accepted, and one stale read in them found.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from tests.chaos.history import KINDS, Op, Recorder, read_jsonl, write_jsonl
from tests.chaos.lincheck import CheckResult, check, main, relevant
from tests.chaos.lincheck_dfs import find
from tests.chaos.lincheck_normal import Prepared
from tests.chaos.lincheck_search import search


def mk(
    process: int,
    kind: str,
    key: str,
    invoke: float,
    complete: float | None,
    *,
    value: str | None = None,
    expected: str | None = None,
    result: str | None = None,
    ok: bool | None = None,
    status: str = "ok",
) -> Op:
    return Op(process, kind, key, value, expected, invoke, complete, status, result, ok)


def put(p: int, t0: float, t1: float | None, v: str, key: str = "x", status: str = "ok") -> Op:
    return mk(p, "put", key, t0, t1, value=v, status=status)


def get(p: int, t0: float, t1: float, r: str | None, key: str = "x") -> Op:
    return mk(p, "get", key, t0, t1, result=r)


def cas(
    p: int,
    t0: float,
    t1: float | None,
    exp: str | None,
    new: str,
    ok: bool | None,
    key: str = "x",
    status: str = "ok",
) -> Op:
    return mk(p, "cas", key, t0, t1, value=new, expected=exp, ok=ok, status=status)


def delete(
    p: int, t0: float, t1: float | None, ok: bool | None, key: str = "x", status: str = "ok"
) -> Op:
    return mk(p, "delete", key, t0, t1, ok=ok, status=status)


def assert_linearizable(ops: list[Op]) -> None:
    result = check(ops)
    assert result.ok, result.explanation
    assert not result.unknown
    assert result.bad_key is None


def assert_rejected(ops: list[Op], key: str, *phrases: str) -> CheckResult:
    result = check(ops)
    assert not result.ok, "accepted a non-linearizable history"
    assert not result.unknown
    assert result.bad_key == key
    assert f"key {key!r}" in result.explanation
    for phrase in phrases:
        assert phrase in result.explanation, result.explanation
    return result


# --- linearizable histories ---------------------------------------------------------------


def test_sequential_history_of_every_kind_is_accepted() -> None:
    assert_linearizable(
        [
            get(1, 0, 1, None),
            put(1, 2, 3, "a"),
            get(1, 4, 5, "a"),
            cas(1, 6, 7, "a", "b", True),
            cas(1, 8, 9, "a", "c", False),
            get(1, 10, 11, "b"),
            delete(1, 12, 13, True),
            get(1, 14, 15, None),
            delete(1, 16, 17, False),
            cas(1, 18, 19, None, "d", True),
            cas(1, 20, 21, None, "e", False),
            delete(1, 22, 23, None),
            delete(1, 24, 25, None),
            get(1, 26, 27, None),
        ]
    )


def test_overlapping_ops_may_take_effect_in_either_order() -> None:
    # put b takes effect first, then put a; reads see each in turn.
    assert_linearizable(
        [
            put(1, 0, 10, "a"),
            put(2, 1, 9, "b"),
            get(3, 2, 3, "b"),
            get(3, 4, 5, "a"),
            get(3, 11, 12, "a"),
        ]
    )
    # A read overlapping a write may see the old or the new value.
    assert_linearizable(
        [put(1, 0, 1, "a"), put(2, 2, 6, "b"), get(3, 3, 4, "a"), get(4, 3, 5, "b")]
    )


def test_concurrent_cas_from_the_same_value_one_wins() -> None:
    assert_linearizable(
        [
            put(1, 0, 1, "a"),
            cas(1, 2, 5, "a", "b", True),
            cas(2, 2, 5, "a", "c", False),
            cas(3, 3, 4, "b", "d", True),
            get(1, 6, 7, "d"),
        ]
    )


def test_ops_touching_at_an_instant_count_as_concurrent() -> None:
    assert_linearizable([put(1, 0, 2, "a"), get(2, 2, 3, None)])


def test_info_write_that_took_effect_later() -> None:
    assert_linearizable(
        [
            put(1, 0, 1, "a"),
            put(2, 2, None, "b", status="info"),
            get(3, 3, 4, "a"),
            get(3, 10, 11, "b"),
            get(3, 12, 13, "b"),
        ]
    )


def test_info_write_that_never_took_effect() -> None:
    assert_linearizable(
        [
            put(1, 0, 1, "a"),
            put(2, 2, None, "b", status="info"),
            cas(4, 3, None, "a", "c", None, status="info"),
            delete(5, 3, None, None, status="info"),
            get(3, 3, 4, "a"),
            get(3, 10, 11, "a"),
        ]
    )


def test_info_cas_and_delete_that_took_effect() -> None:
    assert_linearizable(
        [
            put(1, 0, 1, "a"),
            cas(2, 2, None, "a", "b", None, status="info"),
            get(3, 5, 6, "b"),
            delete(4, 7, None, None, status="info"),
            get(3, 8, 9, None),
        ]
    )


def test_failed_ops_and_info_reads_are_dropped() -> None:
    assert_linearizable(
        [
            put(1, 0, 1, "a"),
            put(2, 2, 3, "b", status="fail"),
            cas(2, 4, 5, "a", "c", None, status="fail"),
            mk(3, "get", "x", 4, None, status="info"),
            get(1, 6, 7, "a"),
        ]
    )


def test_keys_are_independent_registers() -> None:
    result = check(
        [
            put(1, 0, 1, "a", key="x"),
            put(1, 2, 3, "b", key="y"),
            get(2, 4, 5, "a", key="x"),
            get(2, 6, 7, "b", key="y"),
            get(2, 8, 9, None, key="z"),
        ]
    )
    assert result.ok, result.explanation
    assert result.keys_checked == 3


def test_empty_history_is_linearizable() -> None:
    assert_linearizable([])


# --- non-linearizable histories -----------------------------------------------------------


def test_stale_read_after_an_acknowledged_overwrite() -> None:
    result = assert_rejected(
        [put(1, 0, 1, "a"), put(1, 2, 3, "b"), get(2, 4, 5, "a")], "x", "stale read"
    )
    assert "put x 'b'" in result.explanation


def test_lost_update() -> None:
    assert_rejected(
        [
            put(1, 0, 1, "a"),
            cas(1, 2, 5, "a", "b", True),
            cas(2, 3, 6, "a", "c", True),
        ],
        "x",
        "lost update",
        "cas x 'a'->'b'",
        "cas x 'a'->'c'",
    )


def test_read_of_a_value_never_written() -> None:
    assert_rejected([put(1, 0, 1, "a"), get(2, 2, 3, "zz")], "x", "'zz', a value no op ever wrote")


def test_read_of_a_deleted_value() -> None:
    assert_rejected(
        [put(1, 0, 1, "a"), delete(1, 2, 3, True), get(2, 4, 5, "a")],
        "x",
        "stale read",
        "deleted the key",
    )


def test_read_of_a_failed_write() -> None:
    assert_rejected(
        [put(1, 0, 1, "a"), put(2, 2, 3, "b", status="fail"), get(1, 4, 5, "b")],
        "x",
        "failed (did not take effect)",
    )


def test_read_before_the_write_began() -> None:
    assert_rejected(
        [get(1, 0, 1, "b"), put(2, 2, None, "b", status="info")], "x", "before any write of it"
    )


def test_new_then_old_value_is_rejected() -> None:
    # Once a read saw the concurrent write, a later read cannot miss it.
    assert_rejected(
        [put(1, 0, 10, "a"), get(2, 1, 2, "a"), get(2, 3, 4, None)],
        "x",
        "get x -> absent",
        "after ok get x -> 'a'",
        "no delete could come between them",
    )


def test_cas_and_delete_outcomes_must_match_the_state() -> None:
    assert_rejected([put(1, 0, 1, "a"), cas(1, 2, 3, "a", "b", False)], "x", "anything but 'a'")
    assert_rejected([delete(1, 0, 1, True)], "x", "needs the key present")
    assert_rejected([put(1, 0, 1, "a"), delete(1, 2, 3, False)], "x", "needs the key absent")


def test_the_bad_key_is_named_among_good_ones() -> None:
    result = assert_rejected(
        [
            put(1, 0, 1, "a", key="good"),
            put(1, 0, 1, "a", key="bad"),
            put(1, 2, 3, "b", key="bad"),
            get(2, 4, 5, "a", key="good"),
            get(2, 4, 5, "a", key="bad"),
        ],
        "bad",
    )
    assert result.keys_checked == 1  # "bad" sorts first; the check stops there


def test_timeout_reports_unknown_never_ok() -> None:
    result = check([put(1, 0, 1, "a")], timeout=0.0)
    assert not result.ok
    assert result.unknown
    assert result.keys_checked == 0
    assert "unknown" in result.explanation


def test_malformed_ops_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown op kind"):
        check([mk(1, "incr", "x", 0, 1)])
    with pytest.raises(ValueError, match="without a completion"):
        check([put(1, 0, None, "a")])


# --- history format -----------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path: Path) -> None:
    ops = [
        put(1, 0.5, 1.25, "a"),
        get(2, 1.0, 2.0, None),
        cas(3, 2.0, None, None, "b", None, status="info"),
        delete(4, 3.0, 4.0, True, key="k/\u00e9"),
        put(5, 4.0, 5.0, 'quote " and \n newline', status="fail"),
    ]
    path = tmp_path / "history.jsonl"
    write_jsonl(path, ops)
    assert read_jsonl(path) == ops
    assert len(path.read_text().splitlines()) == len(ops)


def test_command_line_checks_saved_histories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    write_jsonl(good, [put(1, 0, 1, "a"), get(2, 2, 3, "a")])
    write_jsonl(bad, [put(1, 0, 1, "a"), get(2, 2, 3, "b")])
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert f"{bad}: NOT OK: key 'x' is not linearizable" in out
    assert f"{good}: ok: linearizable" in out


def test_recorder_records_outcomes_in_invocation_order() -> None:
    rec = Recorder()
    a = rec.invoke(1, "put", "x", value="a")
    b = rec.invoke(2, "get", "x")
    c = rec.invoke(3, "cas", "x", value="b", expected="a")
    d = rec.invoke(4, "delete", "x")
    e = rec.invoke(5, "put", "x", value="c")
    rec.ok(b, result="a")
    rec.ok(a)
    rec.info(c)
    rec.fail(d)
    ops = rec.ops()
    assert [op.process for op in ops] == [1, 2, 3, 4, 5]
    assert [op.status for op in ops] == ["ok", "ok", "info", "fail", "info"]
    assert ops[1].result == "a" and ops[2].expected == "a" and ops[2].value == "b"
    assert ops[2].complete is None and ops[4].complete is None  # e never completed
    for op in (ops[0], ops[1], ops[3]):
        assert op.complete is not None and op.complete >= op.invoke
    with pytest.raises(RuntimeError, match="completed twice"):
        rec.ok(a)
    rec.ok(e)
    assert rec.ops()[4].status == "ok"
    with pytest.raises(ValueError):
        rec.invoke(6, "incr", "x")


# --- random histories ---------------------------------------------------------------------


def simulate(
    rng: random.Random,
    n_ops: int,
    procs: int,
    keys: Sequence[str],
    values: Sequence[str] | None,
    p_info: float = 0.1,
    p_fail: float = 0.1,
) -> list[Op]:
    """A history of `procs` clients of a linearizable store: every op takes effect
    at a random instant inside its interval (an info op, if at all, at any instant
    after its invocation; a failed op never), results computed in that order.
    `values` None writes a fresh value each time. Times fall on a grid, so that
    intervals also touch."""
    clocks = [rng.random() for _ in range(procs)]
    pids = list(range(procs))
    written: dict[str, list[str]] = {k: [] for k in keys}
    planned: list[tuple[float, int, Op, bool]] = []  # (effect instant, n, op, applied)
    for n in range(n_ops):
        slot = min(range(procs), key=lambda s: clocks[s])
        t0 = clocks[slot]
        point = t0 + rng.random()
        t1 = point + rng.random()
        kind = rng.choice(KINDS)
        key = rng.choice(keys)
        value = (rng.choice(values) if values else f"v{n}") if kind in ("put", "cas") else None
        expected = None
        if kind == "cas":
            expected = rng.choice([None, *(values or written[key][-3:])])
        if value is not None:
            written[key].append(value)
        fate = rng.random()
        status = "fail" if fate < p_fail else "info" if fate < p_fail + p_info else "ok"
        applied = status == "ok" or (status == "info" and rng.random() < 0.5)
        if status == "info":
            point = t0 + 3 * rng.random()
            pids[slot] = max(pids) + 1  # a client that gave up on an op is replaced
        lo, hi = math.floor(t0 * 20) / 20, math.ceil(t1 * 20) / 20
        op = mk(pids[slot], kind, key, lo, None if status == "info" else hi, status=status)
        planned.append((point, n, replace(op, value=value, expected=expected), applied))
        clocks[slot] = t1 + 0.05 + 0.2 * rng.random()
    regs: dict[str, str] = {}
    ops: list[Op] = []
    for _, _, op, applied in sorted(planned):
        if applied:
            cur = regs.get(op.key)
            if op.kind == "get":
                op = replace(op, result=cur)
            elif op.kind == "put":
                assert op.value is not None
                regs[op.key] = op.value
            elif op.kind == "delete":
                op = replace(op, ok=cur is not None)
                regs.pop(op.key, None)
            else:
                op = replace(op, ok=cur == op.expected)
                if cur == op.expected:
                    assert op.value is not None
                    regs[op.key] = op.value
        if op.status == "info":
            op = replace(op, ok=None)
        ops.append(op)
    return sorted(ops, key=lambda op: op.invoke)


def perturb(rng: random.Random, ops: list[Op], values: Sequence[str]) -> list[Op]:
    """Change one outcome at random: the result may or may not stay linearizable."""
    ops = list(ops)
    i = rng.randrange(len(ops))
    op = ops[i]
    if op.status == "info":
        ops[i] = replace(op, status="fail", complete=op.invoke + 0.5)
    elif op.status == "fail":
        assert op.complete is not None
        ops[i] = replace(op, status="info", complete=None)
    elif op.kind == "get":
        ops[i] = replace(op, result=rng.choice([None, "never", *values]))
    elif op.kind == "put":
        ops[i] = replace(op, status="fail")
    else:
        ops[i] = replace(op, ok=not op.ok)
    return ops


def brute_force(ops: list[Op]) -> bool:
    """Linearizable iff some subset of the info ops, with all completed ops, has an
    order consistent with real time in which every completed op's outcome is right,
    over all keys at once (so P-compositionality is checked too)."""
    ops = [
        op for op in ops if op.status != "fail" and not (op.status == "info" and op.kind == "get")
    ]
    ends = [math.inf if op.complete is None else op.complete for op in ops]
    before = [[j for j in range(len(ops)) if ends[j] < ops[i].invoke] for i in range(len(ops))]
    infos = [i for i, op in enumerate(ops) if op.status == "info"]
    done = {i for i, op in enumerate(ops) if op.status != "info"}

    def apply(regs: dict[str, str], op: Op) -> dict[str, str] | None:
        known = op.status == "ok"
        cur = regs.get(op.key)
        new = dict(regs)
        if op.kind == "get":
            return regs if not known or op.result == cur else None
        if op.kind == "put":
            assert op.value is not None
            new[op.key] = op.value
        elif op.kind == "delete":
            if known and op.ok is not None and op.ok != (cur is not None):
                return None
            new.pop(op.key, None)
        else:
            swapped = cur == op.expected
            if known and op.ok is not None and op.ok != swapped:
                return None
            if swapped:
                assert op.value is not None
                new[op.key] = op.value
        return new

    def order(chosen: set[int], placed: set[int], regs: dict[str, str]) -> bool:
        if placed == chosen:
            return True
        for i in chosen - placed:
            if any(j in chosen and j not in placed for j in before[i]):
                continue
            after = apply(regs, ops[i])
            if after is not None and order(chosen, placed | {i}, after):
                return True
        return False

    return any(
        order(done | set(subset), set(), {})
        for r in range(len(infos) + 1)
        for subset in itertools.combinations(infos, r)
    )


def searches(ops: list[Op]) -> tuple[bool, bool]:
    """Whether the quick search (with no budget) and the exhaustive search each
    find a linearization for every key."""
    quick = exhaustive = True
    for key in {op.key for op in ops}:
        prepared = Prepared.of([op for op in ops if op.key == key and relevant(op)])
        quick &= find(prepared, math.inf, budget=10**9)
        exhaustive &= search(prepared, math.inf) is None
    return quick, exhaustive


def test_random_small_histories_agree_with_brute_force() -> None:
    values = ["a", "b", "c"]
    rejected = 0
    for seed in range(300):
        rng = random.Random(seed)
        keys = ["x", "y"][: rng.randint(1, 2)]
        ops = simulate(rng, rng.randint(1, 7), rng.randint(1, 4), keys, values, 0.2, 0.15)
        perturbed = seed % 2 == 1
        if perturbed:
            ops = perturb(rng, ops, values)
        expected = brute_force(ops)
        assert expected or perturbed, f"seed {seed}: the simulated store was not linearizable"
        result = check(ops)
        quick, exhaustive = searches(ops)
        assert result.ok == quick == exhaustive == expected, (
            f"seed {seed}: check says {result.ok}, quick search {quick}, exhaustive search "
            f"{exhaustive}, brute force {expected}:\n{result.explanation}\n"
            + "\n".join(op.describe() for op in ops)
        )
        assert not result.unknown
        if not result.ok:
            rejected += 1
            assert result.bad_key in keys and f"key {result.bad_key!r}" in result.explanation
    assert rejected >= 30, f"only {rejected} of the perturbed histories were non-linearizable"


def test_exhaustive_search_decides_when_the_quick_one_gives_up() -> None:
    ops = simulate(random.Random(3), 200, 5, ["k"], None, p_info=0.05, p_fail=0.02)
    prepared = Prepared.of([op for op in ops if relevant(op)])
    assert not find(prepared, math.inf, budget=10)
    assert find(prepared, math.inf, budget=10**9)
    assert search(prepared, math.inf) is None
    assert check(ops).ok


@pytest.mark.parametrize(
    ("keys", "values"),
    [(["k"], None), (["k", "l", "m"], None), (["k"], ["a", "b", "c"])],
    ids=["one-key", "three-keys", "few-values"],
)
def test_long_history_of_a_linearizable_store_is_accepted(
    keys: list[str], values: list[str] | None
) -> None:
    ops = simulate(random.Random(7), 2000, 5, keys, values, p_info=0.02, p_fail=0.02)
    assert sum(op.status == "info" for op in ops) > 10
    result = check(ops)
    assert result.ok, result.explanation
    assert result.keys_checked == len(keys)


def test_long_history_with_one_stale_read_is_rejected() -> None:
    ops = simulate(random.Random(8), 2000, 5, ["k"], None, p_info=0.02, p_fail=0.02)
    # A read late in the run returns the first value ever written, long overwritten.
    first = next(op for op in ops if op.kind == "put" and op.status == "ok")
    i, late = next(
        (i, op) for i, op in enumerate(ops) if i > 1500 and op.kind == "get" and op.status == "ok"
    )
    ops[i] = replace(late, result=first.value)
    result = assert_rejected(ops, "k")
    assert late.describe().split(" -> ")[0] in result.explanation
