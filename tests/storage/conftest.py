"""Fixtures: a real LMDB environment in a fresh temporary directory per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.storage import Storage

#: Small enough that a test's environments cost nothing, large enough for every test
#: but the map-full ones.
MAP_SIZE = 64 << 20


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "node"


@pytest.fixture
def storage(data_dir: Path) -> Iterator[Storage]:
    s = Storage(data_dir, map_size=MAP_SIZE)
    yield s
    s.close()
