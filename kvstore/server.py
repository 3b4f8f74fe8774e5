"""One member, assembled: storage, node loop, peer transport, client API.

Start order matters: the peer server must listen before raftcore starts
(votes may arrive at once), and the client API comes last, once there is a
node to serve. Stop runs the other way round, each step bounded in time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from kvstore.api.client_port import ClientPort, check_port_free
from kvstore.api.executor import Executor
from kvstore.api.forward import ForwardClient, make_forward_handler
from kvstore.cli.server import stored_cluster_id
from kvstore.metrics import HealthServer
from kvstore.node import Node, NodeConfig
from kvstore.storage import Storage
from kvstore.transport import PeerDialer, PeerServer, PeerServicer, Transport
from raftcore import Message

log = logging.getLogger("kvstore.server")


class Server:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = stored_cluster_id(config)
        self.storage = Storage(config.data_dir, map_size=config.map_size)
        self.node = Node(config, self.storage, self.cluster_id)
        # Checked at startup by `kvstore serve` already; loaded once more here.
        self.peer_tls = config.peer_tls.load() if config.peer_tls is not None else None
        self.client_tls = config.client_tls.load() if config.client_tls is not None else None
        self.dialer = PeerDialer(
            routes=config.peer_routes,
            credentials=self.peer_tls.channel_credentials() if self.peer_tls else None,
        )
        self.forward_client = ForwardClient(
            self.cluster_id, config.id, self.dialer, linger=config.flush_linger
        )
        self.executor = Executor(self.node, self.forward_client)
        self.transport: Any = None
        self.peer_server: PeerServer | None = None
        self.client_port: ClientPort | None = None
        self.metrics_server: HealthServer | None = None

    async def start(self) -> None:
        """Raises OSError naming the address if a port is taken."""
        # The client port opens last; a taken one should fail before anything starts.
        check_port_free(self.config.client_addr)
        node = self.node
        servicer = PeerServicer(
            cluster_id=self.cluster_id,
            node_id=self.config.id,
            accept_from=node.accepts_from,
            on_messages=self._on_messages,
            on_snapshot=node.snapshots.receive,
            forward_handler=make_forward_handler(
                self.executor, self.cluster_id, self.forward_client.stats
            ),
        )
        node.peer_server_stats = servicer.stats
        node.forward_stats = self.forward_client.stats
        self.peer_server = PeerServer(
            servicer,
            self.config.listen_peer_addr,
            credentials=self.peer_tls.server_credentials() if self.peer_tls else None,
        )
        await self.peer_server.start()
        if self.config.metrics_addr:
            self.metrics_server = HealthServer(self.config.metrics_addr, node.metrics, node)
            self.metrics_server.start()
        self.transport = Transport(
            cluster_id=self.cluster_id,
            node_id=self.config.id,
            node_address=self.config.peer_addr,
            dialer=self.dialer,
        )
        node.transport = self.transport
        await node.start()
        self.transport.update_peers(
            {s.id: s.address for s in node.raft.configuration if s.id != self.config.id}
        )
        self.client_port = ClientPort(
            self.executor,
            self.config.client_addr,
            self.client_tls.server_credentials() if self.client_tls else None,
            acceptors=self.config.client_acceptors,
        )
        node.metrics.acceptor_calls = self.client_port.calls
        await self.client_port.start()

    def _on_messages(self, from_id: int, from_address: str, messages: list[Message]) -> None:
        self.node.receive(messages)

    async def stop(self) -> None:
        """Answer or fail what is in flight, then close everything, each step bounded."""
        if self.client_port is not None:
            await self.client_port.stop(grace=2.0)
        await self.node.stop()
        await self.forward_client.close()
        if self.transport is not None:
            await asyncio.wait_for(self.transport.close(), 5)
        if self.peer_server is not None:
            await self.peer_server.stop(grace=1.0)
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.stop)
        self.storage.close()
