"""Exceptions of the storage layer.

They are the project's own types, not lmdb's, so that the API layer can map
them to gRPC status codes (NoSpace -> RESOURCE_EXHAUSTED, InvalidArgument ->
INVALID_ARGUMENT) without knowing which library sits underneath.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error this package raises on purpose."""


class NoSpace(StorageError):
    """The LMDB map is full: the write was aborted, nothing of it was written.

    Reads keep working. Raising the map size (reopening the environment with a
    larger ``map_size``) recovers; there is nothing to repair.
    """

    def __init__(self, map_size: int, used_bytes: int) -> None:
        self.map_size = map_size
        self.used_bytes = used_bytes
        super().__init__(
            f"no space: the LMDB map is full (map size {map_size} bytes = "
            f"{_human(map_size)}, {used_bytes} bytes in use); the write was not applied. "
            "Reads still work; restart with a larger map size to accept writes again"
        )


class InvalidArgument(StorageError, ValueError):
    """A request that can never succeed as given (a key too long, bad options)."""


class LogError(StorageError):
    """A log write that would leave a gap or rewrite compacted entries."""


class CorruptSnapshot(StorageError):
    """A snapshot stream that is truncated, damaged or of an unknown format."""


class SnapshotMismatch(StorageError):
    """A snapshot stream that does not cover the snapshot metadata it came with."""


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")
