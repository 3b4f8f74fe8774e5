"""Entries that commit while an earlier batch is being applied are queued for
apply at once (kvstore.node.node._APPLIES_IN_FLIGHT), not after that batch's
transaction has synced.

Three members; only the leader's disk is slow (every flush DELAY_MS = D
longer), so the followers' acknowledgements commit a write within
milliseconds, long before the leader's own flushes end. A log transaction
flushes twice (data and meta pages), an apply transaction once
(kvstore.storage.env). W1 is answered when its apply runs, after its log
transaction: 2 D; that apply's transaction then flushes for another D. W2,
sent at once, commits meanwhile. Queued at once, its apply shares the next
transaction with W2's log write and runs when W1's apply is done: W2 takes
about D. Queued only after W1's apply had synced, it waited for W2's log
transaction as well: about 3 D (checked: the test fails that way).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.client import Client
from tests.chaos.cluster import ChaosCluster, chaos_cluster

DELAY_MS = 300


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosCluster]:
    with chaos_cluster(Path(tmp_path_factory.mktemp("applyq")), spares=0) as cluster:
        yield cluster


def timed_put(client: Client, key: bytes) -> float:
    started = time.monotonic()
    client.put(key, b"value")
    return time.monotonic() - started


def test_a_write_committed_during_an_apply_is_applied_in_the_next_transaction(
    cluster: ChaosCluster,
) -> None:
    leader = cluster.wait_for_leader()
    with cluster.node_client(leader, timeout=30) as client:
        client.put(b"warm", b"up")
        # Every member has applied it, so its apply transaction (flush included)
        # is over and the leader's disk is idle when the slow-down starts.
        cluster.wait_converged()
        cluster.set_disk_delay([leader], DELAY_MS)
        try:
            first = timed_put(client, b"w1")
            second = timed_put(client, b"w2")
        finally:
            cluster.set_disk_delay([leader], 0)
        assert first >= DELAY_MS / 1000, f"the leader's disk was not slow: {first:.3f} s"
        assert second < first, f"w1 took {first:.3f} s, w2 {second:.3f} s"
        # Both applied, in order.
        w1, w2 = client.get(b"w1"), client.get(b"w2")
        assert w1 is not None and w2 is not None
        assert w2.mod_revision == w1.mod_revision + 1
