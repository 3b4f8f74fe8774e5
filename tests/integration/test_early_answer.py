"""A leader answers a write once its result exists, not after the data's sync
(kvstore.node.apply.apply_work); a linearizable read still sees it.

A one-member cluster runs on a slow disk (the chaos tests' LD_PRELOAD shim
delays every fdatasync by DELAY_MS). A lone write then waits for its log
transaction, which commits it: two slowed syncs (the data pages, then the
meta page: kvstore.storage.env). Applying it takes another transaction and
one more slowed sync (the apply's meta page is not flushed), which the
answer must not wait for.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from kvstore.devcluster import Member
from tests.chaos import slowdisk
from tests.integration.cluster import Cluster, running_cluster

DELAY_MS = 1000


class SlowDiskCluster(Cluster):
    shim: Path

    def child_env(self, member: Member) -> dict[str, str]:
        env = super().child_env(member)
        env["LD_PRELOAD"] = str(self.shim)
        env[slowdisk.DELAY_ENV] = str(self.delay_file)
        return env

    @property
    def delay_file(self) -> Path:
        return self.root / "disk-delay"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowDiskCluster]:
    base = Path(tmp_path_factory.mktemp("early"))
    shim = slowdisk.build_shim(base / "shim")

    def factory(root: Path, size: int, extra_args: Sequence[str]) -> SlowDiskCluster:
        made = SlowDiskCluster(root, size, extra_args)
        made.shim = shim
        return made

    with running_cluster(base, 1, factory=factory) as cluster:
        yield cluster


def test_a_write_is_answered_after_the_log_sync_not_the_data_sync(
    cluster: SlowDiskCluster,
) -> None:
    with cluster.node_client(1, timeout=30) as client:
        client.put(b"warm", b"up")
        slowdisk.set_delay(cluster.delay_file, DELAY_MS)
        try:
            started = time.monotonic()
            client.put(b"key", b"value")
            took = time.monotonic() - started
            # Waiting for the apply's sync too would take at least 3 * DELAY_MS.
            assert 2 * DELAY_MS / 1000 <= took < 2.6 * DELAY_MS / 1000, took
            # The read waits until the data is committed, and sees the write.
            assert client.get(b"key").value == b"value"
        finally:
            slowdisk.set_delay(cluster.delay_file, 0)
