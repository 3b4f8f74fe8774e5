"""Cluster membership: which servers exist and what role each plays.

A ``Configuration`` is immutable; changes produce a new one. Its binary
encoding is the data of a CHANGE entry.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from raftcore.errors import Malformed
from raftcore.types import Role

_FORMAT_VERSION = 1
_HEADER = struct.Struct(">BI")  # version, server count
_SERVER = struct.Struct(">QBH")  # id, role, address length


@dataclass(frozen=True, slots=True)
class Server:
    id: int
    address: str
    role: Role


class Configuration:
    """An ordered set of servers, unique by id."""

    __slots__ = ("_by_id", "_servers", "_voter_ids")

    def __init__(self, servers: Iterable[Server] = ()) -> None:
        self._servers: tuple[Server, ...] = tuple(servers)
        self._by_id: dict[int, Server] = {}
        for server in self._servers:
            if server.id <= 0:
                raise Malformed(f"server id must be positive, got {server.id}")
            if server.id in self._by_id:
                raise Malformed(f"duplicate server id {server.id}")
            self._by_id[server.id] = server
        # Asked on every SUBMIT (capacity check) and quorum count: worked out once.
        self._voter_ids = tuple(s.id for s in self._servers if s.role == Role.VOTER)

    @property
    def servers(self) -> tuple[Server, ...]:
        return self._servers

    @property
    def voters(self) -> list[Server]:
        return [s for s in self._servers if s.role == Role.VOTER]

    def get(self, server_id: int) -> Server | None:
        return self._by_id.get(server_id)

    def __contains__(self, server_id: object) -> bool:
        return server_id in self._by_id

    def __iter__(self) -> Iterator[Server]:
        return iter(self._servers)

    def __len__(self) -> int:
        return len(self._servers)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Configuration) and self._servers == other._servers

    def __hash__(self) -> int:
        return hash(self._servers)

    def __repr__(self) -> str:
        inner = ", ".join(f"{s.id}={s.address}/{s.role.name}" for s in self._servers)
        return f"Configuration({inner})"

    def is_voter(self, server_id: int) -> bool:
        server = self._by_id.get(server_id)
        return server is not None and server.role == Role.VOTER

    def voter_ids(self) -> list[int]:
        return list(self._voter_ids)

    def with_server(self, server_id: int, address: str, role: Role) -> Configuration:
        """A copy with the server added, or with its address and role replaced."""
        new = Server(server_id, address, Role(role))
        if server_id in self._by_id:
            return Configuration(new if s.id == server_id else s for s in self._servers)
        return Configuration((*self._servers, new))

    def without_server(self, server_id: int) -> Configuration:
        return Configuration(s for s in self._servers if s.id != server_id)

    def encode(self) -> bytes:
        parts = [_HEADER.pack(_FORMAT_VERSION, len(self._servers))]
        for server in self._servers:
            address = server.address.encode("utf-8")
            parts.append(_SERVER.pack(server.id, int(server.role), len(address)))
            parts.append(address)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        try:
            version, count = _HEADER.unpack_from(data, 0)
            if version != _FORMAT_VERSION:
                raise Malformed(f"unknown configuration format version {version}")
            offset = _HEADER.size
            servers = []
            for _ in range(count):
                server_id, role, length = _SERVER.unpack_from(data, offset)
                offset += _SERVER.size
                address = bytes(data[offset : offset + length])
                if len(address) != length:
                    raise Malformed("configuration truncated inside an address")
                offset += length
                servers.append(Server(server_id, address.decode("utf-8"), Role(role)))
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise Malformed(f"cannot decode configuration: {exc}") from exc
        if offset != len(data):
            raise Malformed(f"configuration has {len(data) - offset} trailing bytes")
        return cls(servers)
