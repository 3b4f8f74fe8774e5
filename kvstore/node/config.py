"""What a node needs to know to run: identity, addresses, tuning."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from kvstore.storage import DEFAULT_MAP_SIZE
from kvstore.tls import ServerTls

DEFAULT_MAX_VALUE_SIZE = 1 << 20
#: gRPC servers on the client port (kvstore.api.client_port), and the most allowed.
DEFAULT_CLIENT_ACCEPTORS = 8
MAX_CLIENT_ACCEPTORS = 64


def parse_initial_cluster(text: str) -> dict[int, str]:
    """``1=127.0.0.1:7201,2=...`` -> {1: "127.0.0.1:7201", ...}; errors name the bad part."""
    members: dict[int, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        ident, sep, address = part.partition("=")
        if not sep or not address:
            raise ValueError(f"initial cluster member {part!r} is not ID=HOST:PORT")
        try:
            member_id = int(ident)
        except ValueError:
            raise ValueError(f"initial cluster member id {ident!r} is not a number") from None
        if member_id <= 0:
            raise ValueError(f"initial cluster member id must be positive, got {member_id}")
        if member_id in members:
            raise ValueError(f"initial cluster lists member {member_id} twice")
        members[member_id] = address
    return members


def cluster_id_of(initial_cluster: dict[int, str]) -> int:
    """A cluster's id, derived from its initial members as etcd does: two clusters
    started from different member lists never accept each other's messages."""
    text = ",".join(f"{i}={a}" for i, a in sorted(initial_cluster.items()))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass
class NodeConfig:
    id: int
    client_addr: str
    # The address the other members know this one by (its identity in the Raft
    # configuration, sent in MemberAdd); the peer server listens on
    # listen_peer_addr, by default the same (etcd: advertise vs listen URLs).
    peer_addr: str
    data_dir: Path
    listen_peer_addr: str = ""
    initial_cluster: dict[int, str] = field(default_factory=dict)
    # Client endpoints of a running cluster to join (instead of initial_cluster).
    join: list[str] = field(default_factory=list)
    join_timeout: float = 120.0
    metrics_addr: str | None = None
    # Dial these advertised peer addresses at other host:ports (see transport.dialer).
    peer_routes: dict[str, str] = field(default_factory=dict)
    # TLS on the client port (None: plaintext) and mutual TLS between peers (kvstore.tls).
    client_tls: ServerTls | None = None
    peer_tls: ServerTls | None = None
    election_timeout_ms: int = 1000
    heartbeat_interval_ms: int = 100
    pre_vote: bool = True
    snapshot_count: int = 10_000  # applied entries between snapshots (etcd's default)
    snapshot_trailing: int = 5_000  # entries kept before a snapshot for slow followers
    map_size: int = DEFAULT_MAP_SIZE
    max_value_size: int = DEFAULT_MAX_VALUE_SIZE
    request_timeout: float = 5.0
    # Unacknowledged entries per follower. C-Raft's 32 would cap a pipeline
    # of one-entry client writes at 32 per follower round trip.
    max_inflight_entries: int = 1024
    # raftcore asks for a snapshot again after this long without an answer. The
    # node does not resend one that arrived (see SnapshotManager.send), so this
    # bounds how long a follower waits after a send failed (it was down): C-Raft's
    # 30 s kept restarted members behind that long in the chaos tests.
    install_snapshot_timeout_ms: int = 5_000
    # While earlier writes are in flight, new updates wait for them to land, but
    # at most this long (seconds) after the last flush (see Node._schedule_flush).
    flush_linger: float = 0.010
    # How long (seconds) linearizable reads may gather for a ReadIndex round
    # when other readers are about; a lone reader never waits (kvstore.node.reads).
    read_round_gap: float = 0.004
    # "uvloop" or "asyncio" (see kvstore.eventloop).
    event_loop: str = "uvloop"
    # gRPC servers sharing the client port (see kvstore.api.client_port).
    client_acceptors: int = DEFAULT_CLIENT_ACCEPTORS
    # Writes are refused (NoSpace) while a majority has less free map space
    # than this, so that the log and the state machine never hit a full map.
    capacity_threshold: int = 0

    def __post_init__(self) -> None:
        if self.id <= 0:
            raise ValueError(f"--id must be positive, got {self.id}")
        if self.initial_cluster and self.id not in self.initial_cluster:
            raise ValueError(f"--id {self.id} is not in --initial-cluster")
        if self.initial_cluster and self.join:
            raise ValueError(
                "--join and --initial-cluster exclude each other: a new cluster is "
                "bootstrapped from --initial-cluster, a member joins a running one with --join"
            )
        for flag, seconds in (
            ("flush-linger", self.flush_linger),
            ("read-round-gap", self.read_round_gap),
        ):
            if not seconds >= 0:  # also NaN
                raise ValueError(f"--{flag} must be a number of ms >= 0, got {seconds * 1000}")
        if not 1 <= self.client_acceptors <= MAX_CLIENT_ACCEPTORS:
            raise ValueError(
                f"--client-acceptors must be 1 to {MAX_CLIENT_ACCEPTORS}, "
                f"got {self.client_acceptors}"
            )
        if self.capacity_threshold == 0:
            self.capacity_threshold = max(4 << 20, 4 * self.max_value_size)
        if not self.listen_peer_addr:
            self.listen_peer_addr = self.peer_addr

    @property
    def cluster_id(self) -> int:
        return cluster_id_of(self.initial_cluster)
