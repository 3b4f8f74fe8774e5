"""A chaos run: a real cluster, concurrent clients, faults on a schedule, a verdict.

    python -m tests.chaos.runner --nodes 5 --duration 600 --results chaos-results

The run: start the cluster (members behind proxies, see `cluster`), let the
clients run (`clients`), inject and heal faults one after the other
(`nemesis`; after each heal wait until some operation succeeds again, so the
next fault meets a serving cluster), stop the clients, heal everything,
restart what is down, then check:

- linearizability of the history (`lincheck`, key by key);
- no lost acknowledged write, convergence of every member's data and applied
  index, no member exited that no nemesis killed, every heal followed by a
  success within the bound (`checks`).

The results folder gets ``history.jsonl`` (re-check it with ``python -m
tests.chaos.lincheck``), ``verdict.json`` (violations, figures, faults),
``summary.txt``, ``timeline.png``, ``leaders.jsonl`` (every Status poll
round: who led, as each member said) and the members' logs. The exit code is 0
when the verdict holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc.aio

from kvstore.client import KVError
from kvstore.v1 import kv_pb2
from tests.chaos import checks
from tests.chaos.clients import KEY_PREFIX, Channels, KeySpace, Workload, run_workers
from tests.chaos.cluster import ChaosCluster, chaos_cluster, copy_logs
from tests.chaos.history import Op, Recorder, write_jsonl
from tests.chaos.lincheck import CheckResult, check
from tests.chaos.monitor import Monitor
from tests.chaos.nemesis import (
    LEADER_WAIT,
    NEMESES,
    Fault,
    Nemesis,
    NemesisContext,
    make_nemeses,
)
from tests.chaos.plot import plot_timeline
from tests.integration.cluster import FAST_TIMEOUTS

__all__ = ["Report", "RunConfig", "run_chaos"]

#: Small snapshot thresholds, so restarted and new members also catch up by snapshot.
SNAPSHOTS = ("--snapshot-count", "1000", "--snapshot-trailing", "200")
STEP_TIMEOUT = 120.0  # one inject or heal
FINAL_PROCESS = 1_000_000  # the process id of the final reads in the history


@dataclass(frozen=True)
class RunConfig:
    results: Path
    nodes: int = 3
    duration: float = 600.0  # seconds of faults (schedule "random")
    schedule: str = "random"  # or "each-once": every nemesis once, in order
    nemeses: tuple[str, ...] = tuple(NEMESES)
    fault_time: tuple[float, float] = (2.0, 8.0)
    quiet_time: tuple[float, float] = (2.0, 5.0)
    warmup: float = 2.0
    workload: Workload = field(default_factory=Workload)
    seed: int = 0
    recovery_bound: float = 30.0  # seconds from a heal to the first success
    check_timeout: float = 600.0  # for the linearizability check
    server_args: tuple[str, ...] = (*FAST_TIMEOUTS, *SNAPSHOTS)


@dataclass
class Report:
    ok: bool
    violations: list[str]
    figures: dict[str, Any]
    faults: list[checks.FaultFigures]
    linearizability: CheckResult | None
    results: Path

    def summary(self) -> str:
        lines = [
            f"verdict: {'OK' if self.ok else 'VIOLATIONS'} ({len(self.violations)} violations)",
            *(f"  violation: {v}" for v in self.violations),
            "linearizability: "
            + (self.linearizability.explanation if self.linearizability else "not checked"),
            *(f"{k}: {v}" for k, v in self.figures.items()),
            "faults (start s, name, what, leader/term before, new leader s, leader after heal s,"
            " recovery s, every member back s, every member caught up s, longest unavailable s):",
        ]
        lines += [
            f"  {f.start_s:8.1f} {f.name:18} {f.detail:40} leader={f.leader_before}/"
            f"{f.term_before} new-leader={f.new_leader_s} "
            f"leader-after-heal={f.leader_after_heal_s} recovery={f.recovery_s} "
            f"members-back={f.members_back_s} caught-up={f.caught_up_s} "
            f"unavailable={f.unavailable_s}" + (f" ERRORS: {f.errors}" if f.errors else "")
            for f in self.faults
        ]
        lines.append(f"results in {self.results}")
        return "\n".join(lines)


@dataclass
class _Run:
    """What the asynchronous part hands back to the checks."""

    t0: float
    faults: list[Fault] = field(default_factory=list)
    fault_errors: list[list[str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    final: dict[str, str | None] = field(default_factory=dict)
    rounds: list[Any] = field(default_factory=list)


def _schedule(config: RunConfig, rng: random.Random) -> Iterator[tuple[str, float, float]]:
    """(nemesis name, fault seconds, quiet seconds after the heal), as long as the run lasts."""
    if config.schedule == "each-once":
        for name in config.nemeses:
            yield name, config.fault_time[0], config.quiet_time[0]
        return
    if config.schedule != "random":
        raise ValueError(f"unknown schedule {config.schedule!r}")
    deadline = time.monotonic() + config.duration
    while time.monotonic() < deadline:
        yield (
            rng.choice(config.nemeses),
            rng.uniform(*config.fault_time),
            rng.uniform(*config.quiet_time),
        )


async def _wait_success(recorder: Recorder, since: float, timeout: float) -> None:
    """Until an operation completes ok after ``since`` (or ``timeout`` passes)."""
    deadline = time.monotonic() + timeout
    seen = 0
    while time.monotonic() < deadline:
        ops = recorder.ops()
        if any(op.status == "ok" and (op.complete or 0) >= since for op in ops[seen:]):
            return
        seen = max(0, len(ops) - 1000)  # ops complete out of order: look back a little
        await asyncio.sleep(0.1)


async def _one_fault(
    ctx: NemesisContext, nemesis: Nemesis, duration: float, recorder: Recorder, bound: float
) -> tuple[Fault, list[str]]:
    """Inject, wait, heal; the fault as it happened and what went wrong doing it."""
    errors: list[str] = []
    # Start from a known leader (the previous heal may still be settling), so that
    # "time to a new leader" has a term to count from.
    before = ctx.monitor.latest_leader() or await ctx.monitor.wait_leader(LEADER_WAIT)
    fault = Fault(
        nemesis.name,
        start=time.monotonic(),
        leader_before=before[0] if before else None,
        term_before=before[1] if before else None,
    )
    try:
        fault.targets, fault.detail = await asyncio.wait_for(nemesis.inject(ctx), STEP_TIMEOUT)
    except Exception as exc:  # the verdict reports it; the run goes on
        errors.append(f"inject failed: {exc!r}")
    fault.injected = time.monotonic()
    await asyncio.sleep(duration)
    fault.heal = time.monotonic()
    try:
        healed = await asyncio.wait_for(nemesis.heal(ctx), STEP_TIMEOUT)
        fault.detail += f"; {healed}"
    except Exception as exc:
        errors.append(f"heal failed: {exc!r}")
    fault.healed = time.monotonic()
    errors += await _restart_crashed(ctx.cluster)
    await _wait_success(recorder, fault.healed, bound)
    # Faults one at a time: the next begins once every member is back (its figures
    # are then its own; a member still restarting would turn it into two faults).
    if not await ctx.monitor.wait_all_follow(bound):
        errors.append(f"not every member followed one leader within {bound:g} s of the heal")
    return fault, errors


async def _restart_crashed(cluster: ChaosCluster) -> list[str]:
    """Record members that exited on their own, and start them again."""
    errors = []
    for i in cluster.find_crashes():
        codes = cluster.crashes[i]
        errors.append(f"member {i} exited with {codes[-1]} (not killed):\n{cluster.log_tail(i)}")
        await asyncio.to_thread(cluster.start_node, i)
    return errors


async def _final_reads(
    cluster: ChaosCluster, recorder: Recorder, keys: Sequence[str], channels: Channels
) -> dict[str, str | None]:
    """A linearizable read of every key used, recorded in the history; the values read."""
    final: dict[str, str | None] = {}
    endpoints = cluster.client_endpoints
    for key in keys:
        handle = recorder.invoke(FINAL_PROCESS, "get", key)
        for attempt in range(10):
            stub = channels.kv(endpoints[attempt % len(endpoints)])
            try:
                r = await stub.Get(kv_pb2.GetRequest(key=key.encode()), timeout=2.0)
            except grpc.aio.AioRpcError:
                continue
            final[key] = r.kv.value.decode() if r.found else None
            recorder.ok(handle, result=final[key])
            break
        else:
            recorder.fail(handle)
    return final


def _member_data(cluster: ChaosCluster) -> tuple[dict[int, list[tuple[Any, ...]]], list[int]]:
    """Every member's own (serializable) view of the chaos keys."""
    data, missing = {}, []
    for i in sorted(cluster.nodes):
        try:
            with cluster.node_client(i, timeout=10.0) as client:
                kvs = client.range(KEY_PREFIX, serializable=True).kvs
        except KVError:
            missing.append(i)
            continue
        data[i] = [
            (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) for kv in kvs
        ]
    return data, missing


async def _settle(cluster: ChaosCluster, run: _Run) -> None:
    """Heal everything, restart what is down, wait for a leader and for convergence,
    and compare the members' data."""
    cluster.heal()
    run.violations += await _restart_crashed(cluster)
    for i, member in cluster.nodes.items():
        if member.process is None:
            await asyncio.to_thread(cluster.start_node, i)
    try:
        await asyncio.to_thread(cluster.wait_for_leader, 30.0)
        await asyncio.to_thread(cluster.wait_converged, 60.0)
    except (TimeoutError, RuntimeError) as exc:
        run.violations.append(f"after the final heal: {exc}")
        return
    data, missing = await asyncio.to_thread(_member_data, cluster)
    applied = {i: (await asyncio.to_thread(cluster.status, i)).applied_index for i in data}
    run.violations += checks.convergence(data, applied, missing)


async def _drive(cluster: ChaosCluster, config: RunConfig, recorder: Recorder) -> _Run:
    rng = random.Random(config.seed)
    run = _Run(t0=time.monotonic())
    channels = Channels()
    keys = KeySpace(config.workload.keys, config.workload.ops_per_key)
    # A snapshot of the members (list() copies at once: nemeses change them in threads).
    monitor = Monitor(lambda: {i: m.client_addr for i, m in list(cluster.nodes.items())}, channels)
    ctx = NemesisContext(cluster, monitor, rng)
    stop = asyncio.Event()
    watching = asyncio.ensure_future(monitor.run())
    workers = asyncio.ensure_future(
        run_workers(
            config.workload,
            lambda: cluster.client_endpoints,
            recorder,
            keys,
            channels,
            stop,
            config.seed,
        )
    )
    try:
        await asyncio.sleep(config.warmup)
        for name, duration, quiet in _schedule(config, rng):
            if workers.done():
                break  # a worker died: its exception surfaces below
            if name == "membership" and cluster.free_slot() is None:
                continue
            nemesis = make_nemeses([name])[0]
            fault, errors = await _one_fault(
                ctx, nemesis, duration, recorder, config.recovery_bound
            )
            run.faults.append(fault)
            run.fault_errors.append(errors)
            await asyncio.sleep(quiet)
    finally:
        stop.set()
        done, _ = await asyncio.wait({workers}, timeout=config.workload.op_timeout + 10)
        if not done:
            workers.cancel()
            run.violations.append("clients did not stop within their deadline")
        elif workers.exception() is not None:
            run.violations.append(f"a client failed: {workers.exception()!r}")
        try:
            await _settle(cluster, run)
            run.final = await _final_reads(cluster, recorder, keys.used, channels)
        finally:
            monitor.stop()
            await asyncio.wait({watching}, timeout=5)
            run.rounds = monitor.rounds
            await channels.close()
    return run


def run_chaos(config: RunConfig) -> Report:
    """Run the schedule against a fresh cluster, check, and write the results folder."""
    results = Path(config.results)
    results.mkdir(parents=True, exist_ok=True)
    recorder = Recorder()
    extra = config.server_args
    workdir = results / "cluster"
    with chaos_cluster(workdir, config.nodes, extra) as cluster:
        try:
            run = asyncio.run(_drive(cluster, config, recorder))
        finally:
            copy_logs(cluster, results / "logs")
        crashed = dict(cluster.crashes)
    ops = recorder.ops()
    write_jsonl(results / "history.jsonl", ops)
    report = _verdict(config, results, run, ops, crashed)
    if report.ok:  # the data directories are only worth their space for a post-mortem
        shutil.rmtree(workdir, ignore_errors=True)
    return report


def _verdict(
    config: RunConfig, results: Path, run: _Run, ops: list[Op], crashed: dict[int, list[int]]
) -> Report:
    violations = list(run.violations)
    if crashed:
        violations.append(f"members exited without being killed: {crashed}")
    # The final reads come after the clients stopped: not part of the availability figures.
    client_ops = [op for op in ops if op.process != FINAL_PROCESS]
    figures = checks.fault_figures(run.faults, run.rounds, client_ops, run.t0)
    for f, errors in zip(figures, run.fault_errors, strict=True):
        f.errors = errors
        violations += [f"{f.name} at {f.start_s} s: {e}" for e in errors]
    violations += checks.lost_writes(ops, run.final)
    missing_final = sorted(set(run.final) ^ {op.key for op in ops})
    if missing_final:
        violations.append(f"no final read of {len(missing_final)} keys: {missing_final[:5]}")
    unavailable, longest = checks.availability(client_ops, run.faults, config.recovery_bound)
    violations += unavailable
    lin = check(ops, config.check_timeout)
    if not lin.ok:
        what = "unknown (the check timed out)" if lin.unknown else "violated"
        violations.append(f"linearizability {what} on key {lin.bad_key!r} (explained below)")
    summary = checks.summary_figures(ops, figures)
    summary.update(longest)
    summary["longest_unavailable_at"] = round(summary["longest_unavailable_at"] - run.t0, 3)
    summary["duration_s"] = round(max((op.complete or op.invoke for op in ops), default=0) - run.t0)
    summary["keys"] = len({op.key for op in ops})
    summary["member_log_errors"] = checks.log_problems(sorted((results / "logs").glob("*.log")))
    report = Report(not violations, violations, summary, figures, lin, results)
    _write(report, config, run, ops)
    return report


def _write(report: Report, config: RunConfig, run: _Run, ops: list[Op]) -> None:
    results = report.results
    verdict = {
        "ok": report.ok,
        "violations": report.violations,
        "linearizability": asdict(report.linearizability) if report.linearizability else None,
        "figures": report.figures,
        "faults": [f.as_dict() for f in report.faults],
        "config": asdict(config),
    }
    (results / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str) + "\n")
    (results / "summary.txt").write_text(report.summary() + "\n")
    with open(results / "leaders.jsonl", "w", encoding="utf-8") as out:
        for r in run.rounds:
            leader = r.leader()
            row = {
                "t": round(r.time - run.t0, 3),
                "leader": leader[0] if leader else None,
                "term": leader[1] if leader else None,
                "members": r.members,
                "samples": [asdict(sample) for sample in r.samples],
            }
            out.write(json.dumps(row) + "\n")
    plot_timeline(ops, run.faults, run.t0, results / "timeline.png")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.chaos.runner",
        description="run a chaos test against a real local cluster and check the history",
    )
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of faults")
    parser.add_argument("--results", type=Path, default=Path("chaos-results"))
    parser.add_argument("--schedule", choices=("random", "each-once"), default="random")
    parser.add_argument("--nemeses", default=",".join(NEMESES), help="comma-separated names")
    parser.add_argument("--clients", type=int, default=Workload.clients)
    parser.add_argument("--keys", type=int, default=Workload.keys)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--check-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    config = RunConfig(
        results=args.results,
        nodes=args.nodes,
        duration=args.duration,
        schedule=args.schedule,
        nemeses=tuple(n for n in args.nemeses.split(",") if n),
        workload=Workload(clients=args.clients, keys=args.keys),
        seed=args.seed,
        check_timeout=args.check_timeout,
    )
    make_nemeses(config.nemeses)  # unknown names fail before anything starts
    print(f"chaos run: {config.nodes} members, seed {config.seed}, results in {config.results}")
    report = run_chaos(config)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
