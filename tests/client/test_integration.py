"""The client and kvctl against a real 3-node cluster of ``kvstore serve`` processes.

One cluster serves the whole module (starting one costs seconds); tests use
keys of their own so that they do not depend on each other's order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from kvstore.client import Client, InvalidArgument, RequestId, Unavailable
from tests.client.fakeserver import dead_endpoint
from tests.integration.cluster import REPO, Cluster, running_cluster

MAX_KEY = 511


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


@pytest.fixture
def client(cluster: Cluster) -> Iterator[Client]:
    with cluster.client(timeout=10.0) as client:
        yield client


def kvctl(
    endpoints: list[str] | None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run kvctl as a user would: a separate process, its own exit code and streams."""
    argv = [sys.executable, "-m", "kvstore.cli.kvctl"]
    if endpoints is not None:
        argv += ["--endpoints", ",".join(endpoints)]
    full_env = {k: v for k, v in os.environ.items() if k != "KVCTL_ENDPOINTS"}
    full_env.update(env or {})
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, cwd=REPO, env=full_env, timeout=60
    )


# -- the client ----------------------------------------------------------------------


def test_one_leader_three_voters(cluster: Cluster, client: Client) -> None:
    leader = cluster.wait_for_leader()
    rows = client.status()
    assert [r.error for r in rows] == [None, None, None]
    statuses = [r.status for r in rows if r.status is not None]
    assert sorted(s.header.member_id for s in statuses) == [1, 2, 3]
    assert {s.header.leader_id for s in statuses} == {leader}
    assert [s.state for s in statuses].count("LEADER") == 1
    assert len({s.header.cluster_id for s in statuses}) == 1
    members = client.member_list()
    assert sorted((m.id, m.role) for m in members.members) == [
        (1, "VOTER"),
        (2, "VOTER"),
        (3, "VOTER"),
    ]
    assert sorted(m.peer_address for m in members.members) == sorted(
        n.peer_addr for n in cluster.nodes.values()
    )


def test_writes_through_any_node_are_read_through_every_node(cluster: Cluster) -> None:
    for writer in cluster.endpoints:
        key = f"any/{writer}"
        with Client([writer]) as client:
            result = client.put(key, writer)
            assert result.header.member_id == cluster.endpoints.index(writer) + 1
        for reader in cluster.endpoints:
            with Client([reader]) as client:
                kv = client.get(key)
                assert kv is not None and kv.value == writer.encode(), (writer, reader)


def test_serializable_reads_catch_up(cluster: Cluster) -> None:
    with Client([cluster.endpoints[0]]) as writer:
        writer.put("ser/k", "v")
    for endpoint in cluster.endpoints:
        with Client([endpoint]) as reader:
            deadline = time.monotonic() + 5
            while (kv := reader.get("ser/k", serializable=True)) is None:
                assert time.monotonic() < deadline, f"{endpoint} never applied the write"
                time.sleep(0.05)
            assert kv.value == b"v"


def test_revisions_and_versions(client: Client) -> None:
    first = client.put("rev/k", "1")
    kv = client.get("rev/k")
    assert kv is not None
    assert kv.create_revision == kv.mod_revision == first.header.revision and kv.version == 1
    second = client.put("rev/k", "2", prev_kv=True)
    assert second.header.revision == first.header.revision + 1
    assert second.prev_kv is not None and second.prev_kv.value == b"1"
    kv = client.get("rev/k")
    assert kv is not None and (kv.create_revision, kv.mod_revision, kv.version) == (
        first.header.revision, second.header.revision, 2,
    )  # fmt: skip
    assert client.put("rev/new", "x").prev_kv is None


def test_delete(client: Client) -> None:
    client.put("del/k", "v")
    result = client.delete("del/k", prev_kv=True)
    assert result.deleted and result.prev_kv is not None and result.prev_kv.value == b"v"
    again = client.delete("del/k")
    assert not again.deleted and again.prev_kv is None
    assert again.header.revision == result.header.revision  # no change, no new revision
    assert client.get("del/k") is None
    client.put("del/k", "back")
    kv = client.get("del/k")
    assert kv is not None and kv.version == 1


def test_range(client: Client) -> None:
    for key in ("rng/a", "rng/b", "rng/c", "rng0"):
        client.put(key, key.upper())
    assert [kv.key for kv in client.range("rng/").kvs] == [b"rng/a", b"rng/b", b"rng/c"]
    assert [kv.value for kv in client.range("rng/").kvs] == [b"RNG/A", b"RNG/B", b"RNG/C"]
    between = client.range(start="rng/b", end="rng0")
    assert [kv.key for kv in between.kvs] == [b"rng/b", b"rng/c"] and not between.more
    limited = client.range("rng", limit=2)
    assert [kv.key for kv in limited.kvs] == [b"rng/a", b"rng/b"] and limited.more
    assert not client.range("rng", limit=4).more
    assert client.range("rng/zzz").kvs == []
    assert [kv.key for kv in client.range(start="rng0", serializable=True).kvs][:1] == [b"rng0"]


def test_compare_and_swap(client: Client) -> None:
    created = client.compare_and_swap("cas/k", "1", expected_absent=True)
    assert created.succeeded and created.kv is not None and created.kv.value == b"1"
    lost = client.compare_and_swap("cas/k", "x", expected_absent=True)
    assert not lost.succeeded and lost.kv is not None and lost.kv.value == b"1"
    by_value = client.compare_and_swap("cas/k", "2", expected_value="1")
    assert by_value.succeeded and by_value.kv is not None and by_value.kv.version == 2
    stale = client.compare_and_swap("cas/k", "x", expected_mod_revision=created.kv.mod_revision)
    assert not stale.succeeded and stale.kv == by_value.kv
    assert stale.header.revision == by_value.header.revision  # a failed CAS writes nothing
    fresh = client.compare_and_swap("cas/k", "3", expected_mod_revision=by_value.kv.mod_revision)
    assert fresh.succeeded
    missing = client.compare_and_swap("cas/none", "x", expected_value="y")
    assert not missing.succeeded and missing.kv is None


def test_a_resent_request_id_is_applied_once(client: Client) -> None:
    rid = RequestId(client_id=0x5EED_0000_0001, sequence=1)
    first = client.put("once/k", "first", request_id=rid)
    client.put("once/k", "second")  # another session's write in between
    again = client.put("once/k", "first", request_id=rid)
    assert again.header.revision == first.header.revision  # the original answer
    kv = client.get("once/k")
    assert kv is not None and kv.value == b"second" and kv.version == 2


def test_limits_are_invalid_argument(client: Client) -> None:
    with pytest.raises(InvalidArgument) as info:
        client.put("k" * 600, "v")
    assert str(MAX_KEY) in info.value.message and "600" in info.value.message
    assert client.put("k" * MAX_KEY, "v") is not None
    with pytest.raises(InvalidArgument):
        client.put("", "v")
    with pytest.raises(InvalidArgument) as info:
        client.put("big", b"x" * ((1 << 20) + 1))
    assert "value" in info.value.message and str(1 << 20) in info.value.message
    with pytest.raises(InvalidArgument):
        client.get("k" * 600)


def test_a_dead_endpoint_in_the_list_is_skipped(cluster: Cluster) -> None:
    with Client([dead_endpoint(), *cluster.endpoints]) as client:
        client.put("dead/k", "v")
        assert client.current_endpoint in cluster.endpoints


def test_no_cluster_fails_within_the_deadline() -> None:
    with Client([dead_endpoint()], timeout=1.0) as client:
        start = time.monotonic()
        with pytest.raises(Unavailable, match="no endpoint answered"):
            client.put("k", "v")
        assert time.monotonic() - start < 3.0


# -- kvctl -----------------------------------------------------------------------------


def test_kvctl_put_get_del(cluster: Cluster) -> None:
    eps = cluster.endpoints
    put = kvctl(eps, "put", "cli/k", "hello world")
    assert (put.returncode, put.stdout, put.stderr) == (0, "OK\n", "")
    for endpoint in eps:
        got = kvctl([endpoint], "get", "cli/k")
        assert (got.returncode, got.stdout) == (0, "hello world\n")
    missing = kvctl(eps, "get", "cli/missing")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert kvctl(eps, "del", "cli/k").stdout == "1\n"
    assert kvctl(eps, "del", "cli/k").stdout == "0\n"
    assert kvctl(eps, "get", "cli/k", "--serializable").returncode == 1


def test_kvctl_endpoints_from_the_environment(cluster: Cluster) -> None:
    env = {"KVCTL_ENDPOINTS": ",".join(cluster.endpoints)}
    assert kvctl(None, "put", "cli/env", "e", env=env).returncode == 0
    assert kvctl(None, "get", "cli/env", env=env).stdout == "e\n"


def test_kvctl_range(cluster: Cluster) -> None:
    eps = cluster.endpoints
    for key in ("clr/a", "clr/b", "clr/c"):
        assert kvctl(eps, "put", key, key[-1]).returncode == 0
    assert kvctl(eps, "range", "clr/").stdout == "clr/a\ta\nclr/b\tb\nclr/c\tc\n"
    assert (
        kvctl(eps, "range", "--from", "clr/b", "--to", "clr/c", "--keys-only").stdout == "clr/b\n"
    )
    limited = kvctl(eps, "range", "clr/", "--limit", "2", "-w", "json")
    doc = json.loads(limited.stdout)
    assert [kv["key"] for kv in doc["kvs"]] == ["clr/a", "clr/b"] and doc["more"] is True


def test_kvctl_cas(cluster: Cluster) -> None:
    eps = cluster.endpoints
    ok = kvctl(eps, "cas", "clc/lock", "me", "--expect-absent")
    assert (ok.returncode, ok.stdout) == (0, "SUCCEEDED\n")
    failed = kvctl(eps, "cas", "clc/lock", "you", "--expect-value", "nobody")
    assert failed.returncode == 1
    assert failed.stdout.startswith("FAILED\ncurrent: me (create_revision=")
    assert kvctl(eps, "cas", "clc/lock", "you", "--expect-value", "me").returncode == 0
    assert kvctl(eps, "get", "clc/lock").stdout == "you\n"


def test_kvctl_status_and_members(cluster: Cluster) -> None:
    leader = cluster.wait_for_leader()
    status = kvctl(cluster.endpoints, "status")
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("ENDPOINT") and len(lines) == 4
    assert sum(" LEADER " in line for line in lines[1:]) == 1
    as_json = json.loads(kvctl(cluster.endpoints, "status", "-w", "json").stdout)
    assert {row["header"]["leader_id"] for row in as_json} == {leader}
    assert sorted(row["header"]["member_id"] for row in as_json) == [1, 2, 3]
    members = kvctl(cluster.endpoints, "member", "list")
    assert members.returncode == 0 and len(members.stdout.splitlines()) == 4


def test_kvctl_errors(cluster: Cluster) -> None:
    too_long = kvctl(cluster.endpoints, "put", "k" * 600, "v")
    assert too_long.returncode == 2 and too_long.stdout == ""
    assert too_long.stderr.startswith("kvctl: key is 600 bytes")
    assert "511" in too_long.stderr and too_long.stderr.count("\n") == 1
    dead = dead_endpoint()
    down = kvctl([dead], "--timeout", "1", "get", "k")
    assert down.returncode == 2
    assert down.stderr == f"kvctl: no endpoint answered: {dead} (connection refused)\n"
