"""The environment: safe durability flags, key limit, map size on reopen."""

from __future__ import annotations

from pathlib import Path

from kvstore.storage import MAX_KEY_SIZE, Put, Storage


def test_durability_flags_are_lmdb_safe_defaults(storage: Storage) -> None:
    flags = storage.env._env.flags()
    assert flags["sync"] and flags["metasync"]
    assert not flags["writemap"] and not flags["map_async"]


def test_lmdb_key_limit_is_the_api_limit(storage: Storage) -> None:
    assert storage.env.max_key_size == MAX_KEY_SIZE == 511


def test_reopen_with_a_smaller_map_keeps_the_data(data_dir: Path) -> None:
    with Storage(data_dir, map_size=8 << 20) as s:
        s.data.apply([(i, Put(b"k%d" % i, b"v" * 1000)) for i in range(1, 1001)])
        used = s.used_bytes()
    with Storage(data_dir, map_size=64 << 10) as s:  # LMDB grows it to the file size
        assert s.map_size >= used
        assert s.data.applied_index() == 1000
        assert len(s.data.range().kvs) == 1000
