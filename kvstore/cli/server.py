"""``kvstore serve``: run one member of a cluster (DESIGN 3.2).

Every flag also reads an environment variable (``--client-addr`` from
``KVSTORE_CLIENT_ADDR`` ...), so the same image runs anywhere (12-factor).
The process exits 0 after a clean shutdown on SIGTERM or SIGINT.

A new cluster starts from ``--initial-cluster`` on every member; a member
added later starts with ``--join ENDPOINTS`` (client addresses of running
members) and asks the cluster to add it (see kvstore.join). It exits 1 when
it cannot join within ``--join-timeout``. In Kubernetes mode (``--k8s``) the
id, addresses and peers come from the StatefulSet pod (see kvstore.k8s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from kvstore.eventloop import run_event_loop, settle_gc
from kvstore.join import JoinError, fetch_cluster_id, join, parse_endpoints, write_cluster_id
from kvstore.k8s import KubernetesError, Plan, plan, pod_from_env, settle
from kvstore.node import NodeConfig, cluster_id_of, parse_initial_cluster
from kvstore.node.config import DEFAULT_CLIENT_ACCEPTORS, DEFAULT_MAX_VALUE_SIZE
from kvstore.restore import DESCRIPTION as RESTORE_DESCRIPTION
from kvstore.restore import add_arguments as add_restore_arguments
from kvstore.restore import main as run_restore
from kvstore.storage import DEFAULT_MAP_SIZE
from kvstore.tls import TlsError, client_port_tls, peer_port_tls
from kvstore.transport.dialer import parse_routes

log = logging.getLogger("kvstore.serve")


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("KVSTORE_" + name.upper().replace("-", "_"), default)


def _size(text: str) -> int:
    """``1GiB``, ``512MiB``, ``4096`` -> bytes."""
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
    lowered = text.strip().lower()
    for suffix, factor in units.items():
        if lowered.endswith(suffix):
            return int(float(lowered[: -len(suffix)]) * factor)
    return int(lowered)


def _bool(text: str) -> bool:
    """``true``/``false`` (also 1/0, yes/no, on/off), as etcd's boolean flags and env."""
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("", "0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not a boolean (true or false)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvstore", description="A replicated key-value store")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run one member of a cluster")

    def flag(name: str, help: str, default: str | None = None, **kw: object) -> None:
        env = "KVSTORE_" + name.upper().replace("-", "_")
        serve.add_argument(
            "--" + name, default=_env(name, default), help=f"{help} (env {env})", **kw
        )

    flag("id", "this member's id, a positive integer", type=int)
    flag("client-addr", "host:port for clients", "127.0.0.1:7101")
    flag(
        "peer-addr",
        "host:port the other members reach this one at (default 127.0.0.1:7201; "
        "Kubernetes mode: the pod's name under --peer-service, port 7201)",
    )
    flag("listen-peer-addr", "host:port to listen on for peers (default: --peer-addr)", "")
    flag("metrics-addr", "host:port for Prometheus metrics (empty: none)", "")
    flag("data-dir", "directory of this member's LMDB environment")
    flag("initial-cluster", "ID=PEER_ADDR,... of the members at bootstrap", "")
    flag("join", "client endpoints HOST:PORT,... of a running cluster to join as a new member", "")
    flag(
        "peer-routes",
        "ADVERTISED=DIAL,...: dial these members' peer addresses at other host:ports "
        "(a port-forward, a test proxy)",
        "",
    )
    flag("join-timeout", "seconds to keep trying to join before exiting 1", "120", type=float)
    flag("election-timeout", "election timeout in ms", "1000", type=int)
    flag("heartbeat-interval", "heartbeat interval in ms", "100", type=int)
    flag("snapshot-count", "applied entries between snapshots", "10000", type=int)
    flag("snapshot-trailing", "log entries kept before a snapshot", "5000", type=int)
    flag("map-size", "LMDB map size (the largest the database may grow)", str(DEFAULT_MAP_SIZE))
    flag("max-value-size", "largest value in bytes", str(DEFAULT_MAX_VALUE_SIZE), type=int)
    flag("request-timeout", "server-side bound on one request, seconds", "5", type=float)
    flag(
        "flush-linger",
        "while earlier writes are in flight, batch new ones for at most this long, ms",
        "10",
        type=float,
    )
    flag(
        "read-round-gap",
        "with other readers about, reads gather for a ReadIndex round at most this long, ms "
        "(0: rounds back to back)",
        "4",
        type=float,
    )
    flag(
        "client-acceptors",
        "gRPC servers sharing the client port (SO_REUSEPORT): calls on different "
        "connections get in side by side; 1: one server, the port exclusive",
        str(DEFAULT_CLIENT_ACCEPTORS),
        type=int,
    )
    flag(
        "event-loop",
        "uvloop (faster, the default when installed) or asyncio (the standard library's)",
        "uvloop",
        choices=["uvloop", "asyncio"],
    )
    flag("log-level", "DEBUG, INFO, WARNING or ERROR", "INFO")
    # Kubernetes mode (kvstore.k8s): id, addresses and peers from the StatefulSet pod.
    flag(
        "k8s",
        "Kubernetes mode: run as a StatefulSet pod",
        "false",
        type=_bool,
        nargs="?",
        const=True,
    )
    flag(
        "replicas", "Kubernetes mode: members of the initial cluster (keep when scaling)", type=int
    )
    flag("peer-service", "Kubernetes mode: the StatefulSet's headless Service", "")
    flag("cluster-domain", "Kubernetes mode: the cluster's DNS domain", "cluster.local")
    # TLS, as etcd's flags (see kvstore.tls); without them traffic is plaintext.
    flag("cert-file", "client port TLS certificate, PEM (with --key-file: TLS for clients)", "")
    flag("key-file", "private key of --cert-file, PEM", "")
    flag(
        "trusted-ca-file",
        "CA of client certificates (--client-cert-auth); a member joining with --join "
        "also trusts it for the cluster's client endpoints",
        "",
    )
    flag(
        "client-cert-auth",
        "refuse clients without a certificate signed by --trusted-ca-file",
        "false",
        type=_bool,
        nargs="?",
        const=True,
    )
    flag("peer-cert-file", "peer TLS certificate, PEM (peer TLS is always mutual)", "")
    flag("peer-key-file", "private key of --peer-cert-file, PEM", "")
    flag("peer-trusted-ca-file", "CA that every peer's certificate must chain to", "")
    restore = commands.add_parser(
        "restore",
        help="seed a new cluster's member from a backup (kvctl snapshot save)",
        description=RESTORE_DESCRIPTION,
    )
    add_restore_arguments(restore, _env)
    return parser


def kubernetes_plan(args: argparse.Namespace) -> Plan | None:
    """Kubernetes mode's id, addresses and peers (kvstore.k8s); None outside it."""
    if not args.k8s:
        if args.replicas is not None or args.peer_service:
            raise ValueError("--replicas and --peer-service are for Kubernetes mode (--k8s)")
        return None
    pod = pod_from_env(os.environ, args.peer_service, args.cluster_domain)
    return plan(
        pod,
        args.replicas,
        client_addr=args.client_addr,
        peer_addr=args.peer_addr,
        listen_peer_addr=args.listen_peer_addr,
        join=parse_endpoints(args.join or ""),
        member_id=args.id,
        initial_cluster=args.initial_cluster or "",
    )


def config_from_args(args: argparse.Namespace, k8s: Plan | None = None) -> NodeConfig:
    k8s = k8s or kubernetes_plan(args)
    if k8s is None and args.id is None:
        raise ValueError("--id is required (or KVSTORE_ID)")
    if not args.data_dir:
        raise ValueError("--data-dir is required (or KVSTORE_DATA_DIR)")
    return NodeConfig(
        id=k8s.member_id if k8s else int(args.id),
        client_addr=args.client_addr,
        peer_addr=k8s.peer_addr if k8s else args.peer_addr or "127.0.0.1:7201",
        listen_peer_addr=k8s.listen_peer_addr if k8s else args.listen_peer_addr,
        metrics_addr=args.metrics_addr or None,
        data_dir=Path(args.data_dir),
        initial_cluster=(
            k8s.initial_cluster if k8s else parse_initial_cluster(args.initial_cluster or "")
        ),
        join=k8s.join if k8s else parse_endpoints(args.join or ""),
        peer_routes=parse_routes(args.peer_routes or ""),
        join_timeout=float(args.join_timeout),
        election_timeout_ms=int(args.election_timeout),
        heartbeat_interval_ms=int(args.heartbeat_interval),
        snapshot_count=int(args.snapshot_count),
        snapshot_trailing=int(args.snapshot_trailing),
        map_size=_size(str(args.map_size)),
        max_value_size=int(args.max_value_size),
        request_timeout=float(args.request_timeout),
        flush_linger=float(args.flush_linger) / 1000,
        read_round_gap=float(args.read_round_gap) / 1000,
        event_loop=str(args.event_loop),
        client_acceptors=int(args.client_acceptors),
        client_tls=client_port_tls(
            args.cert_file, args.key_file, args.trusted_ca_file, bool(args.client_cert_auth)
        ),
        peer_tls=peer_port_tls(args.peer_cert_file, args.peer_key_file, args.peer_trusted_ca_file),
    )


def stored_cluster_id(config: NodeConfig) -> int:
    """The cluster id fixed at bootstrap, kept beside the data: later flags may differ."""
    path = config.data_dir / "cluster_id"
    if path.exists():
        return int(path.read_text().strip())
    if not config.initial_cluster:
        raise ValueError(
            "new data directory: --initial-cluster is required to bootstrap a new cluster "
            "(or --join to join a running one)"
        )
    cluster_id = cluster_id_of(config.initial_cluster)
    write_cluster_id(config.data_dir, cluster_id)
    return cluster_id


def join_credentials(config: NodeConfig) -> grpc.ChannelCredentials | None:
    """How a joining member dials the cluster's client endpoints: with its own client
    port's TLS (its certificate as the client certificate, --trusted-ca-file as the
    CA of the members' certificates), for the members share one client TLS setup."""
    return config.client_tls.load().channel_credentials() if config.client_tls else None


async def _learn_cluster_id(config: NodeConfig) -> None:
    """A joining member with a new data directory takes the cluster's id."""
    if (config.data_dir / "cluster_id").exists():
        return
    cluster_id = await fetch_cluster_id(
        config.join, config.join_timeout, credentials=join_credentials(config)
    )
    write_cluster_id(config.data_dir, cluster_id)
    log.info("joining cluster %d through %s", cluster_id, ",".join(config.join))


async def serve(config: NodeConfig) -> int:
    from kvstore.server import Server

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopper = asyncio.ensure_future(stop.wait())
    if config.join:
        learning = asyncio.ensure_future(_learn_cluster_id(config))
        await asyncio.wait({stopper, learning}, return_when=asyncio.FIRST_COMPLETED)
        if not learning.done():
            learning.cancel()
            return 0
        if isinstance(learning.exception(), JoinError):
            log.critical("member %d cannot join: %s", config.id, learning.exception())
            return 1
        learning.result()
    server = Server(config)
    try:
        await server.start()
    except OSError as exc:  # a port taken: say which, and close what started
        log.critical("member %d cannot start: %s", config.id, exc)
        await server.stop()
        return 1
    settle_gc()
    log.info(
        "member %d serving clients on %s, peers on %s (known to them as %s)",
        config.id,
        config.client_addr,
        config.listen_peer_addr,
        config.peer_addr,
    )
    assert server.node.fatal is not None
    waits: set[asyncio.Future[Any]] = {stopper, server.node.fatal}
    joining: asyncio.Future[None] | None = None
    if config.join:
        joining = asyncio.ensure_future(
            join(
                config.id,
                config.peer_addr,
                server.cluster_id,
                config.join,
                config.join_timeout,
                lambda: server.node.raft.configuration.is_voter(config.id),
                credentials=join_credentials(config),
            )
        )
        waits.add(joining)
    code = 0
    while code == 0 and not stopper.done():
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if server.node.fatal in done:
            code = 1
        elif joining is not None and joining in done:
            waits.discard(joining)
            if joining.exception() is not None:
                log.critical("member %d cannot join: %s", config.id, joining.exception())
                code = 1
    stopper.cancel()
    if joining is not None and not joining.done():
        joining.cancel()
    log.info("member %d shutting down", config.id)
    await server.stop()
    log.info("member %d stopped", config.id)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "restore":
        return run_restore(args, _size)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        k8s = kubernetes_plan(args)
        config = config_from_args(args, k8s)
        for tls in (config.client_tls, config.peer_tls):
            if tls is not None:
                tls.load()  # fail now, naming the file, not at the first handshake
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if k8s is not None:  # bootstrap, or rejoin a cluster that removed this member
            creds = join_credentials(config)
            config = run_event_loop(settle(config, k8s, credentials=creds), config.event_loop)
        if not config.join:
            stored_cluster_id(config)
    except (TlsError, KubernetesError) as exc:  # a file or the pod, not the flags' usage
        parser.exit(1, f"kvstore: {exc}\n")
    except (ValueError, OSError) as exc:
        parser.exit(2, f"kvstore: {exc}\n")
    profile_path = os.environ.get("KVSTORE_PROFILE")  # developers: cProfile the member
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return run_event_loop(serve(config), config.event_loop)
        return 0
    finally:
        if profile_path:
            profiler.disable()
            profiler.dump_stats(f"{profile_path}.{config.id}")


if __name__ == "__main__":
    sys.exit(main())
