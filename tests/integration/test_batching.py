"""Writes in flight carry the next ones (Node._schedule_flush, Nagle's rule),
linearizable reads that arrive while a ReadIndex round is in flight share
the next round (Node.read_index), and requests a follower forwards share
stream frames both ways (kvstore.api.forward).

The members run with a flush linger of a minute, so the linger never ends a
wait here: a lone write must go out at once, and writes that arrive while
others are in flight must go out when those land (commit), many per disk
write and per AppendEntries. Were either rule broken, writes would stall
until the client's deadline.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc.aio
import pytest

from kvstore.v1 import kv_pb2, kv_pb2_grpc
from tests.integration.cluster import Cluster, running_cluster

LINGER_MS = 60_000
READ_GAP_MS = 50
CONCURRENT = 32
ROUNDS = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = Path(tmp_path_factory.mktemp("batching"))
    args = ["--flush-linger", str(LINGER_MS), "--read-round-gap", str(READ_GAP_MS)]
    with running_cluster(base, 3, args) as cluster:
        yield cluster


def metric(cluster: Cluster, node_id: int, name: str) -> float:
    """The sum of a metric's samples (all labels) on one member."""
    address = cluster.members[node_id].metrics_addr
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


async def put_all(address: str, keys: list[bytes], deadline: float) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        await asyncio.gather(
            *(stub.Put(kv_pb2.PutRequest(key=k, value=b"v" * 100), timeout=deadline) for k in keys)
        )


async def get_all(address: str, keys: list[bytes], deadline: float) -> list[bool]:
    """Linearizable gets (the default), CONCURRENT sent at once, wave after wave.
    (Clients each reading in a loop batch only when requests arrive faster than
    rounds end, which a loaded test machine may not manage.)"""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)
        found: list[bool] = []
        for at in range(0, len(keys), CONCURRENT):
            wave = keys[at : at + CONCURRENT]
            replies = await asyncio.gather(
                *(stub.Get(kv_pb2.GetRequest(key=k), timeout=deadline) for k in wave)
            )
            found.extend(reply.found for reply in replies)
        return found


def test_a_lone_write_does_not_wait_for_the_linger(cluster: Cluster) -> None:
    leader = cluster.leader_id()
    with cluster.node_client(leader, timeout=5) as client:
        for i in range(5):  # one at a time: each finds nothing in flight
            client.put(f"lone/{i}".encode(), b"v")
        assert client.get(b"lone/4").value == b"v"


def test_writes_in_flight_carry_the_next_ones(cluster: Cluster) -> None:
    leader = cluster.leader_id()
    address = cluster.members[leader].client_addr
    persists = "kvstore_log_persist_duration_seconds_count"
    frames = "kvstore_peer_frames_sent_total"
    transactions, requests = "kvstore_db_transactions_total", "kvstore_db_write_requests_total"
    persists_before = metric(cluster, leader, persists)
    frames_before = metric(cluster, leader, frames)
    transactions_before = metric(cluster, leader, transactions)
    requests_before = metric(cluster, leader, requests)
    total = 0
    for r in range(ROUNDS):
        keys = [f"batch/{r}/{i}".encode() for i in range(CONCURRENT)]
        asyncio.run(put_all(address, keys, deadline=10))
        total += len(keys)
    persisted = metric(cluster, leader, persists) - persists_before
    sent = metric(cluster, leader, frames) - frames_before
    # One disk write and one frame per follower per write would be `total` and
    # 2 * total; batches of even two writes halve them. Heartbeats add a few frames.
    assert persisted <= total / 2, f"{persisted} leader disk writes for {total} writes"
    assert sent <= total, f"{sent} frames to followers for {total} writes"
    # Log writes and applies share transactions (group commit): never more
    # transactions than requests, and at least the log writes' worth of requests.
    committed = metric(cluster, leader, transactions) - transactions_before
    requested = metric(cluster, leader, requests) - requests_before
    assert 0 < committed <= requested, (committed, requested)
    assert requested >= persisted, (requested, persisted)
    with cluster.node_client(leader, timeout=5) as client:
        assert len(client.range(prefix=b"batch/").kvs) == total


def test_reads_during_a_round_go_with_the_next_round(cluster: Cluster) -> None:
    """A read that arrives while a ReadIndex round is in flight waits for that
    round to end, not for the linger (a minute here), then goes in the next."""
    leader = cluster.leader_id()
    address = cluster.members[leader].client_addr
    asyncio.run(put_all(address, [b"read/present"], deadline=10))
    frames = "kvstore_peer_frames_sent_total"
    before = metric(cluster, leader, frames)
    keys = [b"read/present"] * (CONCURRENT * ROUNDS)
    found = asyncio.run(get_all(address, keys, deadline=10))
    sent = metric(cluster, leader, frames) - before
    assert all(found) and len(found) == len(keys)
    # How many share a round depends on how fast they arrive; never more than
    # one round (a frame per follower) per read.
    assert sent <= 2 * len(keys) + 20, f"{sent} frames to followers for {len(keys)} reads"


async def read_in_turns(address: str, readers: int, each: int) -> None:
    """``readers`` clients, each reading ``each`` times one after the other."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = kv_pb2_grpc.KVStub(channel)

        async def reader(n: int) -> None:
            for i in range(each):
                reply = await stub.Get(kv_pb2.GetRequest(key=b"read/present"), timeout=10)
                assert reply.found, (n, i)

        await asyncio.gather(*(reader(n) for n in range(readers)))


def test_concurrent_readers_share_spaced_rounds(cluster: Cluster) -> None:
    """Readers that keep a round in flight wait for the gap since it started
    (--read-round-gap), so each round carries several of them; rounds back to
    back as each ends carried one or two (a frame to and from each follower
    per round)."""
    leader = cluster.leader_id()
    address = cluster.members[leader].client_addr
    asyncio.run(put_all(address, [b"read/present"], deadline=10))
    rounds = "kvstore_read_rounds_total"
    before = metric(cluster, leader, rounds)
    asyncio.run(read_in_turns(address, readers=4, each=25))
    started = metric(cluster, leader, rounds) - before
    assert 0 < started <= 40, f"{started} ReadIndex rounds for 100 reads by 4 readers"
    # A lone reader never waits for the gap: each read is its own round.
    before = metric(cluster, leader, rounds)
    asyncio.run(read_in_turns(address, readers=1, each=10))
    assert metric(cluster, leader, rounds) - before == 10


def test_writes_through_a_follower_share_forward_frames(cluster: Cluster) -> None:
    """Concurrent writes sent to a follower reach the leader many per frame,
    and their answers come back many per frame: a frame per request would
    cost the leader about a unary call each (DESIGN 3.3)."""
    leader = cluster.leader_id()
    follower = next(n for n in cluster.members if n != leader)
    address = cluster.members[follower].client_addr
    counters = {
        (follower, "kvstore_forward_requests_sent_total"): 0.0,
        (follower, "kvstore_forward_frames_sent_total"): 0.0,
        (leader, "kvstore_forward_requests_served_total"): 0.0,
        (leader, "kvstore_forward_answer_frames_sent_total"): 0.0,
    }
    for node_id, name in counters:
        counters[node_id, name] = metric(cluster, node_id, name)
    total = 0
    for r in range(ROUNDS):
        keys = [f"forward/{r}/{i}".encode() for i in range(CONCURRENT)]
        asyncio.run(put_all(address, keys, deadline=10))
        total += len(keys)
    moved = {name: metric(cluster, n, name) - before for (n, name), before in counters.items()}
    assert moved["kvstore_forward_requests_sent_total"] == total, moved
    assert moved["kvstore_forward_requests_served_total"] == total, moved
    assert moved["kvstore_forward_frames_sent_total"] <= total / 2, moved
    assert moved["kvstore_forward_answer_frames_sent_total"] <= total / 2, moved
    with cluster.node_client(leader, timeout=5) as client:
        assert len(client.range(prefix=b"forward/").kvs) == total
