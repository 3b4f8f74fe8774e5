"""TLS for clients and mutual TLS between peers, with real processes (issue 5, "Security").

Certificates are made at test time (tests/pki.py): a CA whose certificates the
cluster trusts, and a foreign CA with certificates for the very same names.
One 3-member cluster runs with client TLS and ``--client-cert-auth`` and with
peer mutual TLS. Valid certificates work everywhere (Python client, the real
``kvctl`` script, forwarding through a follower, joining); a client or a peer
without a certificate of the cluster's CA, or without TLS, gets nothing
through, and nothing of what it sent reaches Raft.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import grpc.aio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvstore.client import Client, ClientTls, KVError, Unavailable
from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.tls import KeyPair, LoadedTls
from kvstore.transport.codec import encode_batch
from raftcore import Message, RequestVote
from tests.integration.cluster import FAST_TIMEOUTS, Cluster, running_cluster, wait_until
from tests.pki import Authority, Pki, make_pki

KVCTL = Path(sys.executable).parent / "kvctl"
STREAM_METHOD = "/kvstore.raft.v1.Peer/Stream"
JOIN_TIMEOUT = "3"  # seconds a member that cannot join keeps trying
PROCESS_WAIT = 30.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def cluster(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tls = pki.good.client_tls()

    def factory(base: Path, size: int, args: object) -> Cluster:
        return Cluster(base, size, [*FAST_TIMEOUTS, *pki.good.serve_args()], client_tls=tls)

    with running_cluster(tmp_path_factory.mktemp("tls"), factory=factory) as cluster:
        yield cluster


def _follower(cluster: Cluster) -> int:
    leader = cluster.wait_for_leader()
    return next(i for i in cluster.running_ids() if i != leader)


def _kvctl(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a user runs it."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("KVCTL_")}
    child_env.update(env or {})
    return subprocess.run(
        [str(KVCTL), *argv], capture_output=True, text=True, timeout=30, env=child_env, check=False
    )


def _tls_flags(authority: Authority, ca: Path | None = None) -> list[str]:
    """kvctl's etcdctl-style options for this authority's client certificate."""
    client = authority.client
    return [
        "--cacert", str(ca or authority.ca), "--cert", str(client.cert), "--key", str(client.key)
    ]  # fmt: skip


# -- clients -----------------------------------------------------------------------


def test_valid_certificates_write_and_read_through_a_follower(cluster: Cluster) -> None:
    """A follower forwards to the leader over the peer channel, itself mutual TLS."""
    follower = _follower(cluster)
    with cluster.node_client(follower) as client:
        put = client.put("tls/python", "from the client")
        assert put.header.member_id == follower
        assert put.header.leader_id != follower
        kv = client.get("tls/python")  # linearizable: a read index from the leader
        assert kv is not None and kv.value == b"from the client"
        assert [m.role for m in client.member_list().members] == ["VOTER"] * 3


def test_kvctl_with_certificates(cluster: Cluster, pki: Pki) -> None:
    follower = cluster.members[_follower(cluster)].client_addr
    put = _kvctl("--endpoints", follower, *_tls_flags(pki.good), "put", "tls/kvctl", "hello")
    assert (put.returncode, put.stdout, put.stderr) == (0, "OK\n", ""), put.stderr
    # The same from the environment, with etcd's https:// endpoints.
    env = {
        "KVCTL_ENDPOINTS": ",".join(f"https://{e}" for e in cluster.endpoints),
        "KVCTL_CACERT": str(pki.good.ca),
        "KVCTL_CERT": str(pki.good.client.cert),
        "KVCTL_KEY": str(pki.good.client.key),
    }
    get = _kvctl("get", "tls/kvctl", env=env)
    assert (get.returncode, get.stdout, get.stderr) == (0, "hello\n", "")
    status = _kvctl("status", env=env)
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("LEADER") == 2  # the header and the leader's row


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no certificate", "it may require a client certificate (this client has none)"),
        ("foreign certificate", "it refused this client's certificate"),
        ("plaintext", "it may require TLS (this client speaks plaintext)"),
        ("foreign CA trusted", "the server's certificate is not signed by a trusted CA"),
    ],
)
def test_clients_without_a_valid_certificate_are_refused(
    cluster: Cluster, pki: Pki, case: str, expected: str
) -> None:
    tls = {
        "no certificate": ClientTls(ca_file=pki.good.ca),
        "foreign certificate": pki.foreign.client_tls(ca=pki.good.ca),
        "plaintext": None,
        "foreign CA trusted": pki.foreign.client_tls(),
    }[case]
    with (
        pytest.raises(KVError) as refused,
        Client(cluster.endpoints, timeout=1.5, tls=tls) as client,
    ):
        client.put("tls/refused", case)
    error = refused.value
    assert expected in error.message, error.message
    reasons = {reason for _, reason in error.failures}
    assert all(expected in r or r == "timed out" for r in reasons), reasons
    if error.code == grpc.StatusCode.UNAVAILABLE:  # not when the deadline cut an attempt short
        assert isinstance(error, Unavailable) and not error.outcome_unknown, repr(error)
    with cluster.client() as client:
        assert client.get("tls/refused") is None, "a refused connection carried the write"


def test_kvctl_without_a_valid_certificate_fails_clearly(cluster: Cluster, pki: Pki) -> None:
    endpoint = cluster.endpoints[0]
    no_cert = _kvctl("--endpoints", endpoint, "--cacert", str(pki.good.ca), "--timeout", "1",
                     "get", "tls/kvctl")  # fmt: skip
    assert no_cert.returncode == 2
    assert "client certificate" in no_cert.stderr, no_cert.stderr
    foreign = _kvctl("--endpoints", endpoint, *_tls_flags(pki.foreign, ca=pki.good.ca),
                     "--timeout", "1", "get", "tls/kvctl")  # fmt: skip
    assert foreign.returncode == 2
    assert "refused this client's certificate" in foreign.stderr, foreign.stderr
    missing = _kvctl("--endpoints", endpoint, "--cacert", "/nonexistent/ca.crt", "get", "k")
    assert missing.returncode == 2
    assert "--cacert /nonexistent/ca.crt: cannot read it" in missing.stderr, missing.stderr
    half = _kvctl("--endpoints", endpoint, "--cert", str(pki.good.client.cert), "get", "k")
    assert half.returncode == 2
    assert "--cert and --key together" in half.stderr, half.stderr


# -- peers -------------------------------------------------------------------------


def _metric(cluster: Cluster, name: str) -> dict[tuple[int, str], float]:
    """Every member's samples of ``name``, by (member id, labels)."""
    samples = {}
    for member_id, member in cluster.members.items():
        if not member.running:
            continue
        url = f"http://{member.metrics_addr}/metrics"  # the metrics port stays plaintext
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    samples[(member_id, ",".join(sorted(sample.labels.values())))] = sample.value
    return samples


def _inject(
    address: str, frame: pb.MessageBatch, credentials: grpc.ChannelCredentials | None
) -> pb.StreamAck:
    """Open a peer Stream to ``address`` as a peer would and send one frame."""

    async def run() -> pb.StreamAck:
        if credentials is None:
            channel = grpc.aio.insecure_channel(address)
        else:
            channel = grpc.aio.secure_channel(address, credentials)
        async with channel:
            call = channel.stream_unary(
                STREAM_METHOD, response_deserializer=pb.StreamAck.FromString
            )
            ack: pb.StreamAck = await call(iter([frame.SerializeToString()]), timeout=5)
            return ack

    return asyncio.run(run())


def _peer_credentials(authority: Authority, trusted_ca: Path) -> grpc.ChannelCredentials:
    pair = KeyPair(authority.member.cert.read_bytes(), authority.member.key.read_bytes())
    return LoadedTls(pair, trusted_ca.read_bytes(), True).channel_credentials()


def test_a_peer_without_a_certificate_of_the_peer_ca_cannot_inject(
    cluster: Cluster, pki: Pki
) -> None:
    """The most harmful frame there is: the right cluster id, a real member as
    sender, and a vote request that would depose the leader with a far higher
    term. It never gets past the handshake, so nothing is counted or stepped."""
    leader = cluster.wait_for_leader()
    target = _follower(cluster)
    sender = next(i for i in cluster.running_ids() if i not in (leader, target))
    with cluster.node_client(target) as client:
        status = client.status(cluster.members[target].client_addr)
    cluster_id, term = status.header.cluster_id, status.header.term
    vote = RequestVote(term + 1000, sender, 1 << 40, term, disrupt_leader=True, pre_vote=False)
    peer_addr = cluster.members[target].peer_addr
    frame = encode_batch(cluster_id, sender, cluster.members[sender].peer_addr, target,
                         [Message(target, peer_addr, vote)])  # fmt: skip

    # Control: a frame from a certificate of the peer CA reaches the checks
    # (this one is for another cluster, so it is refused and counted).
    refused_before = _metric(cluster, "kvstore_peer_refused_total")
    stranger = encode_batch(cluster_id + 1, sender, "", target, [])
    with pytest.raises(grpc.aio.AioRpcError) as checked:
        _inject(peer_addr, stranger, _peer_credentials(pki.good, pki.good.ca))
    assert checked.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cluster id mismatch" in (checked.value.details() or "")
    refused_after = _metric(cluster, "kvstore_peer_refused_total")
    assert refused_after[(target, "cluster")] == refused_before[(target, "cluster")] + 1

    attempts = {
        "foreign certificate": _peer_credentials(pki.foreign, pki.good.ca),
        "no certificate": grpc.ssl_channel_credentials(pki.good.ca.read_bytes()),
        "plaintext": None,
    }
    for case, credentials in attempts.items():
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            _inject(peer_addr, frame, credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, case
    assert _metric(cluster, "kvstore_peer_refused_total") == refused_after
    with cluster.client() as client:
        terms = [row.status.header.term for row in client.status() if row.status is not None]
    assert len(terms) == 3 and max(terms) < term + 1000, terms
    assert cluster.wait_for_leader() > 0


def test_a_member_with_a_foreign_certificate_cannot_join(cluster: Cluster, pki: Pki) -> None:
    """Member 4 has certificates of the foreign CA only; member 5 knows the
    cluster's CA but has a foreign certificate. Both give up and exit 1 naming
    the TLS failure; the member list stays as it was."""
    foreign = pki.foreign.serve_args()
    trusting = [*foreign, "--trusted-ca-file", str(pki.good.ca),
                "--peer-trusted-ca-file", str(pki.good.ca)]  # fmt: skip
    joiners = {4: foreign, 5: trusting}
    for member_id, args in joiners.items():
        cluster.add_member(
            member_id, cluster.endpoints[:3], [*args, "--join-timeout", JOIN_TIMEOUT]
        )
        cluster.start_node(member_id)
    try:
        for member_id in joiners:
            process = cluster.members[member_id].process
            assert process is not None
            assert process.wait(timeout=PROCESS_WAIT) == 1, cluster.log_tail(member_id)
        log4, log5 = cluster.log_text(4), cluster.log_text(5)
        assert "member 4 cannot join" in log4, log4
        assert "the server's certificate is not signed by a trusted CA" in log4, log4
        assert "member 5 cannot join" in log5, log5
        assert "closed the connection while it was being set up" in log5, log5
    finally:
        cluster.stop([4, 5])
        for member_id in joiners:
            del cluster.members[member_id]
    with cluster.client() as client:
        members = client.member_list().members
    assert sorted((m.id, m.role) for m in members) == [(i, "VOTER") for i in (1, 2, 3)]


def test_a_member_with_valid_certificates_joins(cluster: Cluster) -> None:
    """It learns the cluster id and asks to be added over client TLS (its own
    certificate), and is caught up over peer mutual TLS; then it leaves again."""
    member = cluster.add_member(6, cluster.endpoints[:3])
    cluster.start_node(6)
    try:
        with cluster.client(cluster.endpoints[:3], timeout=10.0) as client:

            def voting() -> bool:
                cluster.check_running([6])
                return {m.id: m.role for m in client.member_list().members}.get(6) == "VOTER"

            wait_until(voting, PROCESS_WAIT, "member 6 voting")
            client.put("tls/joined", "yes")
        with cluster.node_client(6) as client:
            kv = wait_until(lambda: client.get("tls/joined", serializable=True), 10, "replica")
            assert kv.value == b"yes"
        with cluster.client(cluster.endpoints[:3], timeout=30.0) as client:
            client.member_remove(6)
            assert sorted(m.id for m in client.member_list().members) == [1, 2, 3]
    except (KVError, TimeoutError):
        print(cluster.log_tail(6), file=sys.stderr)
        raise
    finally:
        cluster.stop(6)
        del cluster.members[member.id]
