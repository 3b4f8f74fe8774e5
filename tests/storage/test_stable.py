"""Stable store: term, vote, snapshot metadata; persist requests; load after restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.storage import InvalidArgument, Persist, Put, Storage
from raftcore.configuration import Configuration, Server
from raftcore.types import Entry, EntryType, Role, SnapshotMetadata

from .conftest import MAP_SIZE

CONF = Configuration(
    [
        Server(1, "kv-0:7000", Role.VOTER),
        Server(2, "kv-1:7000", Role.VOTER),
        Server(3, "kv-2:7000", Role.STANDBY),
    ]
)


def test_term_and_vote_default_to_zero(storage: Storage) -> None:
    assert storage.stable.current_term() == 0
    assert storage.stable.voted_for() == 0
    assert storage.stable.snapshot_metadata() is None


def test_term_and_vote_are_durable_across_restart(data_dir: Path) -> None:
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        s.stable.set_term_vote(7, 3)
        s.stable.set_term(8)  # a new term, vote not yet cast
        s.stable.set_voted_for(0)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        hs = s.stable.hard_state()
        assert (hs.term, hs.voted_for) == (8, 0)


def test_snapshot_metadata_round_trip(data_dir: Path) -> None:
    meta = SnapshotMetadata(index=120, term=4, configuration=CONF, configuration_index=17)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        s.stable.set_snapshot(meta)
        assert s.stable.snapshot_metadata() == meta
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        got = s.stable.snapshot_metadata()
        assert got == meta
        assert got is not None and got.configuration.get(3) == Server(3, "kv-2:7000", Role.STANDBY)


def test_persist_writes_term_vote_and_entries_together(storage: Storage) -> None:
    e = [Entry(5, EntryType.COMMAND, b"a"), Entry(5, EntryType.COMMAND, b"b")]
    assert storage.persist(Persist(term=5, voted_for=2, entries_index=1, entries=e)) == 2
    assert storage.persist(Persist(term=6)) == 2
    state = storage.load()
    assert (state.term, state.voted_for, state.start_index, state.last_index) == (6, 2, 1, 2)
    with pytest.raises(InvalidArgument):
        storage.persist(Persist(entries=e))


def test_take_snapshot_records_metadata_and_keeps_trailing(storage: Storage) -> None:
    storage.log.append(1, [Entry(1, EntryType.COMMAND, b"%d" % i) for i in range(20)])
    storage.data.apply([(i, Put(b"k", b"%d" % i)) for i in range(1, 16)])
    meta = SnapshotMetadata(15, 1, CONF, 1)
    storage.take_snapshot(meta, trailing=5)
    assert storage.stable.snapshot_metadata() == meta
    assert (storage.log.first_index(), storage.log.last_index()) == (11, 20)
    with pytest.raises(InvalidArgument, match="past the applied index"):
        storage.take_snapshot(SnapshotMetadata(18, 1, CONF, 1), trailing=0)


def test_load_after_restart_resumes_everything(data_dir: Path) -> None:
    meta = SnapshotMetadata(3, 1, CONF, 1)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        s.persist(
            Persist(
                term=3,
                voted_for=1,
                entries_index=1,
                entries=[Entry(1, EntryType.COMMAND, b"%d" % i) for i in range(6)],
            )
        )
        s.data.apply([(1, Put(b"a", b"1")), (2, Put(b"b", b"2"))], last_index=4)
        s.take_snapshot(meta, trailing=1)
    with Storage(data_dir, map_size=MAP_SIZE) as s:
        st = s.load()
        assert st.term == 3 and st.voted_for == 1
        assert st.snapshot == meta
        assert (st.start_index, st.last_index) == (3, 6)
        assert (st.applied_index, st.revision) == (4, 2)
        assert s.data.get(b"b") is not None
