"""A local cluster of ``kvstore serve`` processes on 127.0.0.1 (``make run``).

The integration tests build on the same class (``tests/integration/cluster.py``)
with free ports and temporary data directories. Only the processes started
here are ever signalled, by their PID.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGKILL, SIGTERM

REPO = Path(__file__).resolve().parents[1]
STOP_WAIT = 10.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports on 127.0.0.1 that were free a moment ago.

    All are bound at once and then released, so they differ from each other;
    someone else may still take one before it is used.
    """
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    return free_ports(1)[0]


@dataclass
class Member:
    id: int
    client_addr: str
    peer_addr: str
    metrics_addr: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    #: Client endpoints it joins through (``--join``); empty: an initial member.
    join: list[str] = field(default_factory=list)
    #: Flags for this member alone, after the cluster's (so they override them).
    extra_args: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


@dataclass
class LocalCluster:
    """``size`` members with data under ``root``; fixed ports from ``base_port`` or free ones.

    ``extra_args`` go to every ``kvstore serve``. Each member's output is
    appended to ``root/N.log``; its data is in ``root/N``.
    """

    root: Path
    size: int = 3
    base_port: int | None = None
    extra_args: list[str] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    returncodes: dict[int, int | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        free = free_ports(3 * self.size) if self.base_port is None else []
        for i in range(1, self.size + 1):
            if self.base_port is not None:
                ports = [self.base_port + i, self.base_port + 100 + i, self.base_port + 200 + i]
            else:
                ports = free[3 * (i - 1) : 3 * i]
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
        return ",".join(f"{m.id}={m.peer_addr}" for m in self.members.values() if not m.join)

    def add_member(
        self, member_id: int | None = None, join: Sequence[str] = (), extra_args: Sequence[str] = ()
    ) -> Member:
        """A new member, not started, that joins the cluster with ``--join`` through
        ``join`` (default: the client endpoints of the members so far), with
        ``extra_args`` after the cluster's."""
        if member_id is None:
            member_id = max(self.members, default=0) + 1
        if member_id in self.members:
            raise ValueError(f"member {member_id} exists already")
        endpoints = list(join) or self.endpoints
        ports = free_ports(3)
        member = Member(
            id=member_id,
            client_addr=f"127.0.0.1:{ports[0]}",
            peer_addr=f"127.0.0.1:{ports[1]}",
            metrics_addr=f"127.0.0.1:{ports[2]}",
            data_dir=self.root / str(member_id),
            log_path=self.root / f"{member_id}.log",
            join=endpoints,
            extra_args=list(extra_args),
        )
        self.members[member_id] = member
        return member

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
            *(
                ["--join", ",".join(member.join)]
                if member.join
                else ["--initial-cluster", self.initial_cluster]
            ),
            *self.extra_args,
            *member.extra_args,
        ]  # fmt: skip

    def child_env(self, member: Member) -> dict[str, str]:
        """The member process's environment (a hook: the chaos tests add a disk shim)."""
        return _child_env()

    # -- processes -------------------------------------------------------------

    def start(self, member_id: int | None = None) -> None:
        """Start one member (or all that are not running), on its data directory."""
        ids = [member_id] if member_id is not None else list(self.members)
        for i in ids:
            member = self.members[i]
            if member.running:
                continue
            with open(member.log_path, "ab") as log:  # the child keeps its own descriptor
                member.process = subprocess.Popen(
                    self.command(member),
                    cwd=REPO,
                    env=self.child_env(member),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    # Signals typed at the terminal are for us; we stop the members.
                    start_new_session=True,
                )

    def signal(self, member_id: int, sig: int) -> None:
        """Send ``sig`` to the member's process, if it runs (by its PID, nothing else)."""
        member = self.members[member_id]
        if member.running:
            assert member.process is not None
            with suppress(ProcessLookupError):
                member.process.send_signal(sig)

    def ids_of(self, member_id: int | Sequence[int] | None) -> list[int]:
        """The member ids a call names: one, several, or None for all."""
        if member_id is None:
            return list(self.members)
        if isinstance(member_id, int):
            return [member_id]
        return list(member_id)

    def stop(
        self,
        member_id: int | Sequence[int] | None = None,
        timeout: float = STOP_WAIT,
        sig: int = SIGTERM,
    ) -> dict[int, int | None]:
        """Send ``sig`` (SIGTERM) to the members, SIGKILL those still running after
        ``timeout``; each one's exit code (negative: killed by that signal; None:
        it was not started). The members are signalled first, then waited for,
        so that they stop in parallel."""
        ids = self.ids_of(member_id)
        for i in ids:
            self.signal(i, sig)
        codes: dict[int, int | None] = {i: None for i in ids}
        deadline = time.monotonic() + timeout
        for i in ids:
            process = self.members[i].process
            if process is None:
                continue
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                process.kill()  # this very PID
                process.wait(timeout=STOP_WAIT)
            codes[i] = self.returncodes[i] = process.returncode
            self.members[i].process = None
        return codes

    def kill(self, member_id: int | Sequence[int]) -> dict[int, int | None]:
        """SIGKILL (a crash), and wait for the processes to be gone."""
        return self.stop(member_id, timeout=STOP_WAIT, sig=SIGKILL)

    # -- logs --------------------------------------------------------------------

    def log_text(self, member_id: int) -> str:
        path = self.members[member_id].log_path
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, member_id: int, lines: int = 40) -> str:
        text = self.log_text(member_id)
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"

    def logs(self, lines: int = 40) -> str:
        """The tail of every member's log, each under a heading."""
        return "\n".join(
            f"----- member {i} ({m.client_addr}) -----\n{self.log_tail(i, lines)}"
            for i, m in self.members.items()
        )


def _child_env() -> dict[str, str]:
    # KVSTORE_* from our environment would override the flags we pass.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("KVSTORE_") or k == "KVSTORE_PROFILE"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run a local 3-member cluster (Ctrl-C stops it)")
    parser.add_argument("--data", default="data", help="data root (default ./data)")
    parser.add_argument("--size", type=int, default=3)
    parser.add_argument("--base-port", type=int, default=7100)
    args = parser.parse_args(argv)
    cluster = LocalCluster(Path(args.data), size=args.size, base_port=args.base_port)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    # The members run in sessions of their own: whatever ends us, we stop them.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    try:
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
