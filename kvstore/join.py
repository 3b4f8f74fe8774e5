"""``kvstore serve --join ENDPOINTS``: a new member asks a running cluster to add it.

The steps, and why in this order:

1. Before the node starts, learn the cluster id from the endpoints (every
   response header carries it) and store it beside the data, where a
   bootstrapped member keeps its own: peers refuse frames of another cluster,
   so the new member must speak with the cluster's id from its first message.
2. The node starts with an empty configuration (there is no
   ``--initial-cluster`` to bootstrap from): it does not campaign, and it
   accepts the leader's messages although it knows no member yet
   (``Node.accepts_from`` refuses only removed members).
3. MemberAdd(id, peer address) on the endpoints, any of which forwards it to
   the leader: the leader adds the member as a stand-by and starts sending it
   the log at once, catches it up in CATCH_UP rounds, and promotes it. The
   call returns when the member is a voter.

MemberAdd is idempotent, so every failure that may pass (no leader yet, an
endpoint down, a catch-up that timed out or was aborted while the new member
was still loading a snapshot) is retried, on the next endpoint, until
``--join-timeout``. A restart with the same flags (a Kubernetes pod) skips
the join when the member already votes and resumes it otherwise. Everything
here is asyncio, so SIGTERM cancels a join in progress at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc

from kvstore.client import CHANNEL_OPTIONS
from kvstore.client_errors import short_reason
from kvstore.v1 import kv_pb2, kv_pb2_grpc

log = logging.getLogger("kvstore.join")

_BACKOFF_INITIAL = 0.2
_BACKOFF_MAX = 2.0
_PROBE_TIMEOUT = 2.0
#: Codes that no retry can change: the request itself is wrong for this cluster.
_FINAL = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)


class JoinError(Exception):
    """Joining failed for good; the message says why and what to do."""


def parse_endpoints(text: str) -> list[str]:
    return [e.strip() for e in text.split(",") if e.strip()]


def write_cluster_id(data_dir: Path, cluster_id: int) -> None:
    """Store the cluster id durably (temporary file, fsync, rename)."""
    path = data_dir / "cluster_id"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{cluster_id}\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    tmp.replace(path)


def _reason(exc: grpc.aio.AioRpcError) -> str:
    """The status and, for connection failures, what they mean (TLS refusals among them)."""
    return f"{exc.code().name}: {short_reason(exc.code(), exc.details() or '')}"


def _channel(endpoint: str, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    """TLS when the cluster's client port uses it (see ``join_credentials`` in cli.server)."""
    if credentials is None:
        return grpc.aio.insecure_channel(endpoint, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(endpoint, credentials, options=CHANNEL_OPTIONS)


async def fetch_cluster_id(
    endpoints: Sequence[str],
    timeout: float,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> int:
    """The cluster id in the first response header from ``endpoints``."""
    response = await fetch_member_list(endpoints, timeout, credentials=credentials)
    return int(response.header.cluster_id)


class _Attempts:
    """Rounds over the endpoints until a deadline, with backoff between rounds,
    remembering why each endpoint failed last."""

    def __init__(self, timeout: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._deadline = self._loop.time() + timeout
        self._backoff = _BACKOFF_INITIAL
        self.failures: dict[str, str] = {}

    def remaining(self) -> float:
        return self._deadline - self._loop.time()

    async def next_round(self, give_up: Callable[[str], str]) -> None:
        """Wait for the next round, or raise JoinError(give_up(summary of failures))."""
        if self.remaining() <= 0:
            summary = "; ".join(f"{e}: {r}" for e, r in self.failures.items()) or "no attempt"
            raise JoinError(give_up(summary))
        await asyncio.sleep(min(self._backoff, max(self.remaining(), 0)))
        self._backoff = min(self._backoff * 2, _BACKOFF_MAX)


async def fetch_member_list(
    endpoints: Sequence[str],
    timeout: float,
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> kv_pb2.MemberListResponse:
    """The first serializable MemberList that one of ``endpoints`` answers with a cluster id.

    A serializable MemberList is answered by any member, with or without a
    leader, so a cluster that is electing one still tells its id (and a
    Kubernetes pod learns whether the configuration holds it: kvstore.k8s).
    """
    attempts = _Attempts(timeout)
    request = kv_pb2.MemberListRequest(consistency=kv_pb2.SERIALIZABLE)
    while True:
        for endpoint in endpoints:
            remaining = attempts.remaining()
            if remaining <= 0:
                break
            async with _channel(endpoint, credentials) as channel:
                stub = kv_pb2_grpc.ClusterStub(channel)
                try:
                    response = await stub.MemberList(
                        request, timeout=min(_PROBE_TIMEOUT, remaining)
                    )
                except grpc.aio.AioRpcError as exc:
                    attempts.failures[endpoint] = _reason(exc)
                    continue
            if response.header.cluster_id:
                return response
            attempts.failures[endpoint] = "answered without a cluster id"
        await attempts.next_round(
            lambda summary: (
                f"cannot learn the cluster id from --join {','.join(endpoints)} "
                f"within {timeout:g} s ({summary})"
            )
        )


async def join(
    member_id: int,
    peer_address: str,
    cluster_id: int,
    endpoints: Sequence[str],
    timeout: float,
    is_voter: Callable[[], bool],
    *,
    credentials: grpc.ChannelCredentials | None = None,
) -> None:
    """Ask the cluster to add this member; return once it is a voter (or raise JoinError)."""
    attempts = _Attempts(timeout)
    request = kv_pb2.MemberAddRequest(id=member_id, peer_address=peer_address)
    while True:
        if is_voter():
            log.info("member %d is a voter already: nothing to join", member_id)
            return
        for endpoint in endpoints:
            remaining = attempts.remaining()
            if remaining <= 0:
                break
            log.info("asking %s to add member %d (%s)", endpoint, member_id, peer_address)
            async with _channel(endpoint, credentials) as channel:
                stub = kv_pb2_grpc.ClusterStub(channel)
                try:
                    response = await stub.MemberAdd(request, timeout=remaining)
                except grpc.aio.AioRpcError as exc:
                    reason = _reason(exc)
                    if exc.code() in _FINAL:
                        raise JoinError(
                            f"{endpoint} refused to add member {member_id} at {peer_address}: "
                            f"{reason}"
                        ) from None
                    attempts.failures[endpoint] = reason
                    log.warning("joining through %s failed: %s; trying again", endpoint, reason)
                    continue
            if response.header.cluster_id != cluster_id:
                raise JoinError(
                    f"{endpoint} belongs to cluster {response.header.cluster_id}, "
                    f"but this member's data directory is for cluster {cluster_id}"
                )
            roles = {m.id: kv_pb2.MemberRole.Name(m.role) for m in response.members}
            log.info("member %d joined the cluster as a voter: members %s", member_id, roles)
            return
        await attempts.next_round(
            lambda summary: (
                f"member {member_id} was not added within --join-timeout "
                f"{timeout:g} s ({summary}); MemberAdd is idempotent: restarting retries it"
            )
        )
