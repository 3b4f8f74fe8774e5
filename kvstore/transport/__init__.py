"""gRPC transport between peers (DESIGN 3: Transport).

The node loop uses three things:

* :class:`PeerServicer` + :func:`start_peer_server`: receive. Frames are checked
  (cluster id, recipient, sender in the configuration, well-formed) before the
  node's ``on_messages`` / ``on_snapshot`` callbacks see them.
* :class:`Transport`: send. Non-blocking ``send(messages)``, per-peer batching
  streams with reconnect, ``send_snapshot`` in chunks, bounded ``close``.
* :mod:`kvstore.transport.codec`: raftcore messages <-> protobuf.
"""

from kvstore.transport.codec import DecodeError
from kvstore.transport.dialer import PeerDialer, parse_routes
from kvstore.transport.peer_client import PeerSender, PeerStats, channel_options
from kvstore.transport.peer_server import (
    DEFAULT_MAX_MESSAGE_BYTES,
    ForwardHandler,
    PeerServer,
    PeerServicer,
    ServerStats,
    start_peer_server,
)
from kvstore.transport.transport import Transport

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "DecodeError",
    "ForwardHandler",
    "PeerDialer",
    "PeerSender",
    "PeerServer",
    "PeerServicer",
    "PeerStats",
    "ServerStats",
    "Transport",
    "channel_options",
    "parse_routes",
    "start_peer_server",
]
