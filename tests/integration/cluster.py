"""A real cluster of ``kvstore serve`` processes on 127.0.0.1, for tests.

    with running_cluster(tmp_path) as cluster:      # 3 nodes, a leader elected
        with cluster.client() as client:
            client.put("k", "v")
        cluster.kill_node(cluster.leader_id())      # SIGKILL, data dir kept
        cluster.start_node(1)                       # restart on the same data

The processes are those of :class:`kvstore.devcluster.LocalCluster` (``make
run``): one ``python -m kvstore serve`` per node with the flags of DESIGN 3.2,
on free ports, with its data directory and log file under the given base
directory. Only the processes started here are ever signalled, by PID, and
``stop()`` (SIGTERM, then SIGKILL after a timeout) always runs on the way out
of ``running_cluster``, also when a test fails. The nodes' logs are printed to
stderr when the block fails, so pytest shows them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from kvstore.client import Client, ClientTls, KVError, Status
from kvstore.devcluster import REPO, STOP_WAIT, LocalCluster, Member, free_ports

__all__ = [
    "FAST_TIMEOUTS",
    "REPO",
    "Cluster",
    "Member",
    "free_ports",
    "running_cluster",
    "wait_until",
]

LEADER_WAIT = 30.0
#: Shorter than the defaults (1000 / 100 ms), so elections after a crash take
#: well under a second, and still far above a loaded 2-core machine's hiccups.
FAST_TIMEOUTS = ("--election-timeout", "500", "--heartbeat-interval", "50")
T = TypeVar("T")
C = TypeVar("C", bound="Cluster")


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll ``probe`` until it returns something truthy (returned), or fail after
    ``timeout`` seconds naming ``what`` and the last value or error seen."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            value = probe()
        except (KVError, OSError) as exc:
            value, last = None, exc
        else:
            last = value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not within {timeout} s (last: {last!r})")
        time.sleep(interval)


class Cluster(LocalCluster):
    """``size`` nodes that know each other; ``extra_args`` go to every ``kvstore serve``.

    ``client_tls``: how this harness's clients talk to a cluster whose client
    port uses TLS (set by ``extra_args``); a ``tls=`` argument overrides it.
    """

    def __init__(
        self,
        base_dir: Path,
        size: int = 3,
        extra_args: Sequence[str] = (),
        client_tls: ClientTls | None = None,
    ) -> None:
        super().__init__(Path(base_dir), size=size, extra_args=list(extra_args))
        self.client_tls = client_tls

    @property
    def nodes(self) -> dict[int, Member]:
        return self.members

    def client(self, endpoints: Sequence[str] | None = None, **kwargs: Any) -> Client:
        kwargs.setdefault("tls", self.client_tls)
        return Client(list(endpoints or self.endpoints), **kwargs)

    def node_client(self, node_id: int, **kwargs: Any) -> Client:
        """A client of that node alone (no failover to the others)."""
        kwargs.setdefault("tls", self.client_tls)
        return Client([self.members[node_id].client_addr], **kwargs)

    # -- processes -------------------------------------------------------------

    def start_node(self, node_id: int) -> None:
        """Start (or restart, on its existing data directory) one node."""
        if self.members[node_id].running:
            raise RuntimeError(f"node {node_id} is already running")
        self.start(node_id)

    def stop_node(self, node_id: int, timeout: float = STOP_WAIT) -> int | None:
        """SIGTERM, then SIGKILL if still running after ``timeout``; the exit code."""
        return self.stop(node_id, timeout)[node_id]

    def kill_node(self, node_id: int) -> int | None:
        """SIGKILL: a crash. The data directory stays for a restart."""
        return self.kill(node_id)[node_id]

    # -- observation -------------------------------------------------------------

    def running_ids(self) -> list[int]:
        return [i for i, node in self.members.items() if node.running]

    def check_running(self, ids: Sequence[int] | None = None) -> None:
        """Fail with the node's log when a node that should run has exited."""
        for i in self.running_ids() if ids is None else ids:
            node = self.members[i]
            if node.process is not None and node.process.poll() is not None:
                raise RuntimeError(
                    f"node {i} exited with code {node.process.returncode}:\n{self.log_tail(i)}"
                )

    def status(self, node_id: int, timeout: float = 2.0) -> Status:
        """Cluster.Status of that node (raises a KVError when it does not answer)."""
        with self.node_client(node_id, timeout=timeout) as client:
            return client.status(self.members[node_id].client_addr)

    def wait_for_leader(
        self, timeout: float = LEADER_WAIT, among: Sequence[int] | None = None
    ) -> int:
        """Poll Cluster.Status until the running nodes agree on one leader; its id.

        Agreement of all of them (not one node claiming to lead) matters: a
        test that starts right after must find every endpoint usable.
        """
        ids = list(among) if among is not None else self.running_ids()
        endpoints = [self.members[i].client_addr for i in ids]
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        with Client(endpoints, timeout=1.0, tls=self.client_tls) as client:
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

    def wait_converged(self, timeout: float = 30.0, among: Sequence[int] | None = None) -> int:
        """Poll until the running nodes report one applied index equal to the
        commit index they all know; that index."""
        ids = list(among) if among is not None else self.running_ids()

        def probe() -> int | None:
            self.check_running(ids)
            statuses = [self.status(i) for i in ids]
            applied = {s.applied_index for s in statuses}
            commit = max(s.commit_index for s in statuses)
            return commit if applied == {commit} else None

        return wait_until(probe, timeout, f"nodes {ids} applying the same index", 0.1)


@contextmanager
def running_cluster(
    base_dir: Path,
    size: int = 3,
    extra_args: Sequence[str] = (),
    attempts: int = 3,
    factory: Callable[[Path, int, Sequence[str]], C] = Cluster,  # type: ignore[assignment]
) -> Iterator[C]:
    """A started cluster with an agreed leader; stopped on the way out, whatever happens.

    Free ports can be taken by someone else between choosing and binding
    them; a start whose node then dies is retried on new ports. ``factory``
    builds a cluster of a subclass (the chaos tests' clusters behind proxies).
    """
    cluster: C | None = None
    try:
        for attempt in range(1, attempts + 1):
            cluster = factory(base_dir / f"try{attempt}", size, extra_args)
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
