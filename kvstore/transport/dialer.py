"""How a member opens channels to the other members.

Members know each other by the peer address each one advertises (the
configuration's ``Server.address``). Two things may stand between that name
and the socket actually dialled, and both live here so that every outgoing
peer channel (the Raft stream, snapshots, forwarded client requests) obeys
them alike:

* routes: dial an advertised address at another host:port (``--peer-routes``).
  Used where the advertised name does not resolve from here: a Kubernetes DNS
  name tested on one machine, a port-forward, or the chaos tests' fault
  injecting proxies between each pair of members;
* credentials: mutual TLS for peer traffic when it is configured (else plaintext).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

__all__ = ["PeerDialer", "parse_routes"]


def parse_routes(text: str) -> dict[str, str]:
    """``ADVERTISED=DIAL,...`` -> {advertised: dial}; errors name the bad part."""
    routes: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        advertised, sep, dial = part.partition("=")
        if not sep or not advertised or not dial:
            raise ValueError(f"peer route {part!r} is not ADVERTISED_HOST:PORT=DIAL_HOST:PORT")
        if advertised in routes:
            raise ValueError(f"peer routes list {advertised!r} twice")
        routes[advertised] = dial
    return routes


@dataclass(frozen=True)
class PeerDialer:
    routes: Mapping[str, str] = field(default_factory=dict)
    credentials: grpc.ChannelCredentials | None = None
    # The TLS name to expect in a peer's certificate when dialling through a
    # route (the certificate names the advertised host, not the route's).
    tls_server_name: str | None = None

    def target(self, address: str) -> str:
        """The host:port to dial for a member advertised at ``address``."""
        return self.routes.get(address, address)

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        target = self.target(address)
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        opts = list(options)
        if target != address or self.tls_server_name:
            host = self.tls_server_name or address.rsplit(":", 1)[0]
            opts.append(("grpc.ssl_target_name_override", host))
        return grpc.aio.secure_channel(target, self.credentials, options=opts)
