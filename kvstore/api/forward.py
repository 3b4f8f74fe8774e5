"""Forwarding client requests from a follower to the leader.

Any member may receive a request (clients reach pods through a Service); a
follower passes writes and linearizable reads to the leader over the peer
port (membership changes as well: they run on the leader too). All
requests from one follower to one leader share a single long-lived
bidirectional stream (``Peer.Forward``), multiplexed by request id, so a
forwarded request costs one stream message each way rather than a new call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from kvstore.api.executor import READS, REQUEST_TYPES, Executor, RequestError
from kvstore.node import NotLeaderError
from kvstore.raft.v1 import peer_pb2, peer_pb2_grpc
from kvstore.transport.dialer import PeerDialer

log = logging.getLogger("kvstore.forward")

CLUSTER_ID_KEY = "kvstore-cluster-id"
FROM_ID_KEY = "kvstore-from-id"
MAX_MESSAGE_BYTES = 64 << 20
_CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
]


class _Link:
    """One Forward stream to one leader address."""

    def __init__(
        self, address: str, metadata: tuple[tuple[str, str], ...], dialer: PeerDialer
    ) -> None:
        self.address = address
        self._channel = dialer.channel(address, _CHANNEL_OPTIONS)
        self._call: Any = peer_pb2_grpc.PeerStub(self._channel).Forward(metadata=metadata)
        self._outbox: asyncio.Queue[peer_pb2.ForwardRequest | None] = asyncio.Queue()
        self._waiting: dict[int, tuple[asyncio.Future[bytes], bool]] = {}
        self._ids = itertools.count(1)
        self.broken = False
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def request(self, method: str, payload: bytes, timeout: float, is_write: bool) -> bytes:
        request_id = next(self._ids)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = (future, is_write)
        # The leader's bound is a little shorter than ours, so that its own
        # answer (which says what did not finish) arrives before we give up.
        leader_timeout = max(timeout - max(0.02, timeout * 0.02), 0.001)
        await self._outbox.put(
            peer_pb2.ForwardRequest(
                id=request_id, method=method, request=payload, timeout_seconds=leader_timeout
            )
        )
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise RequestError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"the leader at {self.address} did not answer within {timeout:.3f} s",
            ) from None
        finally:
            self._waiting.pop(request_id, None)

    async def _write_loop(self) -> None:
        try:
            while True:
                request = await self._outbox.get()
                if request is None:
                    await self._call.done_writing()
                    return
                await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            self._break(exc)

    async def _read_loop(self) -> None:
        try:
            async for response in self._call:
                waiting = self._waiting.get(response.id)
                if waiting is None or waiting[0].done():
                    continue
                future = waiting[0]
                if response.code == grpc.StatusCode.OK.value[0]:
                    future.set_result(response.response)
                else:
                    code = _status_code(response.code)
                    future.set_exception(RequestError(code, response.message))
            self._break(None)
        except grpc.aio.AioRpcError as exc:
            self._break(exc)

    def _break(self, exc: BaseException | None) -> None:
        """The stream ended: writes in flight have an unknown outcome, reads can retry."""
        self.broken = True
        reason = f"forward stream to the leader at {self.address} broke: {exc or 'closed'}"
        for future, is_write in self._waiting.values():
            if future.done():
                continue
            if is_write:
                future.set_exception(
                    RequestError(grpc.StatusCode.ABORTED, f"outcome unknown: {reason}")
                )
            else:
                future.set_exception(RequestError(grpc.StatusCode.UNAVAILABLE, reason))

    async def close(self) -> None:
        self.broken = True
        self._outbox.put_nowait(None)
        for task in (self._writer, self._reader):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(self._writer, self._reader, return_exceptions=True), 2
            )
        await self._channel.close(grace=None)


class ForwardClient:
    """Forwards requests to whichever address leads, one stream per address."""

    def __init__(self, cluster_id: int, node_id: int, dialer: PeerDialer | None = None) -> None:
        self._dialer = dialer if dialer is not None else PeerDialer()
        self._metadata = ((CLUSTER_ID_KEY, str(cluster_id)), (FROM_ID_KEY, str(node_id)))
        self._links: dict[str, _Link] = {}

    async def __call__(self, address: str, method: str, payload: bytes, timeout: float) -> bytes:
        link = self._links.get(address)
        if link is not None and link.broken:
            if self._links.get(address) is link:
                del self._links[address]
            await link.close()
            # Requests that found the same broken link meanwhile share one new link.
            link = self._links.get(address)
        if link is None or link.broken:
            link = _Link(address, self._metadata, self._dialer)
            self._links[address] = link
        is_write = method not in READS  # membership changes too: a lost answer is "unknown"
        return await link.request(method, payload, timeout, is_write)

    async def close(self) -> None:
        links, self._links = self._links, {}
        for link in links.values():
            await link.close()


def _status_code(value: int) -> grpc.StatusCode:
    for code in grpc.StatusCode:
        if code.value[0] == value:
            return code
    return grpc.StatusCode.UNKNOWN


def make_forward_handler(executor: Executor, cluster_id: int) -> Any:
    """The leader's side of ``Peer.Forward``: run each request, answer as it completes."""

    async def handle(
        request_iterator: AsyncIterator[peer_pb2.ForwardRequest], context: Any
    ) -> AsyncIterator[peer_pb2.ForwardResponse]:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(CLUSTER_ID_KEY) != str(cluster_id):
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"forwarded request from cluster {metadata.get(CLUSTER_ID_KEY)!r}, "
                f"this is cluster {cluster_id}",
            )
        answers: asyncio.Queue[peer_pb2.ForwardResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def run(request: peer_pb2.ForwardRequest) -> None:
            answer = peer_pb2.ForwardResponse(id=request.id)
            try:
                kind = REQUEST_TYPES.get(request.method)
                if kind is None:
                    raise RequestError(
                        grpc.StatusCode.UNIMPLEMENTED, f"unknown method {request.method!r}"
                    )
                message = kind.FromString(request.request)
                operation = executor.check(request.method, message)
                timeout = request.timeout_seconds or executor.node.config.request_timeout
                response = await executor.execute_local(request.method, message, timeout, operation)
                answer.response = response.SerializeToString()
            except NotLeaderError as exc:
                answer.code = grpc.StatusCode.UNAVAILABLE.value[0]
                answer.message = f"not the leader: {exc}"
            except RequestError as exc:
                answer.code = exc.code.value[0]
                answer.message = exc.message
            except Exception as exc:
                log.exception("forwarded %s failed", request.method)
                answer.code = grpc.StatusCode.INTERNAL.value[0]
                answer.message = f"{type(exc).__name__}: {exc}"
            await answers.put(answer)

        async def read_requests() -> None:
            async for request in request_iterator:
                task = asyncio.get_running_loop().create_task(run(request))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            await answers.put(None)

        reader = asyncio.get_running_loop().create_task(read_requests())
        try:
            while (answer := await answers.get()) is not None:
                yield answer
        finally:
            reader.cancel()
            for task in tasks:
                task.cancel()

    return handle
