"""``kvstore serve``: run one member of a cluster (DESIGN 3.2).

Every flag also reads an environment variable (``--client-addr`` from
``KVSTORE_CLIENT_ADDR`` ...), so the same image runs anywhere (12-factor).
The process exits 0 after a clean shutdown on SIGTERM or SIGINT.

A new cluster starts from ``--initial-cluster`` on every member; a member
added later starts with ``--join ENDPOINTS`` (client addresses of running
members) and asks the cluster to add it (see kvstore.join). It exits 1 when
it cannot join within ``--join-timeout``.
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

from kvstore.join import JoinError, fetch_cluster_id, join, parse_endpoints, write_cluster_id
from kvstore.node import NodeConfig, cluster_id_of, parse_initial_cluster
from kvstore.node.config import DEFAULT_MAX_VALUE_SIZE
from kvstore.storage import DEFAULT_MAP_SIZE
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
    flag("peer-addr", "host:port for the other members", "127.0.0.1:7201")
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
        "flush-linger", "under load, carry out Raft updates at most this often, ms", "1", type=float
    )
    flag("log-level", "DEBUG, INFO, WARNING or ERROR", "INFO")
    return parser


def config_from_args(args: argparse.Namespace) -> NodeConfig:
    if args.id is None:
        raise ValueError("--id is required (or KVSTORE_ID)")
    if not args.data_dir:
        raise ValueError("--data-dir is required (or KVSTORE_DATA_DIR)")
    return NodeConfig(
        id=int(args.id),
        client_addr=args.client_addr,
        peer_addr=args.peer_addr,
        metrics_addr=args.metrics_addr or None,
        data_dir=Path(args.data_dir),
        initial_cluster=parse_initial_cluster(args.initial_cluster or ""),
        join=parse_endpoints(args.join or ""),
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


async def _learn_cluster_id(config: NodeConfig) -> None:
    """A joining member with a new data directory takes the cluster's id."""
    if (config.data_dir / "cluster_id").exists():
        return
    cluster_id = await fetch_cluster_id(config.join, config.join_timeout)
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
    await server.start()
    log.info(
        "member %d serving clients on %s, peers on %s",
        config.id,
        config.client_addr,
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
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = config_from_args(args)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        if not config.join:
            stored_cluster_id(config)
    except (ValueError, OSError) as exc:
        parser.exit(2, f"kvstore: {exc}\n")
    profile_path = os.environ.get("KVSTORE_PROFILE")  # developers: cProfile the member
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            return asyncio.run(serve(config))
        return 0
    finally:
        if profile_path:
            profiler.disable()
            profiler.dump_stats(f"{profile_path}.{config.id}")


if __name__ == "__main__":
    sys.exit(main())
