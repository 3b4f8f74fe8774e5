"""Peer routes: a member dials an advertised peer address at another host:port,
and under peer TLS verifies the certificate against the advertised name."""

from __future__ import annotations

import asyncio

import grpc
import grpc.aio
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from kvstore.tls import KeyPair, LoadedTls
from kvstore.transport.dialer import PeerDialer, host_of, parse_routes
from tests.pki import serving_check


def test_parse_routes_maps_advertised_to_dialled_addresses() -> None:
    assert parse_routes(" kv-0.kv:7201=127.0.0.1:17201, kv-1.kv:7201=127.0.0.1:17202 ") == {
        "kv-0.kv:7201": "127.0.0.1:17201",
        "kv-1.kv:7201": "127.0.0.1:17202",
    }
    assert parse_routes("") == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("kv-0:7201", "is not ADVERTISED"),
        ("=127.0.0.1:1", "is not ADVERTISED"),
        ("a:1=b:1,a:1=c:1", "twice"),
    ],
)
def test_parse_routes_names_the_bad_part(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_routes(text)


def test_unrouted_addresses_are_dialled_as_advertised() -> None:
    dialer = PeerDialer(routes={"kv-0.kv:7201": "127.0.0.1:17201"})
    assert dialer.target("kv-0.kv:7201") == "127.0.0.1:17201"
    assert dialer.target("127.0.0.1:7202") == "127.0.0.1:7202"


def test_a_channel_to_a_routed_name_reaches_the_route() -> None:
    async def run() -> str:
        server = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            # ".invalid" never resolves (RFC 2606): only the route can reach the server.
            dialer = PeerDialer(routes={"member-1.invalid:7201": f"127.0.0.1:{port}"})
            async with dialer.channel("member-1.invalid:7201") as channel:
                reply = await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        finally:
            await server.stop(grace=None)

    assert asyncio.run(run()) == "SERVING"


# -- mutual TLS through routes ------------------------------------------------------

ADVERTISED = "kv-0.kvstore-peer.ns.svc.cluster.local:7201"


def test_host_of_and_the_name_to_verify() -> None:
    assert host_of("kv-0.kv:7201") == "kv-0.kv"
    assert host_of("[::1]:7201") == "::1"
    assert host_of("127.0.0.1:7201") == "127.0.0.1"
    routed = PeerDialer(routes={ADVERTISED: "127.0.0.1:1"})
    assert routed.tls_name(ADVERTISED) == "kv-0.kvstore-peer.ns.svc.cluster.local"
    assert routed.tls_name("127.0.0.1:7202") is None  # gRPC checks the dialled host
    fixed = PeerDialer(routes={ADVERTISED: "127.0.0.1:1"}, tls_server_name="kvstore")
    assert fixed.tls_name("127.0.0.1:7202") == "kvstore"


def _peer_tls(ca: trustme.CA, *names: str) -> LoadedTls:
    leaf = ca.issue_cert(*names)
    pair = KeyPair(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes())
    return LoadedTls(pair, ca.cert_pem.bytes(), client_cert_auth=True)


def _check_through(dialer: PeerDialer, server_tls: LoadedTls, address: str) -> str:
    """A health check to ``address`` through ``dialer``, routed to a TLS server."""

    def dial(target: str) -> grpc.aio.Channel:
        routed = PeerDialer(
            routes={address: target},
            credentials=dialer.credentials,
            tls_server_name=dialer.tls_server_name,
        )
        return routed.channel(address)

    return serving_check(server_tls.server_credentials(), dial)


def test_a_routed_member_is_verified_under_its_advertised_name() -> None:
    """The certificate names the advertised host (a wildcard over the headless
    Service, as in deploy/README.md); the route's 127.0.0.1 is only where it is."""
    ca = trustme.CA()
    server = _peer_tls(ca, "*.kvstore-peer.ns.svc.cluster.local")
    client = _peer_tls(ca, "*.kvstore-peer.ns.svc.cluster.local")
    dialer = PeerDialer(credentials=client.channel_credentials())
    assert _check_through(dialer, server, ADVERTISED) == "SERVING"
    # A certificate for other names is refused, although the route reaches it.
    elsewhere = _peer_tls(ca, "kv-0.other.svc.cluster.local")
    assert "Hostname Verification" in _check_through(dialer, elsewhere, ADVERTISED)
    # And so is a dialler without a certificate of the CA (mutual TLS).
    foreign = _peer_tls(trustme.CA(), "*.kvstore-peer.ns.svc.cluster.local")
    stranger = PeerDialer(
        credentials=grpc.ssl_channel_credentials(
            ca.cert_pem.bytes(), foreign.pair.private_key, foreign.pair.cert_chain
        )
    )
    assert _check_through(stranger, server, ADVERTISED).startswith("UNAVAILABLE")
