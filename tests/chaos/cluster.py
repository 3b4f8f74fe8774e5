"""The chaos tests' cluster: real ``kvstore serve`` processes whose peer traffic
crosses fault-injecting proxies, with room for members to come and go.

It is the integration tests' `Cluster` (same processes, flags, ports and
logs; stopped by ``running_cluster`` whatever happens) plus:

- slots: the peer addresses of the initial members and of ``spares`` more,
  fixed at the start. Every ordered pair of slots has a proxy (`ProxyNet`)
  and every member is started with ``--peer-routes`` that send its peer
  traffic to each slot through its own proxy. A member added later takes a
  free slot (with a new id; its client and metrics ports are chosen then),
  so the members started earlier reach it through proxies too;
- faults on members: SIGSTOP/SIGCONT (a paused member is resumed before it
  is stopped, else SIGTERM would wait for ever), a slow disk (`slowdisk`),
  partitions by member id;
- crash detection: a member whose process exited although nobody stopped it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from signal import SIGCONT, SIGSTOP, SIGTERM

from kvstore.devcluster import STOP_WAIT, Member, free_ports
from tests.chaos import slowdisk
from tests.chaos.proxy import Mode, ProxyNet
from tests.integration.cluster import Cluster, running_cluster

__all__ = ["ChaosCluster", "chaos_cluster"]


class ChaosCluster(Cluster):
    """``size`` members that reach each other only through the proxies of ``net``,
    with ``spares`` free slots for members that join later; ``shim``: the slow-disk
    library every member is started with (None: disks stay fast)."""

    def __init__(
        self,
        base_dir: Path,
        size: int,
        extra_args: Sequence[str],
        *,
        net: ProxyNet,
        spares: int = 1,
        shim: Path | None = None,
    ) -> None:
        super().__init__(base_dir, size, extra_args)
        self.slots = [m.peer_addr for m in self.nodes.values()]
        self.slots += [f"127.0.0.1:{port}" for port in free_ports(spares)]
        # The proxies listen on ports the system picks; none may be a member's.
        taken = {int(m.client_addr.rsplit(":", 1)[1]) for m in self.nodes.values()}
        taken |= {int(m.metrics_addr.rsplit(":", 1)[1]) for m in self.nodes.values()}
        taken |= {int(a.rsplit(":", 1)[1]) for a in self.slots}
        self.net = net
        for a in self.slots:
            for b in self.slots:
                if a != b:
                    net.add(a, b, avoid=taken)
        self.shim = shim
        self.paused: set[int] = set()
        self.retired: dict[int, Member] = {}
        #: Members found exited although nobody stopped them: id -> exit codes.
        self.crashes: dict[int, list[int]] = {}
        self._next_id = size + 1
        (self.root / "disk").mkdir(exist_ok=True)

    # -- how members start ---------------------------------------------------------------

    def command(self, member: Member) -> list[str]:
        routes = self.net.route(member.peer_addr)
        return [
            *super().command(member),
            "--peer-routes",
            ",".join(f"{adv}={dial}" for adv, dial in sorted(routes.items())),
        ]

    def child_env(self, member: Member) -> dict[str, str]:
        env = super().child_env(member)
        if self.shim is not None:
            env["LD_PRELOAD"] = str(self.shim)
            env[slowdisk.DELAY_ENV] = str(self.disk_file(member.id))
        return env

    @property
    def client_endpoints(self) -> list[str]:
        """The members' client addresses (a copy: nemeses change the members in threads)."""
        return [m.client_addr for m in list(self.nodes.values())]

    def peer_addr(self, member_id: int) -> str:
        return self.nodes[member_id].peer_addr

    # -- faults ------------------------------------------------------------------------------

    def pause(self, ids: Iterable[int]) -> None:
        for i in ids:
            self.signal(i, SIGSTOP)
            self.paused.add(i)

    def resume(self, ids: Iterable[int] | None = None) -> None:
        for i in list(self.paused if ids is None else ids):
            if i in self.nodes:
                self.signal(i, SIGCONT)
            self.paused.discard(i)

    def stop(
        self,
        member_id: int | Sequence[int] | None = None,
        timeout: float = STOP_WAIT,
        sig: int = SIGTERM,
    ) -> dict[int, int | None]:
        """As `LocalCluster.stop`, after resuming paused members among them."""
        ids = self.ids_of(member_id)
        self.resume([i for i in ids if i in self.paused])
        return super().stop(ids, timeout, sig)

    def disk_file(self, member_id: int) -> Path:
        return self.root / "disk" / str(member_id)

    def set_disk_delay(self, ids: Iterable[int], milliseconds: int) -> None:
        for i in ids:
            slowdisk.set_delay(self.disk_file(i), milliseconds)

    def partition(self, blocked: Iterable[tuple[int, int]], mode: Mode = Mode.DROP) -> None:
        """Cut both directions between each pair of member ids; all other links pass."""
        self.net.isolate(((self.peer_addr(a), self.peer_addr(b)) for a, b in blocked), mode)

    def heal(self) -> None:
        """Undo every fault but crashes: links pass, paused members resume, disks are fast."""
        self.net.heal()
        self.resume()
        self.set_disk_delay(self.nodes, 0)

    # -- membership ------------------------------------------------------------------------

    def free_slot(self) -> str | None:
        """A slot's peer address that no member uses."""
        taken = {m.peer_addr for m in self.nodes.values()}
        return next((s for s in self.slots if s not in taken), None)

    def add_joiner(self) -> Member:
        """A new member (a new id) in a free slot, started with ``--join``; it asks the
        members to add it and returns once it votes (the caller waits for that)."""
        slot = self.free_slot()
        if slot is None:
            raise RuntimeError("no free slot for a new member")
        member_id, self._next_id = self._next_id, self._next_id + 1
        client_port, metrics_port = free_ports(2)
        member = Member(
            id=member_id,
            client_addr=f"127.0.0.1:{client_port}",
            peer_addr=slot,
            metrics_addr=f"127.0.0.1:{metrics_port}",
            data_dir=self.root / str(member_id),
            log_path=self.root / f"{member_id}.log",
            join=[self.nodes[i].client_addr for i in self.running_ids()],
        )
        self.nodes[member_id] = member
        self.start_node(member_id)
        return member

    def retire(self, member_id: int) -> None:
        """Stop a member that was removed from the cluster and free its slot."""
        self.stop_node(member_id)
        self.set_disk_delay([member_id], 0)
        self.retired[member_id] = self.nodes.pop(member_id)

    # -- crashes ---------------------------------------------------------------------------------

    def find_crashes(self) -> list[int]:
        """Members that exited although nobody stopped them (recorded in ``crashes``);
        their process is forgotten, so a restart is possible."""
        found = []
        for i, member in list(self.nodes.items()):
            if member.process is not None and member.process.poll() is not None:
                self.crashes.setdefault(i, []).append(member.process.returncode)
                member.process = None
                self.paused.discard(i)
                found.append(i)
        return found

    def all_log_paths(self) -> list[Path]:
        return [m.log_path for m in [*self.nodes.values(), *self.retired.values()]]


@contextmanager
def chaos_cluster(
    base_dir: Path,
    size: int = 3,
    extra_args: Sequence[str] = (),
    spares: int = 1,
    slow_disk: bool = True,
) -> Iterator[ChaosCluster]:
    """A started chaos cluster with an agreed leader; its processes and proxies are
    stopped on the way out, whatever happens."""
    shim = slowdisk.build_shim(base_dir / "shim") if slow_disk else None
    with ProxyNet() as net:
        factory = partial(ChaosCluster, net=net, spares=spares, shim=shim)
        with running_cluster(base_dir, size, extra_args, factory=factory) as cluster:
            yield cluster


def copy_logs(cluster: ChaosCluster, target: Path) -> None:
    """Copy every member's log (retired ones too) into ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    for path in cluster.all_log_paths():
        if path.exists():
            shutil.copy(path, target / path.name)
