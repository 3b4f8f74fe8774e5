"""A local cluster of ``kvstore serve`` processes on 127.0.0.1 (``make run``).

Also used by the integration tests, which need the same thing with free
ports and temporary data directories. Only the processes started here are
ever signalled, by their PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Member:
    id: int
    client_addr: str
    peer_addr: str
    metrics_addr: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


@dataclass
class LocalCluster:
    """``size`` members with data under ``root``; fixed ports from ``base_port`` or free ones."""

    root: Path
    size: int = 3
    base_port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for i in range(1, self.size + 1):
            if self.base_port is not None:
                ports = (self.base_port + i, self.base_port + 100 + i, self.base_port + 200 + i)
            else:
                ports = (free_port(), free_port(), free_port())
            self.members[i] = Member(
                id=i,
                client_addr=f"127.0.0.1:{ports[0]}",
                peer_addr=f"127.0.0.1:{ports[1]}",
                metrics_addr=f"127.0.0.1:{ports[2]}",
                data_dir=self.root / str(i),
                log_path=self.root / f"{i}.log",
            )

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.id}={m.peer_addr}" for m in self.members.values())

    @property
    def endpoints(self) -> list[str]:
        return [m.client_addr for m in self.members.values()]

    def command(self, member: Member) -> list[str]:
        return [
            sys.executable, "-m", "kvstore", "serve",
            "--id", str(member.id),
            "--client-addr", member.client_addr,
            "--peer-addr", member.peer_addr,
            "--metrics-addr", member.metrics_addr,
            "--data-dir", str(member.data_dir),
            "--initial-cluster", self.initial_cluster,
            *self.extra_args,
        ]  # fmt: skip

    def start(self, member_id: int | None = None) -> None:
        """Start one member (or all that are not running)."""
        ids = [member_id] if member_id is not None else list(self.members)
        for i in ids:
            member = self.members[i]
            if member.running:
                continue
            log = open(member.log_path, "ab")  # noqa: SIM115 - owned by the child
            member.process = subprocess.Popen(
                self.command(member), stdout=log, stderr=subprocess.STDOUT, env=_child_env()
            )
            log.close()

    def signal(self, member_id: int, sig: int) -> None:
        member = self.members[member_id]
        if member.running:
            assert member.process is not None
            os.kill(member.process.pid, sig)

    def kill(self, member_id: int) -> None:
        """SIGKILL, and wait for the process to be gone."""
        member = self.members[member_id]
        if member.process is not None:
            if member.process.poll() is None:
                member.process.kill()
            member.process.wait(timeout=10)

    def stop(self, member_id: int | None = None, timeout: float = 10.0) -> dict[int, int | None]:
        """SIGTERM, then SIGKILL after ``timeout``; returns each exit code."""
        ids = [member_id] if member_id is not None else list(self.members)
        for i in ids:
            self.signal(i, signal.SIGTERM)
        codes: dict[int, int | None] = {}
        deadline = time.monotonic() + timeout
        for i in ids:
            process = self.members[i].process
            if process is None:
                continue
            try:
                codes[i] = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
                codes[i] = None
        return codes

    def log_tail(self, member_id: int, lines: int = 40) -> str:
        path = self.members[member_id].log_path
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run a local 3-member cluster (Ctrl-C stops it)")
    parser.add_argument("--data", default="data", help="data root (default ./data)")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=7100)
    args = parser.parse_args(argv)
    cluster = LocalCluster(Path(args.data), size=args.size, base_port=args.base_port)
    cluster.start()
    endpoints = ",".join(cluster.endpoints)
    print(f"cluster of {args.size} started; data in {args.data}/, logs in {args.data}/N.log")
    for m in cluster.members.values():
        print(
            f"  member {m.id}: clients {m.client_addr}  peers {m.peer_addr}  "
            f"metrics http://{m.metrics_addr}/metrics"
        )
    print("try:")
    print(f"  .venv/bin/kvctl --endpoints {endpoints} put hello world")
    print(f"  .venv/bin/kvctl --endpoints {endpoints} get hello")
    print(f"  .venv/bin/kvctl --endpoints {endpoints} status")
    print("Ctrl-C stops the cluster.")
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stopping:
            for m in cluster.members.values():
                if m.process is not None and m.process.poll() is not None:
                    print(f"member {m.id} exited with {m.process.returncode}; see {m.log_path}")
                    m.process = None
            time.sleep(0.2)
    finally:
        codes = cluster.stop()
        print("stopped:", ", ".join(f"member {i} exit {c}" for i, c in codes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
