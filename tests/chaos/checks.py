"""The checks of a chaos run besides linearizability, and the figures it reports.

- lost writes: every acknowledged write is in the final state, or a write
  that may have come after it (acknowledged or of unknown outcome, not over
  before it began) overwrote it; and the final value is one somebody wrote;
- convergence: after the heal every member holds the same data (keys,
  values, revisions, versions) at the same applied index;
- availability: after every heal some operation succeeds within the bound
  (a correctness property: a cluster that heals must serve again), plus the
  figures: time to the first success after each heal, longest stretch
  without any success, time to a new leader after a fault that took the
  leader away.

Every function returns violations as sentences (empty: passed) so that the
verdict says what went wrong in words.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.chaos.history import Op
from tests.chaos.monitor import Round
from tests.chaos.nemesis import Fault

__all__ = [
    "FaultFigures",
    "availability",
    "convergence",
    "fault_figures",
    "log_problems",
    "lost_writes",
    "summary_figures",
]

#: Faults after which the old leader cannot go on leading while a majority can elect a
#: new one (kill-majority takes the majority: its figure is the leader after the heal).
LEADER_LOSING = ("kill-leader", "pause-leader", "partition-leader")


def _effect(op: Op) -> tuple[bool, str | None]:
    """(may have changed the key, the value it leaves: None = absent)."""
    if op.status == "fail" or op.kind == "get":
        return False, None
    if op.kind == "cas" and op.status == "ok" and not op.ok:
        return False, None
    return True, None if op.kind == "delete" else op.value


def lost_writes(ops: Sequence[Op], final: dict[str, str | None]) -> list[str]:
    """Violations of "acknowledged writes survive" against the final state per key."""
    writes: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        if _effect(op)[0]:
            writes[op.key].append(op)
    violations = []
    for key, value in sorted(final.items()):
        ws = writes.get(key, [])
        if value is not None and not any(_effect(w)[1] == value for w in ws):
            violations.append(f"{key}: final value {value!r} was written by nobody")
        # The two latest ends among the key's writes (an open write ends at +inf).
        ends = sorted(
            ((math.inf if w.complete is None else w.complete, i) for i, w in enumerate(ws)),
            reverse=True,
        )[:2]
        for i, w in enumerate(ws):
            if w.status != "ok" or _effect(w)[1] == value:
                continue
            later = [end for end, j in ends if j != i]
            if not later or later[0] < w.invoke:
                violations.append(
                    f"{key}: acknowledged write lost: {w.describe()}; final state "
                    f"{'absent' if value is None else repr(value)}, and no write came after it"
                )
    return violations


def convergence(
    data: dict[int, list[tuple[Any, ...]]], applied: dict[int, int], missing: Sequence[int] = ()
) -> list[str]:
    """Every member's (key, value, create, mod, version) rows and applied index agree."""
    violations = [f"member {i} did not answer the final reads" for i in missing]
    if len(set(applied.values())) > 1:
        violations.append(f"members applied different indexes after the heal: {applied}")
    if data:
        first, rows = next(iter(data.items()))
        for i, other in data.items():
            if other != rows:
                diff = sorted(set(other) ^ set(rows))[:3]
                violations.append(
                    f"member {i} holds other data than member {first} "
                    f"({len(other)} vs {len(rows)} keys; e.g. {diff})"
                )
    return violations


def _ok_times(ops: Sequence[Op]) -> list[float]:
    return sorted(op.complete for op in ops if op.status == "ok" and op.complete is not None)


def availability(
    ops: Sequence[Op], faults: Sequence[Fault], bound: float
) -> tuple[list[str], dict[str, Any]]:
    """Violations of "serving again within ``bound`` s of each heal", and the figures:
    the longest stretch without a successful operation and when it was."""
    times = _ok_times(ops)
    violations = []
    for f in faults:
        if f.healed is None:
            continue
        after = next((t for t in times if t >= f.healed), None)
        if after is None or after - f.healed > bound:
            waited = "never" if after is None else f"only after {after - f.healed:.1f} s"
            violations.append(f"{f.name} at {f.start:.1f}: no operation succeeded {waited} "
                              f"after the heal (bound {bound:g} s)")  # fmt: skip
    start = min((op.invoke for op in ops), default=0.0)
    longest, where = 0.0, start
    previous = start
    for t in times:
        if t - previous > longest:
            longest, where = t - previous, previous
        previous = t
    figures = {"longest_unavailable_s": round(longest, 3), "longest_unavailable_at": where}
    return violations, figures


@dataclass
class FaultFigures:
    name: str
    start_s: float  # since the run's start
    duration_s: float  # injected to healed
    targets: list[int]
    detail: str
    leader_before: int | None  # the leader (and its term) when the fault began
    term_before: int | None
    new_leader_s: float | None  # injection to a leader of a later term (before the next fault)
    leader_after_heal_s: float | None  # heal to an agreed leader
    recovery_s: float | None  # heal to the first successful operation
    members_back_s: float | None  # heal to every member following one leader
    caught_up_s: float | None  # heal to every member applying the commit index seen at the heal
    unavailable_s: float  # longest stretch without a success, fault window and recovery
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fault_figures(
    faults: Sequence[Fault], rounds: Sequence[Round], ops: Sequence[Op], t0: float
) -> list[FaultFigures]:
    times = _ok_times(ops)
    figures = []
    starts = [f.start for f in faults[1:]] + [math.inf]
    for f, next_start in zip(faults, starts, strict=True):
        end = f.healed if f.healed is not None else f.injected
        new_leader = None
        if f.term_before is not None:  # an election the fault caused, before the next fault
            r = _first_leader(rounds, f.start, next_start, f.term_before + 1)
            new_leader = None if r is None else round(r.time - f.start, 3)
        after_heal: float | None = None
        recovery: float | None = None
        members_back: float | None = None
        caught_up: float | None = None
        if f.healed is not None:
            r = _first_leader(rounds, f.healed, math.inf, 0)
            after_heal = None if r is None else round(r.time - f.healed, 3)
            first_ok = next((t for t in times if t >= f.healed), None)
            recovery = None if first_ok is None else round(first_ok - f.healed, 3)
            back = next((r for r in rounds if r.time >= f.healed and r.all_follow()), None)
            members_back = None if back is None else round(back.time - f.healed, 3)
            caught = _caught_up(rounds, f.healed)
            caught_up = None if caught is None else round(caught.time - f.healed, 3)
        # The longest gap between two successes that overlaps the fault and its recovery.
        stop = end + (recovery or 0.0)
        gap = max(
            (b - a for a, b in itertools.pairwise(times) if b >= f.start and a <= stop),
            default=0.0,
        )
        figures.append(
            FaultFigures(
                name=f.name,
                start_s=round(f.start - t0, 3),
                duration_s=round(end - f.injected, 3),
                targets=f.targets,
                detail=f.detail,
                leader_before=f.leader_before,
                term_before=f.term_before,
                new_leader_s=new_leader,
                leader_after_heal_s=after_heal,
                recovery_s=recovery,
                members_back_s=members_back,
                caught_up_s=caught_up,
                unavailable_s=round(gap, 3),
            )
        )
    return figures


def _caught_up(rounds: Sequence[Round], since: float) -> Round | None:
    """The first round from ``since`` on in which every member has applied the highest
    commit index reported in the first round at or after ``since``."""
    after = [r for r in rounds if r.time >= since]
    if not after or not after[0].samples:
        return None
    target = max(s.commit_index for s in after[0].samples)
    for r in after:
        if len(r.samples) == r.members and min(s.applied_index for s in r.samples) >= target:
            return r
    return None


def _max(values: Iterable[float | None]) -> float | None:
    return max((v for v in values if v is not None), default=None)


def _first_leader(rounds: Sequence[Round], since: float, until: float, term: int) -> Round | None:
    for r in rounds:
        if since <= r.time < until and (leader := r.leader()) is not None and leader[1] >= term:
            return r
    return None


def log_problems(paths: Sequence[Path], most: int = 10) -> dict[str, int]:
    """ERROR and CRITICAL lines of the members' logs, digits blanked so that alike
    lines count together; the most frequent. Reported, not judged: a member may
    rightly log an error about a fault the harness made."""
    counts: Counter[str] = Counter()
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or " CRITICAL " in line:
                message = line.split(" ", 2)[-1]  # without the date and time
                counts[re.sub(r"\d+", "N", message)[:200]] += 1
    return dict(counts.most_common(most))


def summary_figures(ops: Sequence[Op], figures: Sequence[FaultFigures]) -> dict[str, Any]:
    """Counts of operations by kind and outcome, faults by name, and leader/recovery times."""
    counts: dict[str, int] = defaultdict(int)
    for op in ops:
        counts[op.status] += 1
        counts[f"{op.kind}_{op.status}"] += 1
    by_name: dict[str, int] = defaultdict(int)
    for f in figures:
        by_name[f.name] += 1
    # Elections a surviving majority held (kill-majority's waited for the heal).
    leader_times = [
        f.new_leader_s for f in figures if f.new_leader_s is not None and f.name != "kill-majority"
    ]
    losing = [f for f in figures if f.name in LEADER_LOSING]
    recoveries = [f.recovery_s for f in figures if f.recovery_s is not None]
    return {
        "operations": len(ops),
        "outcomes": dict(sorted(counts.items())),
        "faults": len(figures),
        "faults_by_name": dict(sorted(by_name.items())),
        "new_leader_s_max": max(leader_times, default=None),
        "leader_after_heal_s_max": _max(f.leader_after_heal_s for f in figures),
        "new_leader_s_median": statistics.median(leader_times) if leader_times else None,
        "leader_losing_faults_without_new_leader": [
            f"{f.name}@{f.start_s}" for f in losing if f.new_leader_s is None
        ],
        "recovery_s_max": max(recoveries, default=None),
        "members_back_s_max": _max(f.members_back_s for f in figures),
        "caught_up_s_max": _max(f.caught_up_s for f in figures),
        "recovery_s_median": statistics.median(recoveries) if recoveries else None,
        "fault_unavailable_s_max": max((f.unavailable_s for f in figures), default=None),
    }
