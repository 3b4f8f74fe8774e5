"""The client across a leader crash, on a cluster of its own (the test kills nodes)."""

from __future__ import annotations

import time
from pathlib import Path

from kvstore.client import Client, RequestId
from tests.integration.cluster import running_cluster


def test_client_survives_the_leader_crash(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster:
        old_leader = cluster.wait_for_leader()
        rid = RequestId(client_id=0xFA11_0000_0001, sequence=1)
        with cluster.client(timeout=15.0) as client:
            acknowledged = {f"fo/{i}": str(i) for i in range(20)}
            for key, value in acknowledged.items():
                client.put(key, value)
            first = client.put("fo/once", "v", request_id=rid)

            assert cluster.kill_node(old_leader) == -9
            start = time.monotonic()
            client.put("fo/after", "new leader")  # fails over, waits out the election
            assert time.monotonic() - start < 15.0
            new_leader = cluster.wait_for_leader(among=cluster.running_ids())
            assert new_leader != old_leader

            # No acknowledged write lost; the old request id still answers with its result.
            assert {kv.key.decode(): kv.value.decode() for kv in client.range("fo/").kvs} == {
                **acknowledged, "fo/after": "new leader", "fo/once": "v",
            }  # fmt: skip
            again = client.put("fo/once", "v", request_id=rid)
            assert again.header.revision == first.header.revision

            cluster.start_node(old_leader)  # restarts on its data directory and catches up
            with Client([cluster.nodes[old_leader].client_addr], timeout=15.0) as restarted:
                kv = restarted.get("fo/after")
                assert kv is not None and kv.value == b"new leader"

        # DESIGN 3.2: SIGTERM is a clean shutdown with exit code 0.
        codes = cluster.stop()
        assert codes == {1: 0, 2: 0, 3: 0}, cluster.logs()
