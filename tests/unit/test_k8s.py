"""Kubernetes mode's derivations (kvstore.k8s): pod name -> member id, peer
names, initial cluster and join endpoints; and the errors that name a bad
environment. Real processes in this mode: tests/integration/test_kubernetes_mode.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from kvstore.cli.server import main
from kvstore.devcluster import free_port
from kvstore.k8s import (
    KubernetesError,
    Pod,
    namespace_of,
    parse_pod_name,
    plan,
    pod_from_env,
    pod_name_of,
    settle,
)
from kvstore.node import NodeConfig

POD = Pod("kv", 2, "kv-peer", "ns")


def name(ordinal: int) -> str:
    return f"kv-{ordinal}.kv-peer.ns.svc.cluster.local"


@pytest.mark.parametrize(
    ("pod", "expected"),
    [("kv-0", ("kv", 0)), ("kv-2", ("kv", 2)), ("my-db-17", ("my-db", 17)), ("a1-10", ("a1", 10))],
)
def test_pod_name_gives_statefulset_and_ordinal(pod: str, expected: tuple[str, int]) -> None:
    assert parse_pod_name(pod) == expected


@pytest.mark.parametrize("pod", ["kv", "kv-", "kv-01", "Kv-0", "kv-x", "-0", "kv_0-a", ""])
def test_pod_name_without_ordinal_is_an_error_naming_it(pod: str) -> None:
    with pytest.raises(KubernetesError, match=f"pod name '{pod}' is not a StatefulSet pod name"):
        parse_pod_name(pod)


def test_pod_name_from_downward_api_then_hostname() -> None:
    assert pod_name_of({"POD_NAME": "kv-1", "HOSTNAME": "other-3"}) == "kv-1"
    assert pod_name_of({"HOSTNAME": "kv-4"}) == "kv-4"
    assert pod_name_of({"HOSTNAME": "kv-4.kv-peer.ns.svc.cluster.local"}) == "kv-4"


def test_namespace_from_downward_api_then_service_account(tmp_path: Path) -> None:
    file = tmp_path / "namespace"
    assert namespace_of({"POD_NAMESPACE": "prod"}, file) == "prod"
    file.write_text("from-file\n")
    assert namespace_of({}, file) == "from-file"
    with pytest.raises(KubernetesError, match="POD_NAMESPACE"):
        namespace_of({}, tmp_path / "absent")
    with pytest.raises(KubernetesError, match="'Not_A_Label' is not a DNS label"):
        namespace_of({"POD_NAMESPACE": "Not_A_Label"}, file)


def test_pod_from_env() -> None:
    env = {"POD_NAME": "kv-2", "POD_NAMESPACE": "ns"}
    assert pod_from_env(env, "kv-peer") == POD
    assert pod_from_env(env, "kv-peer", "example.org.").host(0) == "kv-0.kv-peer.ns.svc.example.org"
    with pytest.raises(KubernetesError, match="--peer-service"):
        pod_from_env(env, "")


def test_initial_member() -> None:
    p = plan(POD, 3, client_addr="0.0.0.0:7101")
    assert p.member_id == 3  # ordinal + 1
    assert p.peer_addr == f"{name(2)}:7201"
    assert p.listen_peer_addr == "0.0.0.0:7201"
    assert p.initial_cluster == {1: f"{name(0)}:7201", 2: f"{name(1)}:7201", 3: f"{name(2)}:7201"}
    assert p.join == []
    assert p.endpoints == [f"{name(0)}:7101", f"{name(1)}:7101"]


def test_pod_beyond_the_initial_replicas_joins_through_the_others() -> None:
    p = plan(Pod("kv", 4, "kv-peer", "ns"), 3, client_addr="0.0.0.0:7101")
    assert p.member_id == 5
    assert p.initial_cluster == {}
    assert p.join == p.endpoints == [f"{name(i)}:7101" for i in range(4)]


def test_single_member_cluster_has_no_one_to_ask() -> None:
    p = plan(Pod("kv", 0, "kv-peer", "ns"), 1, client_addr="0.0.0.0:7101")
    assert p.initial_cluster == {1: f"{name(0)}:7201"}
    assert p.endpoints == []


def test_given_addresses_override_or_must_agree() -> None:
    p = plan(
        POD,
        3,
        client_addr="127.0.0.1:9101",
        peer_addr=f"{name(2)}:7777",
        listen_peer_addr="127.0.0.1:9201",
        join=["127.0.0.1:1", "127.0.0.1:2"],
        member_id=3,
    )
    assert p.peer_addr == f"{name(2)}:7777"
    assert p.initial_cluster[1] == f"{name(0)}:7777"  # every pod's peer port
    assert p.listen_peer_addr == "127.0.0.1:9201"
    assert p.endpoints == ["127.0.0.1:1", "127.0.0.1:2"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": None}, "needs --replicas"),
        ({"replicas": 0}, "needs --replicas"),
        ({"member_id": 1}, "--id 1 contradicts the pod name kv-2"),
        ({"initial_cluster": "1=a:1"}, "--initial-cluster is derived"),
        ({"peer_addr": "0.0.0.0:7201"}, "is not this pod's stable name"),
        ({"peer_addr": f"{name(1)}:7201"}, "is not this pod's stable name"),
        ({"peer_addr": f"{name(2)}"}, "is not HOST:PORT"),
        ({"client_addr": "0.0.0.0"}, "--client-addr '0.0.0.0' is not HOST:PORT"),
    ],
)
def test_contradictions_are_errors(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"replicas": 3, "client_addr": "0.0.0.0:7101", **kwargs}
    with pytest.raises(KubernetesError, match=message):
        plan(POD, **args)  # type: ignore[arg-type]


def test_settle_bootstraps_when_no_member_answers(tmp_path: Path) -> None:
    """The pods of a new cluster start together: nobody answers yet."""
    k8s = plan(POD, 3, client_addr="0.0.0.0:7101", join=[f"127.0.0.1:{free_port()}"])
    config = NodeConfig(
        id=k8s.member_id,
        client_addr="127.0.0.1:0",
        peer_addr=k8s.peer_addr,
        data_dir=tmp_path,
        initial_cluster=k8s.initial_cluster,
    )
    assert asyncio.run(settle(config, k8s, timeout=0.5)) is config


@pytest.fixture
def pod_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for key in [k for k in os.environ if k.startswith("KVSTORE_")]:
        monkeypatch.delenv(key)
    for key, value in {
        "KVSTORE_K8S": "true",
        "KVSTORE_REPLICAS": "3",
        "KVSTORE_PEER_SERVICE": "kv-peer",
        "KVSTORE_DATA_DIR": str(tmp_path / "data"),
        "POD_NAMESPACE": "ns",
    }.items():
        monkeypatch.setenv(key, value)
    return monkeypatch


def test_serve_exits_1_naming_a_pod_name_without_ordinal(
    pod_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_env.setenv("POD_NAME", "kvstore")
    with pytest.raises(SystemExit) as exit:
        main(["serve"])
    assert exit.value.code == 1
    assert "pod name 'kvstore' is not a StatefulSet pod name" in capsys.readouterr().err


def test_serve_exits_2_on_kubernetes_flags_outside_kubernetes_mode(
    pod_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pod_env.setenv("KVSTORE_K8S", "false")
    pod_env.setenv("KVSTORE_ID", "1")
    with pytest.raises(SystemExit) as exit:
        main(["serve"])
    assert exit.value.code == 2
    assert "--replicas and --peer-service are for Kubernetes mode" in capsys.readouterr().err
