"""The README's metric table ("Monitoring") against what a real member exports.

The exporter fixture's 3-member cluster takes a few client requests (so the
labelled gRPC metrics have samples), then every member is scraped. Each
exported metric family must have its row, under the name Prometheus stores it
by (counters with ``_total``; histograms by their base name), with its type,
its labels (checked where the scrape has samples that show them), and a
meaning that starts with the metric's HELP text; and no row may name a
metric that is not exported. So the table cannot drift from the code.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from kvstore.client import Client
from tests.deploy.conftest import Exporter
from tests.deploy.tools import REPO, http_get

README = REPO / "README.md"
SECTION = "Monitoring"
ROW = re.compile(
    r"^\| `(?P<name>[a-z_:][a-z0-9_:]*)` \| (?P<type>\w+) \|(?P<labels>[^|]*)\| (?P<meaning>.*) \|$"
)


@dataclass(frozen=True)
class Documented:
    type: str
    labels: frozenset[str]
    meaning: str


@dataclass
class Exported:
    type: str
    help: str
    labels: set[str]
    sampled: bool  # has samples, so its labels are known


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section '## {title}' in the README"
    return match.group(1)


def documented_metrics(text: str) -> dict[str, Documented]:
    """The rows of the metric table in the README's Monitoring section."""
    rows: dict[str, Documented] = {}
    for line in section(text, SECTION).splitlines():
        match = ROW.match(line)
        if not match:
            continue
        name = match["name"]
        assert name not in rows, f"{name} is listed twice"
        labels = frozenset(x.strip() for x in match["labels"].split(",") if x.strip())
        rows[name] = Documented(match["type"], labels, match["meaning"].strip())
    return rows


def stored_name(family_name: str, family_type: str) -> str:
    """The name the README uses: what Prometheus stores (counters with _total)."""
    return family_name + "_total" if family_type == "counter" else family_name


def exported_metrics(expositions: list[str]) -> tuple[dict[str, Exported], set[str]]:
    """Every metric family in the expositions by the README's name, and the
    ``NAME_created`` gauges that prometheus_client adds to its counters and
    histograms (kept apart: the README covers them in one sentence)."""
    families = [f for e in expositions for f in text_string_to_metric_families(e)]
    with_created = {f.name for f in families if f.type in ("counter", "histogram")}
    metrics: dict[str, Exported] = {}
    created: set[str] = set()
    for family in families:
        if family.name.endswith("_created") and family.name[: -len("_created")] in with_created:
            created.add(family.name)
            continue
        name = stored_name(family.name, family.type)
        entry = metrics.setdefault(name, Exported(family.type, family.documentation, set(), False))
        assert entry.type == family.type and entry.help == family.documentation, name
        for sample in family.samples:
            entry.sampled = True
            entry.labels.update(k for k in sample.labels if k != "le")
    return metrics, created


def differences(documented: dict[str, Documented], exported: dict[str, Exported]) -> list[str]:
    problems = [
        f"{n}: exported, missing from the README"
        for n in sorted(exported.keys() - documented.keys())
    ]
    problems += [
        f"{n}: in the README, not exported" for n in sorted(documented.keys() - exported.keys())
    ]
    for name in sorted(documented.keys() & exported.keys()):
        doc, real = documented[name], exported[name]
        if doc.type != real.type:
            problems.append(f"{name}: README says {doc.type}, it is a {real.type}")
        if real.sampled and doc.labels != real.labels:
            problems.append(
                f"{name}: README labels {sorted(doc.labels)}, exported {sorted(real.labels)}"
            )
        if not doc.meaning.startswith(real.help):
            problems.append(f"{name}: the meaning should start with its HELP text {real.help!r}")
    return problems


def scrape_after_requests(exporter: Exporter) -> list[str]:
    endpoints = [m.client_addr for m in exporter.cluster.members.values()]
    with Client(endpoints) as client:
        client.put("readme/metrics", "1")
        assert client.get("readme/metrics") is not None
    expositions = []
    for addr in exporter.addrs:
        code, body = http_get(f"http://{addr}/metrics")
        assert code == 200, f"{addr}: {code}"
        expositions.append(body)
    return expositions


def test_readme_lists_every_exported_metric(exporter: Exporter) -> None:
    text = README.read_text()
    documented = documented_metrics(text)
    exported, created = exported_metrics(scrape_after_requests(exporter))
    problems = differences(documented, exported)
    assert not problems, "README.md, section Monitoring:\n" + "\n".join(problems)
    # What the issue asks for is there (and so, by the above, documented).
    for name in (
        "kvstore_raft_term",
        "kvstore_raft_is_leader",
        "kvstore_raft_leader_changes_total",
        "kvstore_proposals_failed_total",
        "kvstore_log_persist_duration_seconds",
        "kvstore_peer_round_trip_seconds",
        "kvstore_grpc_requests_total",
        "kvstore_db_map_size_bytes",
    ):
        assert name in exported, name
    # The labels of the gRPC metrics were seen, so checked.
    assert exported["kvstore_grpc_requests_total"].labels == {"method", "code"}
    if created:
        assert "_created" in section(text, SECTION), sorted(created)


def test_readme_check_can_fail(exporter: Exporter) -> None:
    exported, _ = exported_metrics(exporter.expositions)
    documented = documented_metrics(README.read_text())
    assert len(documented) >= 20, "the table did not parse"
    changed = dict(documented)
    del changed["kvstore_raft_term"]
    changed["kvstore_bogus_total"] = Documented("counter", frozenset(), "Nothing")
    row = changed["kvstore_peer_refused_total"]
    changed["kvstore_peer_refused_total"] = Documented("gauge", frozenset({"peer"}), "Refusals")
    assert row.type == "counter"
    problems = "\n".join(differences(changed, exported))
    assert "kvstore_raft_term: exported, missing from the README" in problems
    assert "kvstore_bogus_total: in the README, not exported" in problems
    assert "kvstore_peer_refused_total: README says gauge" in problems
    assert "kvstore_peer_refused_total: README labels ['peer'], exported ['reason']" in problems
    assert "kvstore_peer_refused_total: the meaning should start with" in problems
