"""A full LMDB map: writes fail with RESOURCE_EXHAUSTED (the client's NoSpace)
saying so, reads go on, no node crashes, and a restart with a bigger
``--map-size`` makes writes work again."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from kvstore.client import Client, KVError, NoSpace
from tests.integration.cluster import FAST_TIMEOUTS, running_cluster

VALUE = b"x" * (256 << 10)
NODES = (1, 2, 3)
WRITERS = 16


def test_a_full_map_refuses_writes_cleanly_and_a_bigger_one_recovers(tmp_path: Path) -> None:
    small = (*FAST_TIMEOUTS, "--map-size", "32MiB")
    with running_cluster(tmp_path, extra_args=small) as cluster:
        # 16 writers at once, each until refused: every write stores its value
        # twice (log and data), so 32 MiB fill after about 60. Many writes are in
        # flight when the space runs out; each must be applied or refused, and
        # no node may run out of map space while applying what it accepted.
        acked: dict[str, bytes] = {}
        refused: list[NoSpace] = []
        other: list[KVError] = []
        lock = threading.Lock()

        def write(w: int) -> None:
            with Client(cluster.endpoints[w % 3 :] + cluster.endpoints[: w % 3]) as client:
                for i in range(100):
                    key = f"full/{w:02d}/{i:03d}"
                    try:
                        client.put(key, VALUE)
                    except NoSpace as exc:
                        with lock:
                            refused.append(exc)
                        return
                    except KVError as exc:
                        with lock:
                            other.append(exc)
                        return
                    with lock:
                        acked[key] = VALUE

        threads = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not any(t.is_alive() for t in threads)
        cluster.check_running(NODES)  # first: a crash explains the rest
        assert not other, other[:3]
        assert len(refused) == WRITERS and 20 < len(acked) < 120, len(acked)
        message = refused[0].message.lower()
        assert "no space" in message and "map" in message, message

        # The writers were refused while their writes in flight still held
        # space in reserve; once those are applied, one writer goes on until
        # refused with nothing in flight: the map itself is full then.
        cluster.wait_converged()
        with cluster.client(timeout=10.0) as client:
            for i in range(40):
                try:
                    client.put(f"full/last/{i:02d}", VALUE)
                except NoSpace:
                    break
                acked[f"full/last/{i:02d}"] = VALUE
            else:
                pytest.fail("40 more writes of 256 KiB fitted in a 32 MiB map")
        # Refused again, at once, for a write of any size; nothing was applied.
        with cluster.client(timeout=10.0) as client, pytest.raises(NoSpace):
            client.put("full/small", "s")
        cluster.check_running(NODES)
        for n in NODES:
            with cluster.node_client(n, timeout=10.0) as c:
                assert c.get("full/small") is None
                kvs = c.range("full/").kvs  # linearizable reads keep working
                assert sorted(kv.key.decode() for kv in kvs) == sorted(acked)
                assert all(kv.value == VALUE for kv in kvs)
                assert cluster.status(n).db_size_bytes <= 32 << 20
        assert cluster.stop() == {1: 0, 2: 0, 3: 0}  # a clean shutdown, even when full

        cluster.extra_args = [*FAST_TIMEOUTS, "--map-size", "128MiB"]
        cluster.start()
        cluster.wait_for_leader()
        with cluster.client(timeout=10.0) as client:
            assert sorted(kv.key.decode() for kv in client.range("full/").kvs) == sorted(acked)
            for i in range(10):
                client.put(f"more/{i}", VALUE)
            assert len(client.range("more/").kvs) == 10
        cluster.wait_converged(timeout=30)
