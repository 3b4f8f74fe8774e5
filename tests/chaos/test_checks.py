"""The run checks besides linearizability, on small hand-made histories: each can fail."""

from __future__ import annotations

from tests.chaos.checks import availability, convergence, lost_writes
from tests.chaos.history import Op
from tests.chaos.nemesis import Fault


def _op(
    kind: str,
    value: str | None,
    invoke: float,
    complete: float | None,
    status: str = "ok",
    ok: bool | None = None,
    key: str = "k",
) -> Op:
    return Op(
        process=0,
        kind=kind,
        key=key,
        value=value,
        expected=None,
        invoke=invoke,
        complete=complete,
        status=status,
        result=None,
        ok=ok,
    )


def test_the_last_acknowledged_write_must_survive() -> None:
    ops = [_op("put", "a", 0, 1), _op("put", "b", 2, 3)]
    assert lost_writes(ops, {"k": "b"}) == []
    (violation,) = lost_writes(ops, {"k": "a"})
    assert "acknowledged write lost" in violation and "'b'" in violation


def test_a_later_or_concurrent_write_of_unknown_outcome_may_overwrite() -> None:
    acked = _op("put", "a", 0, 1)
    assert lost_writes([acked, _op("put", "b", 2, None, status="info")], {"k": "b"}) == []
    # An unknown write that began before the acked one ended may still come after it.
    assert lost_writes([acked, _op("put", "b", 0.5, None, status="info")], {"k": "b"}) == []
    # A failed write did not happen: it cannot explain anything.
    failed = _op("put", "b", 2, 3, status="fail")
    assert lost_writes([acked, failed], {"k": None})


def test_a_delete_overwrites_and_an_unswapped_cas_does_not() -> None:
    put = _op("put", "a", 0, 1)
    assert lost_writes([put, _op("delete", None, 2, 3, ok=True)], {"k": None}) == []
    no_swap = _op("cas", "c", 2, 3, ok=False)
    assert lost_writes([put, no_swap], {"k": "c"})  # "c" was never written


def test_a_final_value_nobody_wrote_is_reported() -> None:
    (violation,) = lost_writes([_op("put", "a", 0, 1)], {"k": "zzz"})[:1]
    assert "written by nobody" in violation


def test_convergence_wants_the_same_rows_and_applied_index() -> None:
    rows = [(b"k", b"v", 1, 1, 1)]
    assert convergence({1: rows, 2: list(rows)}, {1: 9, 2: 9}) == []
    assert convergence({1: rows, 2: []}, {1: 9, 2: 9})
    assert convergence({1: rows, 2: rows}, {1: 9, 2: 8})
    assert convergence({1: rows}, {1: 9}, missing=[2])


def test_availability_after_each_heal_within_the_bound() -> None:
    fault = Fault("kill-leader", start=10.0, injected=10.0, heal=13.0, healed=13.0)
    ops = [_op("put", "a", 0, 1), _op("get", None, 14, 14.5)]
    violations, figures = availability(ops, [fault], bound=30.0)
    assert violations == []
    assert figures["longest_unavailable_s"] == 13.5
    violations, _ = availability(ops[:1], [fault], bound=30.0)
    assert violations and "never" in violations[0]
    violations, _ = availability([ops[0], _op("get", None, 50, 50)], [fault], bound=30.0)
    assert violations and "only after 37.0 s" in violations[0]
