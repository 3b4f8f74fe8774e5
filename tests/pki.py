"""Certificates made at test time (trustme): a CA, a foreign CA, and their leaves;
and a real TLS server to shake hands with.

Every leaf carries both TLS usages (server and client auth, as trustme issues
them), as the one certificate per member of deploy/README.md does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import grpc.aio
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kvstore.tls import ClientTls

__all__ = ["KeyPairFiles", "Pki", "make_pki", "serving_check"]

#: The names a member's certificate covers: it is dialled at 127.0.0.1 or localhost.
LOCAL_NAMES = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class KeyPairFiles:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA's certificate file, and leaves it signed."""

    ca: Path
    member: KeyPairFiles  # SAN 127.0.0.1 and localhost: client port and peers
    client: KeyPairFiles  # a client's (CN kvctl)

    def client_tls(self, ca: Path | None = None) -> ClientTls:
        """A client with this authority's certificate, trusting ``ca`` (default: this CA)."""
        return ClientTls(
            ca_file=ca or self.ca, cert_file=self.client.cert, key_file=self.client.key
        )

    def serve_args(self, *, client_port: bool = True, peers: bool = True) -> list[str]:
        """``kvstore serve`` flags: client TLS with client-cert-auth, and peer mutual TLS."""
        args: list[str] = []
        if client_port:
            args += ["--cert-file", str(self.member.cert), "--key-file", str(self.member.key)]
            args += ["--trusted-ca-file", str(self.ca), "--client-cert-auth"]
        if peers:
            args += ["--peer-cert-file", str(self.member.cert)]
            args += ["--peer-key-file", str(self.member.key)]
            args += ["--peer-trusted-ca-file", str(self.ca)]
        return args


@dataclass(frozen=True)
class Pki:
    good: Authority
    foreign: Authority  # another CA with the same names: valid-looking, never trusted


def _write(cert: trustme.LeafCert, directory: Path, name: str) -> KeyPairFiles:
    pair = KeyPairFiles(directory / f"{name}.crt", directory / f"{name}.key")
    cert.private_key_pem.write_to_path(str(pair.key))
    cert.cert_chain_pems[0].write_to_path(str(pair.cert))
    return pair


def _authority(directory: Path, name: str) -> Authority:
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name=f"kvstore tests {name}")
    ca_path = directory / "ca.crt"
    ca.cert_pem.write_to_path(str(ca_path))
    member = _write(ca.issue_cert(*LOCAL_NAMES, common_name="member"), directory, "member")
    client = _write(ca.issue_cert("kvctl", common_name="kvctl"), directory, "client")
    return Authority(ca_path, member, client)


def make_pki(directory: Path) -> Pki:
    return Pki(_authority(directory / "good", "good"), _authority(directory / "foreign", "foreign"))


def serving_check(
    server_credentials: grpc.ServerCredentials, dial: Callable[[str], grpc.aio.Channel]
) -> str:
    """Serve gRPC health checking on 127.0.0.1 with ``server_credentials`` and call it
    through ``dial(host:port)``: "SERVING", or the status code and details."""

    async def run() -> str:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials)
        await server.start()
        try:
            async with dial(f"127.0.0.1:{port}") as channel:
                try:
                    reply = await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=5
                    )
                except grpc.aio.AioRpcError as exc:
                    return f"{exc.code().name}: {exc.details()}"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        finally:
            await server.stop(grace=None)

    return asyncio.run(run())
