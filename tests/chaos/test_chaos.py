"""The short chaos run of ``make test``: every nemesis once against 3 real members.

Clients run through the whole schedule; the verdict covers linearizability
of the history, no lost acknowledged write, convergence after the heal, no
crash but the nemesis's kills, and service again within 30 s of every heal.
``make chaos`` runs the long version (tests/chaos/runner.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.clients import Workload
from tests.chaos.nemesis import NEMESES
from tests.chaos.runner import RunConfig, run_chaos


@pytest.mark.timeout(900)
def test_every_nemesis_once_on_three_members(tmp_path: Path) -> None:
    config = RunConfig(
        results=tmp_path / "results",
        nodes=3,
        schedule="each-once",
        nemeses=tuple(NEMESES),
        fault_time=(3.0, 3.0),
        quiet_time=(1.5, 1.5),
        workload=Workload(clients=4, keys=4, ops_per_key=200),
        seed=7,
        check_timeout=120.0,
    )
    report = run_chaos(config)
    summary = report.summary()
    assert report.ok, summary

    # The schedule really ran: each fault once, in order, with its targets.
    assert [f.name for f in report.faults] == list(NEMESES), summary
    assert all(f.targets for f in report.faults), summary
    # The checker decided (a timeout would be "unknown", not a pass).
    assert report.linearizability is not None and report.linearizability.ok, summary
    outcomes = report.figures["outcomes"]
    for kind in ("get", "put", "cas", "delete"):
        assert outcomes.get(f"{kind}_ok", 0) > 0, (kind, outcomes)
    # Faults that take the leader away end with a newly elected one.
    for f in report.faults:
        if f.name in ("kill-leader", "pause-leader", "partition-leader"):
            assert f.new_leader_s is not None, (f, summary)
    for name in ("history.jsonl", "verdict.json", "summary.txt", "timeline.png"):
        assert (report.results / name).stat().st_size > 0, name
