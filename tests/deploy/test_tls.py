"""The TLS component and deploy/README.md's certificate recipe.

The component is built with the real ``kubectl kustomize`` (in prod, and
added to dev as the README says), its variables are parsed by ``kvstore
serve``'s and ``kvctl``'s own parsers, and the README's openssl commands are
run: what they make must be accepted by kvstore and complete real handshakes
under the names the pods are dialled at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import kubernetes_validate
import pytest
import yaml

from kvstore.cli import kvctl
from kvstore.cli.server import build_parser, config_from_args
from kvstore.tls import ClientTls, ServerTls
from kvstore.transport.dialer import PeerDialer
from tests.deploy.tools import (
    DEPLOY,
    container,
    env_values,
    kustomize_build,
    one,
    require_tool,
)
from tests.pki import serving_check

TLS_MOUNT = Path("/etc/kvstore/tls")
SECRET_KEYS = {"ca.crt", "tls.crt", "tls.key"}
README = DEPLOY / "README.md"
NAMESPACE = "kvstore"  # the README's NS


def _tls_of(objects: list[dict[str, Any]]) -> tuple[dict[str, str], dict[str, Any]]:
    """The StatefulSet container's environment and the volume mounted at the TLS path."""
    ss = one(objects, "StatefulSet", "kvstore")
    c = container(ss)
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == str(TLS_MOUNT))
    assert mount["readOnly"] is True
    volumes = {v["name"]: v for v in ss["spec"]["template"]["spec"]["volumes"]}
    return env_values(c), volumes[mount["name"]]


def test_the_tls_component_composes_with_dev(kubectl: str, tmp_path: Path) -> None:
    """deploy/README.md says: add the component to an overlay. Do it to dev."""
    shutil.copytree(DEPLOY, tmp_path / "deploy")
    dev = tmp_path / "deploy" / "kubernetes" / "overlays" / "dev"
    with open(dev / "kustomization.yaml", "a") as f:
        f.write("components:\n  - ../../components/tls\n")
    objects = kustomize_build(kubectl, dev)
    env, volume = _tls_of(objects)
    assert volume["secret"]["secretName"] == "kvstore-tls"
    assert env["KVSTORE_CLIENT_CERT_AUTH"] == "true"
    assert env["KVSTORE_MAP_SIZE"] == "768MiB"  # dev's own settings stay
    kubernetes_validate.validate(one(objects, "StatefulSet", "kvstore"), "1.37", strict=True)


def test_the_tls_variables_are_read_by_serve_and_kvctl(
    builds: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    env, volume = _tls_of(builds["prod"])
    assert volume["secret"]["defaultMode"] == 0o440
    for key in [k for k in env if k.startswith(("KVSTORE_", "KVCTL_"))]:
        monkeypatch.delenv(key, raising=False)
    for name, value in env.items():
        if "CERT" in name or "KEY" in name or "TRUSTED_CA" in name:
            monkeypatch.setenv(name, value)
    files = {name: TLS_MOUNT / name for name in SECRET_KEYS}
    args = build_parser().parse_args(["serve", "--id", "1", "--data-dir", "/tmp/kvstore"])
    config = config_from_args(args)
    assert config.client_tls == ServerTls(
        files["tls.crt"], files["tls.key"], files["ca.crt"], client_cert_auth=True
    )
    assert config.peer_tls == ServerTls(
        files["tls.crt"], files["tls.key"], files["ca.crt"], True, prefix="peer-"
    )
    ctl = kvctl.build_parser().parse_args(["status"])
    assert kvctl._client_tls(ctl) == ClientTls(files["ca.crt"], files["tls.crt"], files["tls.key"])


# -- the README's recipe --------------------------------------------------------------


def _recipe_blocks() -> list[str]:
    """The ``sh`` blocks of deploy/README.md's "TLS" section, in order."""
    text = README.read_text()
    section = text[text.index("\n### TLS\n") :]
    section = section[: section.index("\n## ")]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


def _run(script: str, cwd: Path) -> str:
    """Run ``script`` with bash (stop at the first error); its output."""
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{script}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory where the README's openssl commands ran (kubectl and kvctl
    lines left out: they need a cluster)."""
    require_tool("openssl", "OPENSSL", [Path("/usr/bin/openssl")], "Debian package openssl")
    blocks = _recipe_blocks()
    assert len(blocks) == 3, "expected: certificates, the Secret, a client certificate"
    client = "\n".join(
        line for line in blocks[2].splitlines() if not line.startswith(("kubectl", "kvctl"))
    )
    directory = tmp_path_factory.mktemp("recipe")
    _run(blocks[0] + client, directory)
    return directory


def test_the_recipe_secret_has_the_keys_the_component_mounts(
    recipe: Path, kubectl: str, builds: dict[str, list[dict[str, Any]]]
) -> None:
    block = _recipe_blocks()[1].replace("\\\n", " ")  # continuation lines joined
    (create,) = [line for line in block.splitlines() if "create secret generic" in line]
    assert create.startswith("kubectl -n $NS create secret generic kvstore-tls")
    script = f"NS={NAMESPACE}\n{create.replace('kubectl', kubectl, 1)} --dry-run=client -o yaml"
    secret = yaml.safe_load(_run(script, recipe))
    assert secret["metadata"] == {"name": "kvstore-tls", "namespace": NAMESPACE}
    assert set(secret["data"]) == SECRET_KEYS
    env, volume = _tls_of(builds["prod"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mounted = {
        Path(v).name for k, v in env.items() if k.endswith(("_FILE", "CACERT", "CERT", "KEY"))
    }
    assert mounted == SECRET_KEYS


def _member(recipe: Path) -> ServerTls:
    return ServerTls(recipe / "tls.crt", recipe / "tls.key", recipe / "ca.crt", True)


@pytest.mark.parametrize(
    "name",
    [
        f"kvstore-0.kvstore-peer.{NAMESPACE}.svc.cluster.local:7201",
        f"kvstore-7.kvstore-peer.{NAMESPACE}.svc:7201",
    ],
)
def test_the_recipe_certificate_works_between_peers(recipe: Path, name: str) -> None:
    """A member dials another by its advertised DNS name (routed to 127.0.0.1
    here), both ways authenticated."""
    member = _member(recipe).load()

    def dial(target: str) -> grpc.aio.Channel:
        dialer = PeerDialer(routes={name: target}, credentials=member.channel_credentials())
        return dialer.channel(name)

    assert serving_check(member.server_credentials(), dial) == "SERVING"


@pytest.mark.parametrize(
    "name", [f"kvstore.{NAMESPACE}.svc", f"kvstore.{NAMESPACE}.svc.cluster.local", None]
)
def test_the_recipe_client_certificate_works_with_the_service_names(
    recipe: Path, name: str | None
) -> None:
    """kvctl with the recipe's client certificate, through the client Service's
    names or 127.0.0.1 (inside the pod, or a port-forward)."""
    credentials = ClientTls(
        recipe / "ca.crt", recipe / "client.crt", recipe / "client.key"
    ).credentials()

    def dial(target: str) -> grpc.aio.Channel:
        options = [] if name is None else [("grpc.ssl_target_name_override", name)]
        return grpc.aio.secure_channel(target, credentials, options=options)

    assert serving_check(_member(recipe).load().server_credentials(), dial) == "SERVING"


def test_a_name_outside_the_recipe_is_refused(recipe: Path) -> None:
    """The check above can fail: another namespace's name is not in the certificate."""
    credentials = ClientTls(recipe / "ca.crt").credentials()

    def dial(target: str) -> grpc.aio.Channel:
        options = [("grpc.ssl_target_name_override", "kvstore.other.svc")]
        return grpc.aio.secure_channel(target, credentials, options=options)

    result = serving_check(_member(recipe).load().server_credentials(), dial)
    assert result.startswith("UNAVAILABLE"), result
