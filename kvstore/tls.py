"""Certificates and gRPC credentials: TLS for clients, mutual TLS between peers.

The flags follow etcd's (``--cert-file``, ``--key-file``, ``--trusted-ca-file``,
``--client-cert-auth``; ``--peer-cert-file``, ``--peer-key-file``,
``--peer-trusted-ca-file``), and so does their meaning:

* the client port speaks TLS when ``--cert-file``/``--key-file`` are given, and
  with ``--client-cert-auth`` it also demands a client certificate signed by
  ``--trusted-ca-file``. Without them it is plaintext (local use);
* peer TLS is always mutual (etcd's ``--peer-client-cert-auth``, implied):
  a member with peer TLS accepts only peers whose certificate chains to
  ``--peer-trusted-ca-file``, presents its own certificate when it dials,
  and verifies the dialled member's certificate against the same CA. It
  listens for peers on TLS only, so plaintext peers are refused.

Every file is read and checked once at startup (readable, PEM, the key
matches the certificate), so a mistake stops the member with a message that
names the file, instead of surfacing as failed handshakes at run time. The
checks use the standard library's ``ssl`` (OpenSSL); gRPC gets the PEM bytes.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

__all__ = [
    "ClientTls",
    "KeyPair",
    "LoadedTls",
    "ServerTls",
    "TlsError",
    "client_port_tls",
    "load_ca",
    "load_key_pair",
    "peer_port_tls",
]

_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"


class TlsError(ValueError):
    """A certificate, key or CA file that cannot be used; the message names it."""


def _read(path: Path, flag: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TlsError(f"{flag} {path}: cannot read it: {exc.strerror or exc}") from None
    if not data.strip():
        raise TlsError(f"{flag} {path}: the file is empty")
    return data


def _check_certificates(pem: bytes, path: Path, flag: str) -> None:
    """Every certificate in ``pem`` parses (OpenSSL reads them as it would a CA bundle)."""
    if _CERT_MARKER not in pem:
        raise TlsError(
            f"{flag} {path}: no PEM certificate in it (expected {_CERT_MARKER.decode()})"
        )
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(
            cadata=pem.decode("ascii", errors="replace")
        )
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"{flag} {path}: not a valid PEM certificate ({exc})") from None


def load_ca(path: Path, flag: str) -> bytes:
    """The PEM bytes of a CA bundle, checked."""
    pem = _read(path, flag)
    _check_certificates(pem, path, flag)
    return pem


@dataclass(frozen=True)
class KeyPair:
    """A certificate chain and its private key, as PEM bytes."""

    cert_chain: bytes
    private_key: bytes


def _refuse_encrypted_key() -> str:
    raise TlsError("encrypted")


def load_key_pair(cert_file: Path, key_file: Path, cert_flag: str, key_flag: str) -> KeyPair:
    """Read a certificate and its key; check both parse and that they belong together."""
    cert = _read(cert_file, cert_flag)
    _check_certificates(cert, cert_file, cert_flag)
    key = _read(key_file, key_flag)
    if b"ENCRYPTED" in key:
        raise TlsError(f"{key_flag} {key_file}: the key is encrypted; give an unencrypted PEM key")
    if b"PRIVATE KEY-----" not in key:
        raise TlsError(f"{key_flag} {key_file}: no PEM private key in it")
    try:
        # Reads the files again, but it is the one check of "key matches cert".
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(
            cert_file, key_file, password=_refuse_encrypted_key
        )
    except TlsError:
        raise TlsError(
            f"{key_flag} {key_file}: the key is encrypted; give an unencrypted PEM key"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsError(
                f"{key_flag} {key_file} does not match the certificate in {cert_flag} {cert_file}"
            ) from None
        raise TlsError(f"{key_flag} {key_file}: cannot load the private key ({exc})") from None
    except OSError as exc:
        raise TlsError(f"{key_flag} {key_file}: cannot read it: {exc.strerror or exc}") from None
    return KeyPair(cert, key)


@dataclass(frozen=True)
class LoadedTls:
    """A listening side's TLS, read and checked: what gRPC needs, as bytes."""

    pair: KeyPair
    trusted_ca: bytes | None
    client_cert_auth: bool

    def server_credentials(self) -> grpc.ServerCredentials:
        """For the listening port; demands a client certificate from the CA if asked to."""
        return grpc.ssl_server_credentials(
            [(self.pair.private_key, self.pair.cert_chain)],
            root_certificates=self.trusted_ca if self.client_cert_auth else None,
            require_client_auth=self.client_cert_auth,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """For dialling others of the same trust domain: present our certificate, trust
        the CA (the system's roots when there is none)."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.trusted_ca,
            private_key=self.pair.private_key,
            certificate_chain=self.pair.cert_chain,
        )


@dataclass(frozen=True)
class ServerTls:
    """The files of one listening side (the client port or the peer port), from the flags."""

    cert_file: Path
    key_file: Path
    trusted_ca_file: Path | None = None
    client_cert_auth: bool = False
    #: The flag names, for messages: "" for the client port, "peer-" for peers.
    prefix: str = ""

    def load(self) -> LoadedTls:
        """Read and check the files; raises TlsError naming the flag and the file."""
        p = self.prefix
        pair = load_key_pair(self.cert_file, self.key_file, f"--{p}cert-file", f"--{p}key-file")
        ca = None
        if self.trusted_ca_file is not None:
            ca = load_ca(self.trusted_ca_file, f"--{p}trusted-ca-file")
        return LoadedTls(pair, ca, self.client_cert_auth)


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value not in (None, "") else None


def client_port_tls(
    cert_file: str | Path | None,
    key_file: str | Path | None,
    trusted_ca_file: str | Path | None,
    client_cert_auth: bool,
) -> ServerTls | None:
    """The client port's TLS from the flags (None: plaintext); usage errors are ValueError."""
    cert, key, ca = _path(cert_file), _path(key_file), _path(trusted_ca_file)
    if (cert is None) != (key is None):
        raise ValueError("--cert-file and --key-file go together: give both or neither")
    if client_cert_auth and (cert is None or key is None or ca is None):
        raise ValueError(
            "--client-cert-auth needs --cert-file, --key-file (TLS on the client port) "
            "and --trusted-ca-file (the CA that signs client certificates)"
        )
    if cert is None or key is None:
        if ca is not None:
            raise ValueError("--trusted-ca-file needs --cert-file and --key-file")
        return None
    return ServerTls(cert, key, ca, client_cert_auth)


def peer_port_tls(
    cert_file: str | Path | None, key_file: str | Path | None, trusted_ca_file: str | Path | None
) -> ServerTls | None:
    """Peer mutual TLS from the flags: all three files or none (None: plaintext)."""
    files = {
        "--peer-cert-file": _path(cert_file),
        "--peer-key-file": _path(key_file),
        "--peer-trusted-ca-file": _path(trusted_ca_file),
    }
    given = [flag for flag, path in files.items() if path is not None]
    if not given:
        return None
    if len(given) < len(files):
        missing = ", ".join(flag for flag in files if flag not in given)
        raise ValueError(
            f"peer TLS is mutual and needs --peer-cert-file, --peer-key-file and "
            f"--peer-trusted-ca-file together; missing: {missing}"
        )
    cert, key, ca = files.values()
    assert cert is not None and key is not None
    return ServerTls(cert, key, ca, client_cert_auth=True, prefix="peer-")


@dataclass(frozen=True)
class ClientTls:
    """A client's TLS (the Python client, kvctl's ``--cacert``, ``--cert``, ``--key``).

    ``ca_file``: the CA the server's certificate must chain to (None: the
    system's roots). ``cert_file``/``key_file``: this client's certificate,
    for a server with ``--client-cert-auth``.
    """

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):  # "" is None, str a Path
            object.__setattr__(self, name, _path(getattr(self, name)))
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs its key: give --cert and --key together")

    def credentials(self) -> grpc.ChannelCredentials:
        """Read and check the files; raises TlsError naming the option and the file."""
        ca_file, cert_file, key_file = map(_path, (self.ca_file, self.cert_file, self.key_file))
        ca = load_ca(ca_file, "--cacert") if ca_file is not None else None
        pair = None
        if cert_file is not None and key_file is not None:
            pair = load_key_pair(cert_file, key_file, "--cert", "--key")
        return grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pair.private_key if pair else None,
            certificate_chain=pair.cert_chain if pair else None,
        )
