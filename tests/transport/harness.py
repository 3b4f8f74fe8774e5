"""A small harness: nodes with a real peer server and transport on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from kvstore.transport import PeerServer, PeerServicer, Transport, start_peer_server
from raftcore import AppendEntries, InstallSnapshot, Message

CLUSTER = 7


def run(coro: Coroutine[Any, Any, Any], timeout: float = 15.0) -> Any:
    """Run one test coroutine on a fresh loop, bounded (pytest-asyncio is not used)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def until(predicate: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Poll ``predicate`` every 10 ms, failing the test after ``timeout`` seconds."""

    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout)
    except TimeoutError:
        raise AssertionError(
            f"timed out after {timeout} s waiting for {what or predicate}"
        ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def heartbeat(to_id: int, address: str, index: int, term: int = 1) -> Message:
    """An AppendEntries whose prev_log_index numbers it, to check order."""
    return Message(to_id, address, AppendEntries(term, index, term, 0))


class Node:
    """A member's transport side: its server, its Transport, what it received."""

    def __init__(
        self,
        node_id: int,
        *,
        members: set[int] | None = None,
        cluster_id: int = CLUSTER,
        port: int = 0,
        on_snapshot: Callable[[int, str, InstallSnapshot, AsyncIterator[bytes]], Awaitable[bool]]
        | None = None,
        **sender_options: Any,
    ) -> None:
        self.id = node_id
        self.members = members if members is not None else {1, 2, 3, 4}
        self.cluster_id = cluster_id
        self.port = port
        self.received: list[Message] = []
        self.batches: list[tuple[int, str, int]] = []
        self.servicer = PeerServicer(
            cluster_id=cluster_id,
            node_id=node_id,
            accept_from=lambda peer: peer in self.members,
            on_messages=self._on_messages,
            on_snapshot=on_snapshot,
        )
        self.server: PeerServer | None = None
        self._sender_options = sender_options
        self.transport: Transport | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _on_messages(self, from_id: int, from_address: str, messages: list[Message]) -> None:
        self.batches.append((from_id, from_address, len(messages)))
        self.received.extend(messages)

    async def start(self) -> Node:
        self.server = await start_peer_server(self.servicer, f"127.0.0.1:{self.port}")
        self.port = self.server.port
        if self.transport is None:
            self.transport = Transport(
                cluster_id=self.cluster_id,
                node_id=self.id,
                node_address=self.address,
                **self._sender_options,
            )
        return self

    async def stop_server(self) -> None:
        if self.server is not None:
            await self.server.stop(0.2)
            self.server = None

    async def stop(self) -> None:
        if self.transport is not None:
            await self.transport.close(1.0)
        await self.stop_server()

    def send(self, messages: list[Message]) -> None:
        assert self.transport is not None
        self.transport.send(messages)


class Cluster:
    """``async with Cluster(node, ...)``: starts the nodes, always stops them."""

    def __init__(self, *nodes: Node) -> None:
        self.nodes = nodes

    async def __aenter__(self) -> Cluster:
        try:
            for node in self.nodes:
                await node.start()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.wait_for(asyncio.gather(*(n.stop() for n in self.nodes)), 5.0)
