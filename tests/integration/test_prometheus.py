"""A real Prometheus server scrapes a real 3-member cluster (issue 5, "Metrics").

Prometheus (Debian's ``prometheus`` package, ``/usr/bin/prometheus``) runs as a
subprocess on a free 127.0.0.1 port, with its configuration and TSDB in the
test's temporary directory, scraping the members' ``--metrics-addr`` every
second. The test talks to it only through its HTTP API (``/api/v1/targets``,
``/api/v1/query``), as a dashboard or an alert would. Without the binary the
test is skipped, except in CI (``CI`` set), where it fails: ``.ci/run``
installs the package.

The Prometheus process is stopped by its PID (SIGTERM, then SIGKILL), and the
cluster by ``running_cluster``, whatever happens.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from signal import SIGTERM
from typing import Any

import pytest
import yaml

from kvstore.devcluster import free_port
from tests.deploy.tools import http_get, require_tool
from tests.integration.cluster import running_cluster, wait_until

JOB = "kvstore"
READY_WAIT = 20.0  # Prometheus answering /-/ready
TARGETS_UP_WAIT = 25.0  # it applies new targets every 5 s, then scrapes every second
QUERY_WAIT = 20.0
STOP_WAIT = 10.0
WRITES = 40
RATE = f"sum(rate(kvstore_proposals_applied_total{{job={JOB!r}}}[15s]))"
PERSIST_P99 = (
    "histogram_quantile(0.99, sum by (le) "
    f"(rate(kvstore_log_persist_duration_seconds_bucket{{job={JOB!r}}}[15s])))"
)
LARGEST_BUCKET = 10.0  # kvstore.metrics.LATENCY_BUCKETS[-1]: the most histogram_quantile returns


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    return require_tool(
        "prometheus", "PROMETHEUS", [Path("/usr/bin/prometheus")], "Debian package prometheus"
    )


class Prometheus:
    """One ``prometheus`` process scraping ``targets`` (member id -> metrics address)."""

    def __init__(self, binary: str, root: Path, targets: dict[int, str]) -> None:
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = f"127.0.0.1:{free_port()}"
        self.log_path = root / "prometheus.log"
        self.config_path = root / "prometheus.yml"
        self.process: subprocess.Popen[bytes] | None = None
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {
                    "job_name": JOB,
                    "metrics_path": "/metrics",
                    "static_configs": [
                        {"targets": [addr], "labels": {"member": str(i)}}
                        for i, addr in targets.items()
                    ],
                }
            ],
        }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    def start(self) -> None:
        command = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.root / 'data'}",
            f"--web.listen-address={self.address}",
        ]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> int | None:
        """SIGTERM to this PID, SIGKILL if it still runs after STOP_WAIT; the exit code."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            with suppress(ProcessLookupError):
                process.send_signal(SIGTERM)
            try:
                process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_WAIT)
        return process.returncode

    def check_running(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(
                f"prometheus exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def ready(self) -> bool:
        self.check_running()
        code, _ = http_get(f"http://{self.address}/-/ready", timeout=1.0)
        return code == 200

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/PATH; its ``data``, or an AssertionError with Prometheus's error."""
        self.check_running()
        url = f"http://{self.address}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        code, body = http_get(url, timeout=5.0)
        reply = json.loads(body)
        assert code == 200 and reply["status"] == "success", f"{url}: {code} {body}"
        return reply["data"]

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query: (labels, value) of each sample of the resulting vector."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", (expr, data)
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]

    def scalar(self, expr: str) -> float | None:
        """The single value ``expr`` gives, or None when the vector is empty."""
        result = self.query(expr)
        assert len(result) <= 1, (expr, result)
        return result[0][1] if result else None

    def by_member(self, expr: str) -> dict[int, float]:
        return {int(labels["member"]): value for labels, value in self.query(expr)}


@contextmanager
def running_prometheus(
    binary: str, root: Path, targets: dict[int, str], attempts: int = 3
) -> Iterator[Prometheus]:
    """A started, ready Prometheus; stopped on the way out, whatever happens. A
    start that loses its free port to someone else is retried on another."""
    prometheus: Prometheus | None = None
    try:
        for attempt in range(1, attempts + 1):
            prometheus = Prometheus(binary, root / f"try{attempt}", targets)
            prometheus.start()
            try:
                wait_until(prometheus.ready, READY_WAIT, "prometheus ready", 0.1)
                break
            except RuntimeError:
                if attempt < attempts and "address already in use" in prometheus.log_tail():
                    prometheus.stop()
                    continue
                raise
        assert prometheus is not None
        yield prometheus
    except BaseException:
        if prometheus is not None:
            print(f"--- prometheus log:\n{prometheus.log_tail()}", file=sys.stderr)
        raise
    finally:
        if prometheus is not None:
            prometheus.stop()


def active_targets(prometheus: Prometheus) -> dict[str, dict[str, Any]]:
    """The job's active targets by scrape URL."""
    active = prometheus.api("targets", state="active")["activeTargets"]
    return {t["scrapeUrl"]: t for t in active if t["labels"]["job"] == JOB}


def targets_up(prometheus: Prometheus, targets: dict[int, str]) -> bool:
    """Every member is an active target that is up (scraped successfully)."""
    found = active_targets(prometheus)
    expected = {f"http://{addr}/metrics" for addr in targets.values()}
    assert set(found) <= expected, f"unexpected targets: {sorted(found)}"
    return set(found) == expected and all(t["health"] == "up" for t in found.values())


def wait_targets_up(prometheus: Prometheus, targets: dict[int, str]) -> None:
    try:
        wait_until(
            lambda: targets_up(prometheus, targets),
            TARGETS_UP_WAIT,
            "prometheus scraping all three members",
            0.2,
        )
    except TimeoutError as exc:
        found = active_targets(prometheus)
        states = [f"{url}: {t['health']} {t['lastError']}" for url, t in sorted(found.items())]
        raise AssertionError(f"{exc}; targets: {states or 'none yet'}") from exc


def positive(value: float | None) -> float | None:
    """``value`` if it is a number above 0 (not None, not NaN), else None."""
    return value if value is not None and math.isfinite(value) and value > 0 else None


def test_prometheus_scrapes_the_cluster(tmp_path: Path, prometheus_binary: str) -> None:
    with running_cluster(tmp_path / "cluster") as cluster:
        targets = {i: m.metrics_addr for i, m in cluster.members.items()}
        with running_prometheus(prometheus_binary, tmp_path / "prometheus", targets) as prom:
            wait_targets_up(prom, targets)
            cluster.check_running()

            # One leader, which every member knows.
            leader = cluster.leader_id()
            assert prom.scalar(f"sum(kvstore_raft_is_leader{{job={JOB!r}}})") == 1
            assert prom.by_member("kvstore_raft_is_leader") == {
                i: float(i == leader) for i in targets
            }
            assert prom.by_member("kvstore_raft_has_leader") == dict.fromkeys(targets, 1.0)
            assert prom.by_member("up") == dict.fromkeys(targets, 1.0)

            # No client write yet: no proposal applied, so no rate of them.
            assert prom.scalar(f"sum(kvstore_proposals_applied_total{{job={JOB!r}}})") == 0
            before = prom.scalar(RATE)
            assert before is None or before == 0, before

            with cluster.client() as client:
                for i in range(WRITES):
                    client.put(f"prometheus/{i}", f"value {i}")

            rate = wait_until(
                lambda: positive(prom.scalar(RATE)),
                QUERY_WAIT,
                f"{RATE} > 0 after {WRITES} writes",
                0.25,
            )
            assert rate > 0
            # All of them, counted by the leader, which proposed and applied them.
            wait_until(
                lambda: prom.by_member("kvstore_proposals_applied_total").get(leader, 0) >= WRITES,
                QUERY_WAIT,
                f"Prometheus seeing {WRITES} proposals applied on the leader",
                0.25,
            )
            # The writes were made durable: the fsync histogram has a p99.
            p99 = wait_until(
                lambda: positive(prom.scalar(PERSIST_P99)),
                QUERY_WAIT,
                f"{PERSIST_P99} a number",
                0.25,
            )
            assert 0 < p99 <= LARGEST_BUCKET, p99
