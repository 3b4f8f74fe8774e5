"""Prometheus metrics, and the /metrics, /livez and /readyz HTTP endpoints.

State that the node already keeps (term, indexes, leader, sizes, transport
counters) is read at scrape time by a collector, so the hot path pays
nothing for it; durations and counts of events are recorded where they
happen. Each node has its own registry, so that several nodes can share a
process in tests. Names follow Prometheus conventions: ``kvstore_`` prefix,
base units in the name, ``_total`` counters, ``_seconds`` histograms.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from raftcore import State

if TYPE_CHECKING:
    from kvstore.node import Node

log = logging.getLogger("kvstore.metrics")

# From 100 µs (an fsync, a loopback round trip) to 10 s (a snapshot, an election).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
LIVENESS_STALE_SECONDS = 10.0


class LatencyHistogram:
    """Bucket counts over LATENCY_BUCKETS and their sum, for one writer thread."""

    def __init__(self) -> None:
        self.counts = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one: above every bound
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.sum += seconds

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs as Prometheus wants them, from a copy."""
        counts = list(self.counts)
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*map(str, LATENCY_BUCKETS), "+Inf"), counts, strict=True):
            total += count
            out.append((bound, total))
        return out


class NodeMetrics:
    """The metrics of one node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.proposals_applied = 0  # exported by _NodeCollector (a plain int: once per write)
        # Calls each of the client port's servers took in (set by kvstore.server).
        self.acceptor_calls: list[int] = []
        self.proposals_failed = Counter(
            "kvstore_proposals_failed",
            "Client writes that failed (not leader, no space, leadership lost)",
            ["reason"],
            registry=r,
        )
        self.persist_seconds = Histogram(
            "kvstore_log_persist_duration_seconds",
            "Time to make log entries and term/vote durable (one LMDB transaction and fsync)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.apply_seconds = Histogram(
            "kvstore_apply_duration_seconds",
            "Time to apply a batch of committed entries (one LMDB transaction)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.snapshot_seconds = Histogram(
            "kvstore_snapshot_duration_seconds",
            "Time to take, send or install a snapshot",
            ["kind"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.peer_rtt_seconds = Histogram(
            "kvstore_peer_round_trip_seconds",
            "AppendEntries to its result, per peer",
            ["peer"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.loop_heartbeat = time.monotonic()
        # Per client request, so plain numbers rather than prometheus-client's
        # metrics (a lock per counter, ~5 per request): only the loop thread
        # writes them; a scrape reads a copy.
        self.requests: dict[tuple[str, str], int] = {}  # (method, code) -> count
        self.request_seconds: dict[str, LatencyHistogram] = {}  # method -> latencies

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        """Count one client request and its latency."""
        key = (method, code)
        self.requests[key] = self.requests.get(key, 0) + 1
        histogram = self.request_seconds.get(method)
        if histogram is None:
            histogram = self.request_seconds[method] = LatencyHistogram()
        histogram.observe(seconds)

    def attach(self, node: Node) -> None:
        self.registry.register(_NodeCollector(node))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    """Gauges and counters read from the node at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        node = self.node
        raft = node.raft

        def gauge(name: str, help: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, help, value=value)

        def counter(name: str, help: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(name, help, value=value)

        yield gauge("kvstore_raft_term", "Current Raft term", raft.current_term)
        yield gauge("kvstore_raft_commit_index", "Raft commit index", raft.commit_index)
        yield gauge("kvstore_raft_applied_index", "Index applied to the data", node.applied_index)
        yield gauge("kvstore_raft_last_index", "Last log index (in memory)", raft.last_index)
        yield gauge("kvstore_raft_is_leader", "1 if this member leads", raft.state == State.LEADER)
        yield gauge("kvstore_raft_has_leader", "1 if a leader is known", raft.leader[0] != 0)
        yield counter(
            "kvstore_raft_leader_changes", "Times a new leader was seen", node.leader_changes
        )
        yield counter(
            "kvstore_proposals_committed", "Log entries seen committed", node.committed_entries
        )
        yield gauge("kvstore_proposals_pending", "Client writes waiting", len(node.proposals))
        yield counter(
            "kvstore_read_rounds",
            "ReadIndex rounds this member started as leader; linearizable reads share them",
            node.reads.rounds,
        )
        yield counter(
            "kvstore_proposals_applied",
            "Client writes applied and answered",
            node.metrics.proposals_applied,
        )
        requests = CounterMetricFamily(
            "kvstore_grpc_requests",
            "Client gRPC requests by method and status code",
            labels=["method", "code"],
        )
        for (method, code), count in list(node.metrics.requests.items()):
            requests.add_metric([method, code], count)
        yield requests
        accepted = CounterMetricFamily(
            "kvstore_client_acceptor_calls",
            "Client calls taken in by each gRPC server on the client port (--client-acceptors)",
            labels=["acceptor"],
        )
        for index, count in enumerate(node.metrics.acceptor_calls):
            accepted.add_metric([str(index)], count)
        yield accepted
        latency = HistogramMetricFamily(
            "kvstore_grpc_request_duration_seconds",
            "Client gRPC request latency by method",
            labels=["method"],
        )
        for method, histogram in list(node.metrics.request_seconds.items()):
            latency.add_metric([method], histogram.buckets(), histogram.sum)
        yield latency
        yield gauge("kvstore_raft_members", "Members in the configuration", len(raft.configuration))
        snapshots = node.snapshots
        family = CounterMetricFamily(
            "kvstore_snapshots", "Snapshots taken, sent and installed", labels=["kind"]
        )
        family.add_metric(["taken"], snapshots.taken)
        family.add_metric(["sent"], snapshots.sent)
        family.add_metric(["installed"], snapshots.installed)
        yield family
        storage = node.storage
        yield gauge("kvstore_db_size_bytes", "LMDB data file size", storage.db_size_bytes())
        yield gauge("kvstore_db_map_size_bytes", "LMDB map size (the limit)", storage.map_size)
        yield gauge("kvstore_db_used_bytes", "LMDB pages in use (high-water mark)",
                    storage.used_bytes())  # fmt: skip
        yield gauge("kvstore_keys", "Keys in the store", _key_count(node))
        committer = node.committer
        if committer is not None:
            stats = committer.stats
            yield counter(
                "kvstore_db_transactions",
                "LMDB write transactions committed (group commit), each with its fsync",
                stats.transactions,
            )
            yield counter(
                "kvstore_db_write_requests",
                "Writes (log appends, term/vote, applies, snapshots) run in those transactions; "
                "requests / transactions is the group-commit batching",
                stats.requests,
            )
        transport = node.transport
        if transport is not None:
            failures = CounterMetricFamily(
                "kvstore_peer_send_failures", "Peer streams that failed", labels=["peer"]
            )
            dropped = CounterMetricFamily(
                "kvstore_peer_messages_dropped", "Messages to a peer dropped", labels=["peer"]
            )
            sent = CounterMetricFamily(
                "kvstore_peer_messages_sent", "Messages sent to a peer", labels=["peer"]
            )
            frames = CounterMetricFamily(
                "kvstore_peer_frames_sent",
                "Stream frames (gRPC messages) sent to a peer; messages / frames is the batching",
                labels=["peer"],
            )
            for peer, stats in transport.stats().items():
                failures.add_metric([str(peer)], stats.send_failures)
                dropped.add_metric([str(peer)], stats.dropped)
                sent.add_metric([str(peer)], stats.messages_sent)
                frames.add_metric([str(peer)], stats.frames_sent)
            yield failures
            yield dropped
            yield sent
            yield frames
        forward = node.forward_stats
        if forward is not None:
            yield counter(
                "kvstore_forward_requests_sent",
                "Client requests this member forwarded to the leader",
                forward.requests_sent,
            )
            yield counter(
                "kvstore_forward_frames_sent",
                "Stream frames those requests went in; requests / frames is the batching",
                forward.frames_sent,
            )
            yield counter(
                "kvstore_forward_requests_served",
                "Forwarded requests this member served as the leader",
                forward.requests_served,
            )
            yield counter(
                "kvstore_forward_answer_frames_sent",
                "Stream frames the answers to forwarded requests went in",
                forward.answer_frames_sent,
            )
        stats = node.peer_server_stats
        if stats is not None:
            family = CounterMetricFamily(
                "kvstore_peer_refused", "Peer frames refused, by reason", labels=["reason"]
            )
            family.add_metric(["cluster"], stats.refused_cluster)
            family.add_metric(["recipient"], stats.refused_recipient)
            family.add_metric(["sender"], stats.refused_sender)
            family.add_metric(["malformed"], stats.malformed)
            yield family


def _key_count(node: Node) -> int:
    env = node.storage.env
    with env.read() as txn:
        return int(txn.stat(env.kv_db)["entries"])


class HealthServer:
    """/metrics, /livez (the node loop turns) and /readyz (leader known, caught up)."""

    def __init__(self, address: str, metrics: NodeMetrics, node: Node) -> None:
        host, _, port = address.rpartition(":")
        metrics_ref, node_ref = metrics, node

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                if path == "/metrics":
                    self._send(200, metrics_ref.exposition(), CONTENT_TYPE_LATEST)
                elif path == "/livez":
                    age = time.monotonic() - metrics_ref.loop_heartbeat
                    ok = age < LIVENESS_STALE_SECONDS
                    self._text(200 if ok else 503, f"{'ok' if ok else 'stalled'} ({age:.1f} s)")
                elif path == "/readyz":
                    ok, why = node_ref.readiness()
                    self._text(200 if ok else 503, why)
                else:
                    self._text(404, "not found: try /metrics, /livez or /readyz")

            def _text(self, code: int, text: str) -> None:
                self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="kvstore-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
