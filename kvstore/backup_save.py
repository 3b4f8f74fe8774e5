"""Saving a ``Cluster.Snapshot`` stream into a backup file (``kvctl snapshot save``).

The endpoints are tried in turn until one starts the stream (its first
message, after the member's read barrier); a failure after that is final,
because another member's stream would be another backup, and the partial
file is removed. The file is written by kvstore.backup_file.BackupWriter:
atomically, one chunk in memory at a time, and only once the bytes received
match the size and SHA-256 of the member's trailer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from kvstore.backup_file import BackupError, BackupHeader, BackupWriter
from kvstore.client_errors import KVError, classify, error_for, short_reason
from kvstore.v1 import kv_pb2, kv_pb2_grpc

#: Called with (bytes received so far, the member's size estimate) after each chunk.
ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class SavedBackup:
    path: str
    endpoint: str  # the member that took it
    header: BackupHeader


def save_snapshot(
    stubs: Sequence[tuple[str, kv_pb2_grpc.ClusterStub]],
    path: str | os.PathLike[str],
    *,
    timeout: float,
    progress: ProgressCallback | None = None,
) -> SavedBackup:
    """Stream a backup from the first endpoint of ``stubs`` that serves one into ``path``.

    ``timeout`` bounds the whole transfer. Raises KVError (no member could
    take the backup, or the stream failed) or BackupError (damaged in
    transit); ``path`` is then unchanged.
    """
    deadline = time.monotonic() + timeout
    failures: list[tuple[str, str]] = []
    last: KVError | None = None
    for endpoint, stub in stubs:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            failures.append((endpoint, f"not tried: {timeout:g} s were used up"))
            break
        call: Any = stub.Snapshot(kv_pb2.SnapshotRequest(), timeout=remaining)
        try:
            first = next(call)
        except StopIteration:
            failures.append((endpoint, "the stream ended at once"))
            continue
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            failures.append((endpoint, short_reason(code, details)))
            last = error_for(code, details, endpoint=endpoint, failures=tuple(failures))
            if classify(code, details)[0]:
                continue
            raise last from None
        try:
            return SavedBackup(str(path), endpoint, _receive(call, first, path, progress))
        except grpc.RpcError as err:
            code, details = err.code(), err.details() or ""
            failures.append((endpoint, short_reason(code, details)))
            raise error_for(
                code,
                f"the backup stream from {endpoint} failed: {details or code.name}",
                endpoint=endpoint,
                failures=tuple(failures),
            ) from None
        finally:
            call.cancel()
    summary = ", ".join(f"{ep} ({reason})" for ep, reason in failures)
    if last is not None:
        raise type(last)(
            f"no member could take a backup: {summary}",
            code=last.code,
            endpoint=last.endpoint,
            failures=tuple(failures),
        )
    raise KVError(f"no member could take a backup: {summary}", failures=tuple(failures))


def _receive(
    call: Any,
    first: kv_pb2.SnapshotResponse,
    path: str | os.PathLike[str],
    progress: ProgressCallback | None,
) -> BackupHeader:
    if not first.HasField("info"):
        raise BackupError("the member's backup stream does not start with its info")
    info = first.info
    header = BackupHeader(
        applied_index=info.applied_index,
        revision=info.revision,
        key_count=info.key_count,
        raft_term=info.raft_term,
        cluster_id=info.cluster_id,
        member_id=info.member_id,
    )
    with BackupWriter(path, header) as writer:
        for response in call:
            if response.HasField("trailer"):
                return writer.commit(response.trailer.size, response.trailer.sha256)
            writer.write(response.data)
            if progress is not None:
                progress(writer.size, info.size_estimate)
    raise BackupError(
        f"the backup stream ended after {writer.size} bytes without its trailer: incomplete"
    )
