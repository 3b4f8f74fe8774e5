"""A real cluster of ``kvstore serve`` processes on 127.0.0.1, for tests.

    with running_cluster(tmp_path) as cluster:      # 3 nodes, a leader elected
        with cluster.client() as client:
            client.put("k", "v")
        cluster.kill_node(cluster.leader_id())      # SIGKILL, data dir kept
        cluster.start_node(1)                       # restart on the same data

Each node runs as its own process (``python -m kvstore serve`` with the flags
of DESIGN 3.2) on free ports, with its data directory and log file under the
given base directory. The cluster only ever signals the processes it started,
by PID, and ``stop()`` (SIGTERM, then SIGKILL after a timeout) always runs on
the way out of ``running_cluster``, also when a test fails. The nodes' logs
are printed to stderr when the block fails, so pytest shows them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from kvstore.client import Client

REPO = Path(__file__).resolve().parents[2]
LEADER_WAIT = 30.0
STOP_WAIT = 10.0


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports that were free a moment ago (all bound at once, then released)."""
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


@dataclass
class Node:
    id: int
    client_addr: str
    peer_addr: str
    metrics_addr: str
    data_dir: Path
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Cluster:
    """``size`` nodes that know each other; ``extra_args`` go to every ``kvstore serve``."""

    def __init__(self, base_dir: Path, size: int = 3, extra_args: Sequence[str] = ()) -> None:
        self.base_dir = Path(base_dir)
        self.extra_args = list(extra_args)
        ports = free_ports(3 * size)
        self.nodes: dict[int, Node] = {}
        for i in range(size):
            node_id = i + 1
            client, peer, metrics = ports[3 * i : 3 * i + 3]
            self.nodes[node_id] = Node(
                id=node_id,
                client_addr=f"127.0.0.1:{client}",
                peer_addr=f"127.0.0.1:{peer}",
                metrics_addr=f"127.0.0.1:{metrics}",
                data_dir=self.base_dir / f"node{node_id}",
                log_path=self.base_dir / f"node{node_id}.log",
            )
        self.returncodes: dict[int, int | None] = {}

    @property
    def endpoints(self) -> list[str]:
        return [node.client_addr for node in self.nodes.values()]

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{n.id}={n.peer_addr}" for n in self.nodes.values())

    def client(self, endpoints: Sequence[str] | None = None, **kwargs: Any) -> Client:
        return Client(list(endpoints or self.endpoints), **kwargs)

    # -- processes -----------------------------------------------------------

    def command(self, node_id: int) -> list[str]:
        node = self.nodes[node_id]
        return [
            sys.executable, "-m", "kvstore", "serve",
            "--id", str(node.id),
            "--client-addr", node.client_addr,
            "--peer-addr", node.peer_addr,
            "--metrics-addr", node.metrics_addr,
            "--data-dir", str(node.data_dir),
            "--initial-cluster", self.initial_cluster,
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        for node_id in self.nodes:
            self.start_node(node_id)

    def start_node(self, node_id: int) -> None:
        """Start (or restart, on its existing data directory) one node."""
        node = self.nodes[node_id]
        if node.running:
            raise RuntimeError(f"node {node_id} is already running")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        node.log_file = open(node.log_path, "ab")  # noqa: SIM115 - closed in _reap
        env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        node.process = subprocess.Popen(
            self.command(node_id),
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=node.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not the nodes
        )

    def stop_node(self, node_id: int, timeout: float = STOP_WAIT) -> int | None:
        """SIGTERM, then SIGKILL if still running after ``timeout``; the exit code."""
        return self._stop([node_id], signal.SIGTERM, timeout)[node_id]

    def kill_node(self, node_id: int) -> int | None:
        """SIGKILL: a crash. The data directory stays for a restart."""
        return self._stop([node_id], signal.SIGKILL, STOP_WAIT)[node_id]

    def stop(self, timeout: float = STOP_WAIT) -> dict[int, int | None]:
        """Stop every node that runs; SIGTERM to all first, so they stop in parallel."""
        return self._stop(list(self.nodes), signal.SIGTERM, timeout)

    def _stop(self, ids: Sequence[int], sig: int, timeout: float) -> dict[int, int | None]:
        started = [self.nodes[i] for i in ids if self.nodes[i].process is not None]
        for node in started:
            assert node.process is not None
            if node.process.poll() is None:
                with suppress(ProcessLookupError):
                    node.process.send_signal(sig)
        deadline = time.monotonic() + timeout
        codes: dict[int, int | None] = {i: None for i in ids}
        for node in started:
            assert node.process is not None
            try:
                node.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node.process.kill()  # this very PID, nothing else
                node.process.wait()
            codes[node.id] = self.returncodes[node.id] = node.process.returncode
            self._reap(node)
        return codes

    def _reap(self, node: Node) -> None:
        node.process = None
        if node.log_file is not None:
            node.log_file.close()
            node.log_file = None

    # -- observation -----------------------------------------------------------

    def running_ids(self) -> list[int]:
        return [i for i, node in self.nodes.items() if node.running]

    def check_running(self, ids: Sequence[int]) -> None:
        """Fail with the node's log when a node that should run has exited."""
        for i in ids:
            node = self.nodes[i]
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(
                    f"node {i} exited with code {node.process.returncode}:\n{self.log_tail(i)}"
                )

    def wait_for_leader(
        self, timeout: float = LEADER_WAIT, among: Sequence[int] | None = None
    ) -> int:
        """Poll Cluster.Status until the running nodes agree on one leader; its id.

        Agreement of all of them (not one node claiming to lead) matters: a
        test that starts right after must find every endpoint usable.
        """
        ids = list(among) if among is not None else self.running_ids()
        endpoints = [self.nodes[i].client_addr for i in ids]
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        with Client(endpoints, timeout=1.0) as client:
            while time.monotonic() < deadline:
                self.check_running(ids)
                rows = client.status()
                seen = [f"{r.endpoint}: {r.status or r.error}" for r in rows]
                statuses = [r.status for r in rows if r.status is not None]
                leaders = {s.header.leader_id for s in statuses}
                if len(statuses) == len(ids) and len(leaders) == 1 and 0 not in leaders:
                    (leader,) = leaders
                    if any(s.header.member_id == leader and s.is_leader for s in statuses):
                        return leader
                time.sleep(0.1)
        raise TimeoutError(f"no leader agreed within {timeout} s: " + "; ".join(seen))

    def leader_id(self) -> int:
        return self.wait_for_leader()

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        path = self.nodes[node_id].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def logs(self, lines: int = 40) -> str:
        return "\n".join(
            f"----- node {i} ({n.client_addr}) -----\n{self.log_tail(i, lines)}"
            for i, n in self.nodes.items()
        )


@contextmanager
def running_cluster(
    base_dir: Path, size: int = 3, extra_args: Sequence[str] = (), attempts: int = 3
) -> Iterator[Cluster]:
    """A started cluster with an agreed leader; stopped on the way out, whatever happens.

    Free ports can be taken by someone else between choosing and binding
    them; a start whose node then dies is retried on new ports.
    """
    cluster: Cluster | None = None
    try:
        for attempt in range(1, attempts + 1):
            cluster = Cluster(base_dir / f"try{attempt}", size, extra_args)
            try:
                cluster.start()
                cluster.wait_for_leader()
                break
            except RuntimeError:
                if attempt < attempts and _port_taken(cluster.logs()):
                    cluster.stop()
                    continue
                raise
        assert cluster is not None
        yield cluster
    except BaseException:
        if cluster is not None:
            print(cluster.logs(), file=sys.stderr)
        raise
    finally:
        if cluster is not None:
            cluster.stop()


def _port_taken(logs: str) -> bool:
    lowered = logs.lower()
    return any(
        s in lowered for s in ("in use", "cannot listen", "failed to bind", "address already")
    )
