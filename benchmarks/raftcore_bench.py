"""raftcore throughput: entries per CPU-second through a simulated 5-server cluster.

No faults, a fixed seed, the invariant checker off. For each batch size the
leader is handed batches of COMMAND entries and the simulator is driven until
every server has applied them. Reported per batch size:

- raftcore: entries per CPU-second spent inside ``Raft.step`` on all five
  servers together (submit on the leader through commit and apply on all);
- end to end: the same including the simulator (network, disks, event queue,
  application), and the simulator's share of that CPU time;
- the leader's share of raftcore's CPU time (it sends and receives the most).

Run with ``make bench-raftcore`` or ``python benchmarks/raftcore_bench.py``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.sim.cluster import Cluster, Options
from tests.sim.invariants import Observer

SEED = 20240601
PAYLOAD = b"x" * 100


def measure(batch: int, entries: int) -> str:
    """Replicate ``entries`` entries in batches of ``batch``; one report line."""
    cluster = Cluster(SEED, Options(servers=5), observer=Observer())
    cluster.start()
    cluster.run_until(10_000, lambda: len(cluster.leaders()) == 1)
    (leader,) = cluster.leaders()
    nodes = list(cluster.nodes.values())

    def applied_everywhere() -> bool:
        assert leader.raft is not None
        target = leader.raft.last_index
        return all(node.last_applied >= target for node in nodes)

    cluster.run_until(cluster.now + 1_000, applied_everywhere)
    in_step = [node.step_seconds for node in nodes]
    started = time.process_time()
    sent = 0
    while sent < entries:
        count = min(batch, entries - sent)
        if cluster.submit([PAYLOAD] * count) is not leader:
            raise SystemExit("the leader changed during the benchmark")
        sent += count
        if not cluster.run_until(cluster.now + 10_000, applied_everywhere):
            raise SystemExit(f"batch not applied everywhere:\n{cluster.describe()}")
    total = time.process_time() - started
    raft = sum(node.step_seconds - before for node, before in zip(nodes, in_step, strict=True))
    leader_part = (leader.step_seconds - in_step[nodes.index(leader)]) / raft
    return (
        f"batch {batch:>4}: raftcore {entries / raft:>9,.0f} entries/CPU-s   "
        f"end to end {entries / total:>9,.0f} entries/CPU-s   "
        f"simulator {1 - raft / total:>4.0%} of CPU   leader {leader_part:>4.0%} of raftcore"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=20_000, help="entries per batch size")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    args = parser.parse_args(argv)
    print(f"raftcore_bench: 5 servers, no faults, seed {SEED}, {args.entries} entries per run")
    for batch in args.batches:
        print(measure(batch, args.entries), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
