"""``make bench``: a 3-member cluster on this machine, measured by ``kvctl bench``.

Prints puts/s and linearizable gets/s with p50/p99 at 1, 16 and 64 clients
(100-byte values) next to a bare grpc.aio echo server measured by the same
client code; then ``--rounds`` alternating echo and put rounds at 64 clients
and the ratio of their medians; then writes ``--memory-writes`` more keys
and prints each member's resident memory (snapshots must keep it bounded).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from kvstore import bench
from kvstore.client import Client
from kvstore.devcluster import LocalCluster


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_for_leader(endpoints: list[str], timeout: float = 30) -> str:
    """The client endpoint of the leader, once there is one."""
    deadline = time.monotonic() + timeout
    with Client(endpoints, timeout=2) as client:
        while time.monotonic() < deadline:
            for s in client.status():
                if s.status is not None and s.status.state == "LEADER":
                    return s.endpoint
            time.sleep(0.2)
    raise TimeoutError("no leader")


def compare_at_64(leader: str, rounds: int, total: int) -> None:
    """The issue's yardstick, puts/s at 64 clients against echo calls/s, from
    rounds that alternate the two (the machine's speed drifts over minutes;
    alternating keeps that drift out of the ratio). Prints the medians."""
    print(f"-- puts to the leader vs echo, 64 clients, {rounds} alternating rounds", flush=True)
    common = ["--clients", "64", "--total", str(total), "--value-size", "100"]
    echo: list[float] = []
    put: list[float] = []
    for _ in range(rounds):
        args = bench.build_parser().parse_args(["echo", *common])
        echo.append(asyncio.run(bench.run(args))[0].rate)
        args = bench.build_parser().parse_args(["put", *common, "--endpoints", leader])
        put.append(asyncio.run(bench.run(args))[0].rate)
    e, p = statistics.median(echo), statistics.median(put)
    print(f"median: echo {e:.0f} calls/s, put {p:.0f} puts/s: puts are {p / e:.0%} of echo")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="1,16,64")
    parser.add_argument("--total", type=int, default=5000)
    parser.add_argument("--memory-writes", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternating echo/put rounds")
    parser.add_argument("--round-total", type=int, default=10_000, help="requests per round")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kvbench-", dir=".") as root:
        cluster = LocalCluster(Path(root), size=3)
        cluster.start()
        try:
            leader = wait_for_leader(cluster.endpoints)
            base = [
                "--clients",
                options.clients,
                "--total",
                str(options.total),
                "--value-size",
                "100",
            ]
            endpoints = ["--endpoints", ",".join(cluster.endpoints)]
            runs = [
                ("echo", [], "a bare grpc.aio server on uvloop (as kvstore serve)"),
                ("echo", ["--echo-loop", "asyncio"], "a bare grpc.aio server (asyncio loop)"),
                ("put", ["--endpoints", leader], "to the leader"),
                ("get", ["--endpoints", leader], "to the leader (linearizable)"),
                ("put", endpoints, "spread over all members (followers forward)"),
                ("get", endpoints, "spread over all members (linearizable, forwarded)"),
            ]
            for op, extra, what in runs:
                print(f"-- {op} {what}", flush=True)
                asyncio.run(bench.run(bench.build_parser().parse_args([op, *base, *extra])))
            if options.rounds:
                compare_at_64(leader, options.rounds, options.round_total)
            if options.memory_writes:
                args = bench.build_parser().parse_args(
                    [
                        "put",
                        "--clients",
                        "64",
                        "--total",
                        str(options.memory_writes),
                        "--key-count",
                        str(options.memory_writes),
                        *endpoints,
                    ]
                )
                asyncio.run(bench.run(args))
                for member in cluster.members.values():
                    assert member.process is not None
                    print(
                        f"member {member.id}: resident memory {rss_mb(member.process.pid):.0f} MB "
                        f"after {options.memory_writes} more writes"
                    )
        finally:
            cluster.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
