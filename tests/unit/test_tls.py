"""kvstore.tls: checking certificate files at startup, the TLS flags of ``kvstore
serve``, and the credentials it builds, against a real grpc.aio server."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import grpc.aio
import pytest
from cryptography.hazmat.primitives import serialization

from kvstore.cli.server import build_parser, config_from_args, main
from kvstore.client_errors import classify, short_reason
from kvstore.devcluster import REPO
from kvstore.node import NodeConfig
from kvstore.tls import (
    ClientTls,
    ServerTls,
    TlsError,
    client_port_tls,
    load_ca,
    load_key_pair,
    peer_port_tls,
)
from tests.pki import Pki, make_pki, serving_check


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def test_a_good_key_pair_and_ca_load(pki: Pki) -> None:
    pair = load_key_pair(pki.good.member.cert, pki.good.member.key, "--cert-file", "--key-file")
    assert pair.cert_chain == pki.good.member.cert.read_bytes()
    assert pair.private_key == pki.good.member.key.read_bytes()
    assert load_ca(pki.good.ca, "--trusted-ca-file") == pki.good.ca.read_bytes()


def _encrypted(key: Path, out: Path) -> Path:
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    out.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    return out


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("missing certificate", "--cert-file {cert}: cannot read it: No such file"),
        ("empty certificate", "--cert-file {cert}: the file is empty"),
        ("key as certificate", "--cert-file {cert}: no PEM certificate in it"),
        ("garbled certificate", "--cert-file {cert}: not a valid PEM certificate"),
        ("missing key", "--key-file {key}: cannot read it"),
        ("certificate as key", "--key-file {key}: no PEM private key in it"),
        ("foreign key", "--key-file {key} does not match the certificate in --cert-file {cert}"),
        ("encrypted key", "--key-file {key}: the key is encrypted"),
    ],
)
def test_bad_files_are_named_with_the_problem(
    pki: Pki, tmp_path: Path, case: str, problem: str
) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    shutil.copy(pki.good.member.cert, cert)
    shutil.copy(pki.good.member.key, key)
    if case == "missing certificate":
        cert.unlink()
    elif case == "empty certificate":
        cert.write_bytes(b"\n")
    elif case == "key as certificate":
        shutil.copy(key, cert)
    elif case == "garbled certificate":
        cert.write_bytes(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
        )
    elif case == "missing key":
        key.unlink()
    elif case == "certificate as key":
        shutil.copy(cert, key)
    elif case == "foreign key":
        shutil.copy(pki.foreign.member.key, key)
    elif case == "encrypted key":
        _encrypted(pki.good.member.key, key)
    with pytest.raises(TlsError) as error:
        ServerTls(cert, key, pki.good.ca).load()
    assert problem.format(cert=cert, key=key) in str(error.value)


def test_a_bad_ca_file_is_named(pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "ca.crt"
    bad.write_text("not a certificate\n")
    peer = ServerTls(pki.good.member.cert, pki.good.member.key, bad, True, prefix="peer-")
    with pytest.raises(TlsError, match=re.escape(f"--peer-trusted-ca-file {bad}: no PEM cert")):
        peer.load()
    with pytest.raises(TlsError, match=re.escape(f"--cacert {bad}: no PEM certificate")):
        ClientTls(ca_file=bad).credentials()
    with pytest.raises(TlsError, match=re.escape("--key /nope.key: cannot read it")):
        ClientTls(cert_file=pki.good.client.cert, key_file="/nope.key").credentials()


# -- the flags ---------------------------------------------------------------------------


def test_flag_combinations() -> None:
    assert client_port_tls("", "", "", False) is None
    assert peer_port_tls(None, "", None) is None
    plain_tls = client_port_tls("a.crt", "a.key", None, False)
    assert plain_tls == ServerTls(Path("a.crt"), Path("a.key"), None, False)
    peer = peer_port_tls("p.crt", "p.key", "ca.crt")
    assert peer is not None and peer.client_cert_auth and peer.prefix == "peer-"
    with pytest.raises(ValueError, match="--cert-file and --key-file go together"):
        client_port_tls("a.crt", "", None, False)
    with pytest.raises(ValueError, match="--client-cert-auth needs"):
        client_port_tls("a.crt", "a.key", None, True)
    with pytest.raises(ValueError, match="--trusted-ca-file needs --cert-file"):
        client_port_tls(None, None, "ca.crt", False)
    with pytest.raises(ValueError, match="missing: --peer-key-file, --peer-trusted-ca-file"):
        peer_port_tls("p.crt", None, "")
    with pytest.raises(ValueError, match="--cert and --key together"):
        ClientTls(cert_file="c.crt")


def _serve_config(argv: list[str]) -> NodeConfig:
    args = build_parser().parse_args(["serve", "--id", "1", "--data-dir", "/tmp/x", *argv])
    return config_from_args(args)


def test_serve_reads_the_tls_flags_and_their_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _serve_config(pki.good.serve_args())
    assert config.client_tls == ServerTls(
        pki.good.member.cert, pki.good.member.key, pki.good.ca, client_cert_auth=True
    )
    assert config.peer_tls == ServerTls(
        pki.good.member.cert, pki.good.member.key, pki.good.ca, True, prefix="peer-"
    )
    plain = _serve_config([])
    assert plain.client_tls is None and plain.peer_tls is None
    monkeypatch.setenv("KVSTORE_CERT_FILE", str(pki.good.member.cert))
    monkeypatch.setenv("KVSTORE_KEY_FILE", str(pki.good.member.key))
    monkeypatch.setenv("KVSTORE_TRUSTED_CA_FILE", str(pki.good.ca))
    monkeypatch.setenv("KVSTORE_CLIENT_CERT_AUTH", "true")
    from_env = _serve_config([])
    assert from_env.client_tls is not None and from_env.client_tls.client_cert_auth is True
    off = _serve_config(["--client-cert-auth=false"])
    assert off.client_tls is not None and off.client_tls.client_cert_auth is False
    monkeypatch.setenv("KVSTORE_CLIENT_CERT_AUTH", "maybe")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve"])


def test_serve_exits_1_naming_a_bad_file(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["serve", "--id", "1", "--data-dir", str(tmp_path / "data")]
    base += ["--initial-cluster", "1=127.0.0.1:1"]
    mismatched = pki.good.serve_args(client_port=False)
    mismatched[mismatched.index("--peer-key-file") + 1] = str(pki.foreign.member.key)
    with pytest.raises(SystemExit) as exited:
        main([*base, *mismatched])
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert f"--peer-key-file {pki.foreign.member.key} does not match" in err, err
    # The real process, as a container runtime would see it.
    missing = tmp_path / "absent.crt"
    args = [*base, "--cert-file", str(missing), "--key-file", str(pki.good.member.key)]
    result = subprocess.run(
        [sys.executable, "-m", "kvstore", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"--cert-file {missing}: cannot read it" in result.stderr
    assert not (tmp_path / "data" / "data.mdb").exists()


# -- credentials against a real server ---------------------------------------------------


def _check(server_tls: ServerTls, client: ClientTls | None) -> str:
    """A health check from ``client`` (None: plaintext) to a server with ``server_tls``."""

    def dial(target: str) -> grpc.aio.Channel:
        if client is None:
            return grpc.aio.insecure_channel(target)
        return grpc.aio.secure_channel(target, client.credentials())

    return serving_check(server_tls.load().server_credentials(), dial).split(":")[0]


def test_credentials_with_client_certificate_auth(pki: Pki) -> None:
    good = pki.good
    server = ServerTls(good.member.cert, good.member.key, good.ca, client_cert_auth=True)
    assert _check(server, good.client_tls()) == "SERVING"
    assert _check(server, ClientTls(ca_file=good.ca)) == "UNAVAILABLE"
    assert _check(server, pki.foreign.client_tls(ca=good.ca)) == "UNAVAILABLE"
    assert _check(server, None) == "UNAVAILABLE"


def test_credentials_without_client_certificate_auth(pki: Pki) -> None:
    good = pki.good
    server = ServerTls(good.member.cert, good.member.key, good.ca, client_cert_auth=False)
    assert _check(server, ClientTls(ca_file=good.ca)) == "SERVING"
    assert _check(server, good.client_tls()) == "SERVING"
    # The client checks the server too: a CA that did not sign it is refused.
    assert _check(server, ClientTls(ca_file=pki.foreign.ca)) == "UNAVAILABLE"


def test_a_refused_handshake_is_told_and_known_not_applied(pki: Pki) -> None:
    """What gRPC reports for a client the server refuses while connecting: the
    client explains it (TLS 1.3 gives it no reason) and knows the call was never
    sent, so a write there is not applied, not "outcome unknown"."""
    good = pki.good
    server = ServerTls(good.member.cert, good.member.key, good.ca, client_cert_auth=True)
    result = serving_check(
        server.load().server_credentials(),
        lambda target: grpc.aio.secure_channel(target, ClientTls(ca_file=good.ca).credentials()),
    )
    code, details = result.split(": ", 1)
    assert code == "UNAVAILABLE", result
    assert classify(grpc.StatusCode.UNAVAILABLE, details) == (True, False)
    reason = short_reason(grpc.StatusCode.UNAVAILABLE, details, tls=True, client_cert=False)
    assert "it may require a client certificate (this client has none)" in reason, reason
    # A connection that was up and broke is another matter: that write may have landed.
    assert classify(grpc.StatusCode.UNAVAILABLE, "Socket closed") == (True, True)
