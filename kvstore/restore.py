"""``kvstore restore``: seed one member of a new cluster from a backup file
(etcdutl's ``snapshot restore``).

Run it once per member, each with its own ``--id`` and ``--data-dir`` and
all with the same backup and ``--initial-cluster``; then start each member
with ``kvstore serve`` and the same ``--id``, ``--data-dir`` and
``--initial-cluster``. The data directory then holds:

- the backup's data, loaded by the snapshot installer of
  kvstore.storage.snapshot (the one that installs a leader's snapshot on a
  follower): keys with their create/mod revisions and versions, the store
  revision, and the applied index of the member that took the backup;
- a Raft snapshot at that applied index A, term 1, whose configuration is
  ``--initial-cluster``, all voters, and an empty log starting at A + 1;
  term 1 and vote none, as a freshly bootstrapped member. Everything derives
  from the file and the flags, so every member restored from one file with
  one ``--initial-cluster`` starts from an identical state, and the log
  continues at A + 1 so revisions and applied indexes keep growing;
- the ``cluster_id`` file, written as ``kvstore serve`` writes it for a new
  cluster (derived from ``--initial-cluster``): members restored with the
  same list belong together, and members of another list refuse them.

Exactly-once sessions are kept (they are in the backup). A client that
retries, against the restored cluster, a write whose outcome it did not learn
gets the original answer if the write is in the backup, and has it applied
otherwise: neither a lost nor a doubled write, relative to the backup.

Refused, with nothing created: a non-empty data directory (a freshly
formatted volume's ``lost+found`` is allowed), an ``--id`` outside
``--initial-cluster``, and a truncated, damaged or unknown file. The whole
backup is checked (header, size, SHA-256, then the stream's own checksum and
record counts) while it is loaded into a staging directory inside the data
directory; only a complete environment is moved into place, by a rename.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvstore.backup_file import BackupError, BackupHeader, fsync_dir, iter_data, read_header
from kvstore.join import write_cluster_id
from kvstore.node import cluster_id_of, parse_initial_cluster
from kvstore.storage import DEFAULT_MAP_SIZE, Storage, StorageError
from raftcore import Configuration, Role, Server, SnapshotMetadata

DESCRIPTION = (
    "Create one member's data directory from a backup saved by `kvctl snapshot save`. "
    "Run it for every member of the new cluster with the same FILE and --initial-cluster, "
    "then start each with `kvstore serve` and the same --id, --data-dir and --initial-cluster."
)
#: The term of a restored member's snapshot and its starting term, as a new cluster's.
RESTORED_TERM = 1
#: Entries a data directory may hold and still count as empty.
IGNORED_ENTRIES = frozenset({"lost+found"})
_STAGING_PREFIX = ".restore-"


class RestoreError(Exception):
    """The restore was refused or failed; nothing was left in the data directory."""


def restore(
    backup: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    member_id: int,
    initial_cluster: dict[int, str],
    *,
    map_size: int = DEFAULT_MAP_SIZE,
) -> BackupHeader:
    """Create member ``member_id``'s data directory from ``backup`` (see module doc)."""
    data_dir = Path(data_dir)
    if member_id not in initial_cluster:
        raise RestoreError(f"--id {member_id} is not in --initial-cluster")
    _check_empty(data_dir)
    header = read_header(backup)
    if header.applied_index == 0:
        raise RestoreError(f"{backup} holds no applied log index: not a member's backup")
    created = not data_dir.exists()
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=data_dir))
    try:
        _build(backup, staging, header, initial_cluster, map_size)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            data_dir.rmdir()
        raise
    os.replace(staging / "data.mdb", data_dir / "data.mdb")  # the commit point
    shutil.rmtree(staging, ignore_errors=True)
    write_cluster_id(data_dir, cluster_id_of(initial_cluster))
    fsync_dir(data_dir)
    return header


def _check_empty(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise RestoreError(f"--data-dir {data_dir} exists and is not a directory")
    found = sorted(name for name in os.listdir(data_dir) if name not in IGNORED_ENTRIES)
    leftovers = [name for name in found if name.startswith(_STAGING_PREFIX)]
    for name in leftovers:  # our own staging directory, left by a crash: never used
        shutil.rmtree(data_dir / name, ignore_errors=True)
    found = [name for name in found if name not in leftovers]
    if found:
        shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
        raise RestoreError(
            f"--data-dir {data_dir} is not empty ({shown}); restore only into a new "
            f"or empty directory, never over a member's data"
        )


def _build(
    backup: str | os.PathLike[str],
    staging: Path,
    header: BackupHeader,
    initial_cluster: dict[int, str],
    map_size: int,
) -> None:
    """A complete environment in ``staging``: the data, the Raft snapshot, term and vote."""
    conf = Configuration(
        Server(i, address, Role.VOTER) for i, address in sorted(initial_cluster.items())
    )
    metadata = SnapshotMetadata(header.applied_index, RESTORED_TERM, conf, header.applied_index)
    with Storage(staging, map_size=map_size) as storage:
        storage.stable.set_term_vote(RESTORED_TERM, 0)
        installer = storage.snapshot_installer()
        try:
            for chunk in iter_data(backup):  # raises BackupError after a checksum mismatch
                installer.feed(chunk)
        except BaseException:
            installer.abort()
            raise
        try:
            info = installer.finish(metadata)
        except StorageError as exc:
            raise RestoreError(f"{backup} cannot be loaded: {exc}") from None
        if (info.revision, info.kv_count) != (header.revision, header.key_count):
            raise RestoreError(
                f"{backup} is damaged: its data holds {info.kv_count} keys at revision "
                f"{info.revision}, its header says {header.key_count} at {header.revision}"
            )


# -- command line -----------------------------------------------------------------


def add_arguments(
    parser: argparse.ArgumentParser, env: Callable[[str, str | None], str | None]
) -> None:
    """The flags of ``kvstore restore``; ``env(name, default)`` reads KVSTORE_* as serve does."""
    parser.add_argument("file", metavar="FILE", help="a backup saved by `kvctl snapshot save`")

    def flag(name: str, help: str, default: str | None = None, **kw: Any) -> None:
        variable = "KVSTORE_" + name.upper().replace("-", "_")
        parser.add_argument(
            "--" + name, default=env(name, default), help=f"{help} (env {variable})", **kw
        )

    flag("id", "the member's id, as it will be given to `kvstore serve`", type=int)
    flag("data-dir", "the member's new data directory (must not exist or be empty)")
    flag("initial-cluster", "ID=PEER_ADDR,... of every member of the new cluster", "")
    flag("map-size", "LMDB map size (the largest the database may grow)", str(DEFAULT_MAP_SIZE))


def main(args: argparse.Namespace, parse_size: Callable[[str], int]) -> int:
    """Run ``kvstore restore``: 0 restored, 2 bad flags, 1 refused or failed."""
    try:
        if args.id is None or not args.data_dir or not args.initial_cluster:
            raise ValueError("--id, --data-dir and --initial-cluster are required")
        initial_cluster = parse_initial_cluster(args.initial_cluster)
        try:
            map_size = parse_size(str(args.map_size))
        except ValueError:
            raise ValueError(
                f"--map-size {args.map_size!r} is not a size (8GiB, 512MiB or bytes)"
            ) from None
    except ValueError as exc:
        print(f"kvstore restore: {exc}", file=sys.stderr)
        return 2
    try:
        header = restore(args.file, args.data_dir, int(args.id), initial_cluster, map_size=map_size)
    except (RestoreError, BackupError, StorageError, OSError) as exc:
        print(f"kvstore restore: {exc}", file=sys.stderr)
        return 1
    print(
        f"restored member {args.id} into {args.data_dir}: {header.key_count} keys, "
        f"revision {header.revision}, applied index {header.applied_index}, "
        f"{len(initial_cluster)} members; start it with `kvstore serve --id {args.id} "
        f"--data-dir {args.data_dir} --initial-cluster {args.initial_cluster}`"
    )
    return 0
