"""A full map: NoSpace naming the map size, nothing half-written, reads work,
reopening with a larger map recovers."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.storage import NoSpace, Persist, Put, Storage
from kvstore.storage.groupcommit import GroupCommitter
from raftcore.types import Entry, EntryType

TINY = 1 << 20  # 1 MiB


def batch(first: int, n: int, size: int = 2000) -> list[tuple[int, Put]]:
    return [(i, Put(b"key%06d" % i, b"v" * size)) for i in range(first, first + n)]


def test_full_map_raises_nospace_and_keeps_state(data_dir: Path) -> None:
    s = Storage(data_dir, map_size=TINY)
    index = 0
    with pytest.raises(NoSpace) as info:
        while index < 10_000:
            s.data.apply(batch(index + 1, 50))
            index += 50
    err = info.value
    assert "map is full" in str(err) and "1048576 bytes" in str(err)
    assert err.map_size == TINY
    # The failed batch left nothing: the applied index is the last good batch's.
    assert s.data.applied_index() == index
    assert s.data.get(b"key%06d" % (index + 1)) is None
    # Reads work on the full map.
    assert len(s.data.range().kvs) == index
    kv = s.data.get(b"key%06d" % index)
    assert kv is not None and kv.value == b"v" * 2000
    # So does the log's read side; writes keep failing cleanly.
    with pytest.raises(NoSpace):
        s.log.append(1, [Entry(1, EntryType.COMMAND, b"x" * 4000)] * 100)
    assert s.log.last_index() == 0
    s.close()

    # Reopen with a bigger map: the same batch now goes in.
    with Storage(data_dir, map_size=8 * TINY) as s:
        assert s.map_size == 8 * TINY
        assert s.data.applied_index() == index
        s.data.apply(batch(index + 1, 50))
        assert s.data.applied_index() == index + 50
        assert len(s.data.range().kvs) == index + 50


def test_size_figures(data_dir: Path) -> None:
    with Storage(data_dir, map_size=TINY) as s:
        used0 = s.used_bytes()
        s.data.apply(batch(1, 100))
        assert s.used_bytes() > used0 + 100 * 2000
        assert s.free_bytes() == s.map_size - s.used_bytes()
        assert s.db_size_bytes() >= s.used_bytes() - s.env.page_size
        assert s.map_size == TINY


def test_group_commit_isolates_a_request_that_does_not_fit(data_dir: Path) -> None:
    with Storage(data_dir, map_size=TINY) as s:
        gc = GroupCommitter(s)
        outcomes: dict[str, object] = {}

        def record(name: str):  # type: ignore[no-untyped-def]
            return lambda result, exc: outcomes.__setitem__(name, exc or result)

        big = [Entry(1, EntryType.COMMAND, b"x" * 8000)] * 200  # 1.6 MB: cannot fit
        gc.submit_persist(Persist(entries_index=1, entries=big), record("big"))
        gc.submit_persist(Persist(term=4, voted_for=2), record("vote"))
        gc.start()
        gc.close(timeout=10)
        assert isinstance(outcomes["big"], NoSpace)
        assert outcomes["vote"] == 0  # committed; the log is still empty
        assert (s.stable.current_term(), s.stable.voted_for()) == (4, 2)
        assert s.log.last_index() == 0
        assert gc.stats.failed_transactions >= 2
