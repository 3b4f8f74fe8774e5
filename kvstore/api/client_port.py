"""The client port: a few grpc.aio servers listening on one address.

Why several: a grpc.aio server takes new calls one at a time. It asks gRPC
core for the next call only once the event loop has taken the last one in,
which costs a hop through gRPC's poller thread and a few turns of the loop;
on a leader whose loop turns also carry Raft's work, calls from 64 clients
waited ~13 ms for their handler to start. Each server has its own pending
request, and the kernel spreads connections over the listening sockets of
one port (SO_REUSEPORT, by a hash of the two addresses), so calls that come
on different connections get in side by side. The calls of one connection
stay with one server; clients that share a connection gain nothing.

SO_REUSEPORT would also let another process of the same user listen on the
port and silently take a share of the connections. So the address is probed
first with a plain bind, which fails while anyone listens there: a second
member started on a taken client port fails as it always did. (Only two
members started within the same instant could both pass the probe.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from kvstore.api.executor import Executor
from kvstore.api.service import CLIENT_SERVICES, MAX_MESSAGE_BYTES, add_client_services
from kvstore.node.config import DEFAULT_CLIENT_ACCEPTORS


class _CallCounter(grpc.GenericRpcHandler):
    """Counts the calls one server takes in; the first of its generic handlers,
    it serves none of them (gRPC then asks the next handler)."""

    def __init__(self, counts: list[int], index: int) -> None:
        self._counts = counts
        self._index = index

    def service(self, handler_call_details: Any) -> None:
        self._counts[self._index] += 1


def split_address(address: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError names what is wrong."""
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"client address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port_text)


def check_port_free(address: str) -> None:
    """Raise OSError naming ``address`` if something listens there already."""
    host, port = split_address(address)
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise OSError(f"cannot listen for clients on {address}: {exc}") from exc
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a closed connection's TIME_WAIT does not count as in use.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise OSError(
                        f"cannot listen for clients on {address}: address already in use"
                    ) from exc
                # Any other problem (no such interface...) gRPC's bind reports.


class ClientPort:
    """``acceptors`` gRPC servers for clients on one address, sharing one
    executor and one health servicer; started and stopped together."""

    def __init__(
        self,
        executor: Executor,
        address: str,
        credentials: grpc.ServerCredentials | None = None,
        acceptors: int = DEFAULT_CLIENT_ACCEPTORS,
    ) -> None:
        self.address = address
        self.port = 0
        self.health = health.aio.HealthServicer()
        #: Calls taken in by each server (kvstore_client_acceptor_calls_total).
        self.calls = [0] * acceptors
        self._executor = executor
        self._credentials = credentials
        self._servers: list[grpc.aio.Server] = []

    async def start(self) -> None:
        """Listen on the address with every server, then report SERVING."""
        shared = len(self.calls) > 1
        if shared:
            check_port_free(self.address)
        address = self.address
        try:
            for index in range(len(self.calls)):
                server = self._new_server(index, reuse_port=shared)
                self._servers.append(server)
                port = self._listen(server, address)
                if index == 0:
                    # Port 0 picks one; the other servers join the first on it.
                    self.port = port
                    address = f"{self.address.rpartition(':')[0]}:{port}"
                await server.start()
        except BaseException:
            await self.stop(grace=None)
            raise
        await self.health.set("", health_pb2.HealthCheckResponse.SERVING)
        for name in CLIENT_SERVICES[:2]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def _new_server(self, index: int, reuse_port: bool) -> grpc.aio.Server:
        server = grpc.aio.server(
            options=[
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", int(reuse_port)),
            ]
        )
        server.add_generic_rpc_handlers((_CallCounter(self.calls, index),))
        add_client_services(server, self._executor, self.health)
        return server

    def _listen(self, server: grpc.aio.Server, address: str) -> int:
        try:
            if self._credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, self._credentials)
        except RuntimeError as exc:  # gRPC's "Failed to bind"
            raise OSError(f"cannot listen for clients on {address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen for clients on {address}")
        return port

    async def stop(self, grace: float | None) -> None:
        """Health checks answer NOT_SERVING (load balancers move away), then every
        server stops at once: in-flight calls get ``grace`` seconds."""
        with contextlib.suppress(Exception):  # never keeps the servers from stopping
            await self.health.enter_graceful_shutdown()
        servers, self._servers = self._servers, []
        await asyncio.gather(*(s.stop(grace) for s in servers))
