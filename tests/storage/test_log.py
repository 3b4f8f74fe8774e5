"""Log store: round trips, suffix truncation, compaction, bounds, restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.storage import LogError, Storage
from raftcore.types import Entry, EntryType

from .conftest import MAP_SIZE


def entries(term: int, n: int, tag: bytes = b"e") -> list[Entry]:
    return [Entry(term, EntryType.COMMAND, tag + b"%d" % i) for i in range(n)]


def test_empty_log_starts_at_one(storage: Storage) -> None:
    assert storage.log.first_index() == 1
    assert storage.log.last_index() == 0
    assert storage.log.entries(1) == []
    assert storage.log.get(1) is None


def test_round_trip_keeps_term_type_and_data(storage: Storage) -> None:
    written = [
        Entry(1, EntryType.CHANGE, b"conf"),
        Entry(1, EntryType.BARRIER, b""),
        Entry(2, EntryType.COMMAND, bytes(range(256)) * 40),  # binary, multi-page
    ]
    assert storage.log.append(1, written) == 3
    assert storage.log.entries(1) == written
    assert storage.log.entries(2, 2) == [written[1]]
    assert storage.log.get(3) == written[2]
    assert storage.log.term_at(3) == 2
    assert storage.log.term_at(4) is None
    assert (storage.log.first_index(), storage.log.last_index()) == (1, 3)


def test_append_replaces_conflicting_suffix(storage: Storage) -> None:
    storage.log.append(1, entries(1, 10, b"old"))
    new = entries(2, 3, b"new")
    assert storage.log.append(5, new) == 7
    got = storage.log.entries(1)
    assert len(got) == 7
    assert got[:4] == entries(1, 10, b"old")[:4]
    assert got[4:] == new
    assert storage.log.get(8) is None


def test_truncate_only(storage: Storage) -> None:
    storage.log.append(1, entries(1, 5))
    assert storage.log.append(3, []) == 2
    assert storage.log.last_index() == 2


def test_append_refuses_a_gap_and_writes_nothing(storage: Storage) -> None:
    storage.log.append(1, entries(1, 3))
    with pytest.raises(LogError, match="between 1 and 4"):
        storage.log.append(6, entries(1, 2))
    assert storage.log.last_index() == 3


def test_compaction_deletes_entries_before_the_point(storage: Storage) -> None:
    storage.log.append(1, entries(1, 10))
    storage.log.compact(6)
    assert storage.log.first_index() == 6
    assert storage.log.last_index() == 10
    assert storage.log.get(5) is None
    assert storage.log.entries(6) == entries(1, 10)[5:]
    storage.log.compact(3)  # already compacted: no-op
    assert storage.log.first_index() == 6
    with pytest.raises(LogError):
        storage.log.append(4, entries(1, 1))  # would rewrite compacted entries


def test_compaction_past_the_end_empties_and_moves_the_start(storage: Storage) -> None:
    storage.log.append(1, entries(1, 5))
    storage.log.compact(21)  # e.g. a snapshot at 20 with no trailing entries
    assert storage.log.entries(1) == []
    assert (storage.log.first_index(), storage.log.last_index()) == (21, 20)
    assert storage.log.append(21, entries(3, 2)) == 22
    assert storage.log.first_index() == 21


def test_iter_batches_splits_by_size(storage: Storage) -> None:
    big = [Entry(1, EntryType.COMMAND, b"x" * 1000) for _ in range(50)]
    storage.log.append(1, big)
    batches = list(storage.log.iter_batches(max_bytes=10_000))
    assert len(batches) > 1
    assert batches[0][0] == 1
    flat = [e for _, batch in batches for e in batch]
    assert flat == big
    starts = [start for start, _ in batches]
    assert starts == sorted(starts)
    assert all(s + len(b) == nxt for (s, b), nxt in zip(batches, starts[1:], strict=False))


def test_log_survives_restart(data_dir: Path) -> None:
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        s.log.append(1, entries(1, 10))
        s.log.append(8, entries(2, 5))
        s.log.compact(3)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        assert (s.log.first_index(), s.log.last_index()) == (3, 12)
        assert s.log.entries(3, 7) == entries(1, 10)[2:7]
        assert s.log.entries(8) == entries(2, 5)
