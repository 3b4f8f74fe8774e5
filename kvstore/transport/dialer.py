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
  The dialled member's certificate must name the host it *advertises*: gRPC
  checks the name it dials, so when a route changes that name, the advertised
  host is handed to gRPC as the name to verify (and to send as SNI).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio

__all__ = ["PeerDialer", "host_of", "parse_routes"]


def host_of(address: str) -> str:
    """The host of ``host:port`` (``[v6]:port`` too), without brackets."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


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

    def tls_name(self, address: str) -> str | None:
        """The name to verify in the certificate of the member advertised at ``address``,
        when it is not the host dialled (None: gRPC checks the dialled host itself)."""
        if self.tls_server_name:
            return self.tls_server_name
        if self.target(address) != address:
            return host_of(address)
        return None

    def channel(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        target = self.target(address)
        if self.credentials is None:
            return grpc.aio.insecure_channel(target, options=list(options))
        opts = list(options)
        name = self.tls_name(address)
        if name is not None:
            opts.append(("grpc.ssl_target_name_override", name))
        return grpc.aio.secure_channel(target, self.credentials, options=opts)
