"""Failover, retries, deadlines and RequestIds, against fake members over real gRPC."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kvstore.client import (
    Client,
    InvalidArgument,
    NoSpace,
    OutcomeUnknown,
    RequestId,
    Timeout,
    Unavailable,
)
from tests.client.fakeserver import Delay, Fail, FakeMember, dead_endpoint, fake_cluster

C = grpc.StatusCode


@pytest.fixture
def members() -> Iterator[list[FakeMember]]:
    with fake_cluster(2) as members:
        yield members


def _ids(member: FakeMember, method: str = "Put") -> list[tuple[int, int]]:
    return [(r.request_id.client_id, r.request_id.sequence) for m, r in member.calls if m == method]


def test_basic_operations_and_dataclasses(members: list[FakeMember]) -> None:
    with Client([members[0].address]) as client:
        put = client.put("k", b"v1")
        assert put.header.member_id == 1 and put.header.revision == 1 and put.prev_kv is None
        put = client.put(b"k", "v2", prev_kv=True)
        assert put.prev_kv is not None and put.prev_kv.value == b"v1"
        kv = client.get("k")
        assert kv is not None
        assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
            b"k", b"v2", 1, 2, 2,
        )  # fmt: skip
        assert client.get("missing") is None
        cas = client.compare_and_swap("k", "v3", expected_mod_revision=2)
        assert cas.succeeded and cas.kv is not None and cas.kv.value == b"v3"
        cas = client.compare_and_swap("k", "v4", expected_value="nope")
        assert not cas.succeeded and cas.kv is not None and cas.kv.value == b"v3"
        assert client.compare_and_swap("new", "x", expected_absent=True).succeeded
        assert [kv.key for kv in client.range().kvs] == [b"k", b"new"]
        limited = client.range(limit=1)
        assert [kv.key for kv in limited.kvs] == [b"k"] and limited.more
        assert [kv.key for kv in client.range(start="l").kvs] == [b"new"]
        assert [kv.key for kv in client.range("ne").kvs] == [b"new"]
        deleted = client.delete("k", prev_kv=True)
        assert deleted.deleted and deleted.prev_kv is not None
        assert not client.delete("k").deleted
        members_ = client.member_list()
        assert [(m.id, m.role) for m in members_.members] == [(1, "VOTER"), (2, "VOTER")]


def test_writes_carry_increasing_sequences_under_one_client_id(
    members: list[FakeMember],
) -> None:
    with Client([members[0].address], client_id=1234) as client:
        for i in range(3):
            client.put("k", str(i))
        client.delete("k")
        client.put("k", "again")
    assert _ids(members[0]) == [(1234, 1), (1234, 2), (1234, 3), (1234, 5)]
    assert _ids(members[0], "Delete") == [(1234, 4)]


def test_unavailable_moves_to_the_next_endpoint_and_sticks(members: list[FakeMember]) -> None:
    first, second = members
    first.script = [Fail(C.UNAVAILABLE, "no leader")]
    with Client([first.address, second.address]) as client:
        client.put("k", "v")
        assert client.current_endpoint == second.address
        assert client.get("k") is not None
    assert len(first.calls) == 1 and len(second.calls) == 2
    assert _ids(first) == _ids(second)  # the same request, sent twice


def test_a_dead_endpoint_is_skipped(members: list[FakeMember]) -> None:
    with Client([dead_endpoint(), members[0].address]) as client:
        client.put("k", "v")
        assert client.current_endpoint == members[0].address


@pytest.mark.parametrize("code", [C.DEADLINE_EXCEEDED, C.ABORTED])
def test_lost_answer_is_retried_with_the_same_request_id_and_applied_once(
    members: list[FakeMember], code: C
) -> None:
    first, second = members
    first.script = [Fail(code, "answer lost", apply=True)]
    with Client([first.address, second.address]) as client:
        result = client.put("k", "v")
    assert result.header.revision == 1  # the original answer, not a second write
    assert first.store.revision == 1
    assert _ids(first) == _ids(second)


def test_invalid_argument_is_raised_at_once(members: list[FakeMember]) -> None:
    with Client([m.address for m in members]) as client, pytest.raises(InvalidArgument) as info:
        client.put("k" * 600, "v")
    err = info.value
    assert err.code == C.INVALID_ARGUMENT and err.applied is False
    assert err.message == "key is 600 bytes; keys must be 1 to 511 bytes (LMDB's maximum key size)"
    assert err.endpoint == members[0].address
    assert len(members[0].calls) + len(members[1].calls) == 1


def test_no_space_is_raised_at_once_and_the_session_continues(members: list[FakeMember]) -> None:
    members[0].script = [Fail(C.RESOURCE_EXHAUSTED, "no space: the map is full")]
    with Client([m.address for m in members], client_id=9) as client:
        with pytest.raises(NoSpace, match="map is full"):
            client.put("k", "v")
        client.put("k", "v")
    assert _ids(members[0]) == [(9, 1), (9, 2)]


def test_unknown_outcome_after_a_lost_answer_then_no_leader(members: list[FakeMember]) -> None:
    first, second = members
    first.script = [Fail(C.DEADLINE_EXCEEDED, "timed out", apply=True)]
    second.script = [Fail(C.UNAVAILABLE, "no leader")] * 100
    first.script += [Fail(C.UNAVAILABLE, "no leader")] * 100
    with Client([first.address, second.address], timeout=1.0, client_id=5) as client:
        start = time.monotonic()
        with pytest.raises(OutcomeUnknown) as info:
            client.put("k", "v")
        assert time.monotonic() - start < 2.0
        err = info.value
        assert err.outcome_unknown and err.request_id == RequestId(5, 1)
        assert "may have been applied" in err.message
        # The session of an unknown write is retired: the next write uses a new id ...
        first.script, second.script = [], []
        client.put("other", "x")
        assert _ids(first)[-1][0] != 5
        # ... so that asking again with the old id resolves the outcome: applied once.
        again = client.put("k", "v", request_id=err.request_id)
    assert again.header.revision == 1 and first.store.revision == 2


def test_unavailable_everywhere_fails_within_the_deadline(members: list[FakeMember]) -> None:
    for m in members:
        m.script = [Fail(C.UNAVAILABLE, "no leader: waited 0.1 s")] * 1000
    with Client([m.address for m in members], timeout=0.8) as client:
        start = time.monotonic()
        with pytest.raises(Unavailable) as info:
            client.put("k", "v")
        elapsed = time.monotonic() - start
    assert 0.7 < elapsed < 1.8  # the deadline, not a retry budget, ends it
    assert info.value.applied is False
    assert info.value.message == (
        f"no endpoint could serve the request: {members[0].address} (no leader: waited 0.1 s), "
        f"{members[1].address} (no leader: waited 0.1 s)"
    )


def test_connection_refused_everywhere() -> None:
    a, b = dead_endpoint(), dead_endpoint()
    with Client([a, b], timeout=0.5) as client, pytest.raises(Unavailable) as info:
        client.get("k")
    assert info.value.message == (
        f"no endpoint answered: {a} (connection refused), {b} (connection refused)"
    )


def test_a_hung_member_does_not_use_up_the_deadline(members: list[FakeMember]) -> None:
    first, second = members
    first.script = [Delay(3.0)]
    with Client([first.address, second.address], timeout=2.0) as client:
        client.put("k", "v")  # an unbounded first attempt would use up the 2 s and raise
    assert _ids(first) == _ids(second)


def test_a_read_that_times_out_everywhere_raises_timeout(members: list[FakeMember]) -> None:
    for m in members:
        m.script = [Delay(1.0)] * 5
    with Client([m.address for m in members], timeout=0.6) as client, pytest.raises(Timeout):
        client.get("k")


def test_other_codes_on_a_write_are_unknown_outcomes(members: list[FakeMember]) -> None:
    members[0].script = [Fail(C.FAILED_PRECONDITION, "request too old")]
    with Client([members[0].address]) as client, pytest.raises(OutcomeUnknown):
        client.put("k", "v")


def test_concurrent_writes_use_one_session_each(members: list[FakeMember]) -> None:
    """The server keeps one sequence per client id: concurrent writes must not share one."""
    member = members[0]
    member.script = [Delay(0.2)] * 8
    with Client([member.address], client_id=77) as client:
        threads = [threading.Thread(target=client.put, args=(f"k{i}", "v")) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        client.put("last", "v")
    ids = _ids(member)
    assert len(set(ids)) == len(ids) == 9
    assert 77 in {client_id for client_id, _ in ids}
    assert len({client_id for client_id, _ in ids}) >= 2
    for client_id in {c for c, _ in ids}:
        sequences = [s for c, s in ids if c == client_id]
        assert sequences == sorted(sequences) and len(set(sequences)) == len(sequences)


def test_status_of_every_endpoint_reports_unreachable_ones(members: list[FakeMember]) -> None:
    dead = dead_endpoint()
    with Client([members[0].address, dead, members[1].address], timeout=1.0) as client:
        rows = client.status()
        assert [r.endpoint for r in rows] == [members[0].address, dead, members[1].address]
        assert rows[0].status is not None and rows[0].status.is_leader
        assert rows[2].status is not None and rows[2].status.state == "FOLLOWER"
        assert rows[1].status is None and isinstance(rows[1].error, Unavailable)
        assert rows[1].error.message == "connection refused"
        one = client.status(members[1].address)
        assert one.header.member_id == 2 and one.commit_index == 10
        with pytest.raises(Unavailable):
            client.status(dead)


def test_a_member_dying_mid_write_makes_the_outcome_unknown() -> None:
    """gRPC reports the lost connection as UNAVAILABLE, like a refusal; it is not one.

    Run against the installed grpcio, so a change of its wording is caught here.
    """
    repo = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.client.fakeserver"], cwd=repo, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        client = Client([f"127.0.0.1:{port}"], timeout=1.0)
        with client, pytest.raises(OutcomeUnknown) as info:
            client.put("k", "v")
        assert info.value.failures[0][1].startswith("connection lost")
    finally:
        process.kill()
        process.wait()


def test_a_membership_change_retries_unavailable_but_not_the_servers_deadline(
    members: list[FakeMember],
) -> None:
    members[0].script = [Fail(C.UNAVAILABLE, "no leader")]
    with Client([m.address for m in members], timeout=5) as client:
        assert client.member_add(3, "peer3:1").member is not None
        assert [m for m, _ in members[1].calls] == ["MemberAdd"]  # the retry went on there
        members[1].script = [Fail(C.DEADLINE_EXCEEDED, "member 4 (peer4:1) did not catch up")]
        with pytest.raises(Timeout) as failed:
            client.member_add(4, "peer4:1")
    assert failed.value.message == "member 4 (peer4:1) did not catch up"
    assert [m for m, _ in members[0].calls] == ["MemberAdd"]  # not retried elsewhere


def test_a_membership_call_may_take_the_whole_timeout(members: list[FakeMember]) -> None:
    """Two endpoints give a read half the timeout per attempt; a catch-up needs all of it."""
    members[0].script = [Delay(1.2)]
    with Client([m.address for m in members], timeout=2) as client:
        assert client.transfer_leader(2).leader_id == 2
    assert [m for m, _ in members[1].calls] == []
