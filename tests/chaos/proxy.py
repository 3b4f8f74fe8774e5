"""Fault-injecting TCP proxies between cluster members, for network partitions.

Every member dials every other member's advertised peer address through a
proxy of its own (``kvstore serve --peer-routes``), one per ordered pair, so
the harness decides what each direction of the cluster's network does:

- ``PASS`` forwards bytes both ways (optionally each chunk ``delay`` late);
- ``DROP`` forwards nothing and keeps every connection open, new ones too, as
  a real partition does: the sender's TCP buffers fill, nothing is refused,
  keepalives go unanswered. What was sent meanwhile is delivered once the
  link passes again, as TCP retransmission would deliver it;
- ``CUT`` resets every connection and accepts new ones only to close them:
  a firewall that rejects.

Raft streams, snapshots and forwarded client requests all travel through
these links (they share kvstore's peer dialer); clients reach members
directly. The proxies run on an event loop in a thread of their own, so
that nothing the harness does (a blocking call, a busy moment) can stall the
cluster's network by accident; the methods here are thread-safe and bounded
by timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import threading
import time
from collections.abc import Collection, Coroutine, Iterable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any, TypeVar

__all__ = ["Mode", "ProxyNet"]

CONNECT_TIMEOUT = 3.0
CONTROL_TIMEOUT = 10.0
CHUNK = 64 * 1024
QUEUED_CHUNKS = 64  # per direction; beyond it the reader stops and TCP pushes back
T = TypeVar("T")


class Mode(enum.Enum):
    PASS = "pass"
    DROP = "drop"
    CUT = "cut"


@dataclass
class _Link:
    """One proxy: connections from member ``src`` to the peer port at ``dst``."""

    src: str
    dst: str
    server: asyncio.Server
    address: str  # where the proxy listens
    mode: Mode = Mode.PASS
    delay: float = 0.0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    transports: set[asyncio.WriteTransport] = field(default_factory=set)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    bytes_forwarded: int = 0
    connections: int = 0

    def set_mode(self, mode: Mode) -> None:
        self.mode = mode
        if mode == Mode.PASS:
            self.gate.set()
        else:
            self.gate.clear()
        if mode == Mode.CUT:
            for transport in list(self.transports):
                transport.abort()
            for task in list(self.tasks):
                task.cancel()  # its pumps may wait at the gate: end them too


class ProxyNet:
    """The proxies of one cluster, keyed by (source member's peer address,
    destination peer address). Use as a context manager: ``close`` stops
    the thread and closes every socket."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._links: dict[tuple[str, str], _Link] = {}
        self._thread = threading.Thread(target=self._run, name="chaos-proxies", daemon=True)
        self._thread.start()

    def __enter__(self) -> ProxyNet:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- control (any thread) ---------------------------------------------------------

    def add(self, src: str, dst: str, avoid: Collection[int] = ()) -> str:
        """A proxy for ``src`` dialling ``dst`` (host:port); the address to dial instead.
        It listens on a port the system picks, never one in ``avoid`` (ports chosen
        for other servers that have not bound them yet)."""
        return self._call(self._add(src, dst, frozenset(avoid)))

    def route(self, src: str) -> dict[str, str]:
        """{advertised peer address: proxy address} for member ``src`` (``--peer-routes``)."""
        return {dst: link.address for (s, dst), link in self._links.items() if s == src}

    def set(self, pairs: Iterable[tuple[str, str]], mode: Mode, delay: float | None = None) -> None:
        """Put the links of the given (src, dst) pairs in ``mode`` (and ``delay``, seconds)."""
        self._call(self._set(list(pairs), mode, delay))

    def isolate(self, blocked: Iterable[tuple[str, str]], mode: Mode = Mode.DROP) -> None:
        """Block both directions between each pair given; every other link passes."""
        both = {p for a, b in blocked for p in ((a, b), (b, a))}
        self._call(self._set([p for p in self._links if p not in both], Mode.PASS, None))
        self._call(self._set(list(both), mode, None))

    def heal(self) -> None:
        """Every link passes, without delay."""
        self._call(self._set(list(self._links), Mode.PASS, 0.0))

    def modes(self) -> dict[tuple[str, str], Mode]:
        return {pair: link.mode for pair, link in self._links.items()}

    def bytes_forwarded(self) -> dict[tuple[str, str], int]:
        return {pair: link.bytes_forwarded for pair, link in self._links.items()}

    def close(self) -> None:
        if self._loop.is_closed():
            return
        with contextlib.suppress(FutureTimeout, RuntimeError):
            self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(CONTROL_TIMEOUT)
        if not self._thread.is_alive():
            self._loop.close()

    # -- the loop's side ----------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(CONTROL_TIMEOUT)

    async def _add(self, src: str, dst: str, avoid: frozenset[int]) -> str:
        if (src, dst) in self._links:
            return self._links[(src, dst)].address
        holder: list[_Link] = []

        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._serve(holder[0], reader, writer)

        for _ in range(100):
            server = await asyncio.start_server(accept, "127.0.0.1", 0)
            host, port = server.sockets[0].getsockname()[:2]
            if port not in avoid:
                break
            server.close()
        else:
            raise RuntimeError(f"no port outside {sorted(avoid)} for a proxy")
        link = _Link(src, dst, server, f"{host}:{port}")
        link.gate.set()
        holder.append(link)
        self._links[(src, dst)] = link
        return link.address

    async def _set(self, pairs: list[tuple[str, str]], mode: Mode, delay: float | None) -> None:
        for pair in pairs:
            link = self._links[pair]
            link.set_mode(mode)
            if delay is not None:
                link.delay = delay

    async def _close(self) -> None:
        for link in self._links.values():
            link.server.close()
            link.set_mode(Mode.CUT)
        tasks = [t for link in self._links.values() for t in link.tasks]
        if tasks:
            await asyncio.wait(tasks, timeout=CONTROL_TIMEOUT / 2)

    async def _serve(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        link.tasks.add(task)
        link.transports.add(writer.transport)
        link.connections += 1
        upstream: asyncio.StreamWriter | None = None
        try:
            if link.mode == Mode.CUT:
                return
            await link.gate.wait()  # DROP: hold the connection, as a partition would
            host, port = link.dst.rsplit(":", 1)
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port)), CONNECT_TIMEOUT
            )
            upstream = up_writer
            link.transports.add(up_writer.transport)
            # Whichever direction ends first (EOF, reset, CUT) ends the connection.
            pumps = [
                asyncio.ensure_future(self._pump(link, reader, up_writer)),
                asyncio.ensure_future(self._pump(link, up_reader, writer)),
            ]
            try:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # CUT or close: the connection ends here (asyncio would log a cancelled handler)
        finally:
            for w in (writer, upstream):
                if w is not None:
                    link.transports.discard(w.transport)
                    w.transport.abort()
            link.tasks.discard(task)

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Copy one direction: chunks are queued with their due time (arrival plus the
        link's delay) and written in order once due and while the link passes."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)

        async def read() -> None:
            data = b"-"
            while data:
                try:
                    data = await reader.read(CHUNK)
                except OSError:
                    data = b""  # a reset ends the direction like an EOF
                await queue.put((time.monotonic() + link.delay, data))

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, data = await queue.get()
                if not data:
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await link.gate.wait()
                link.bytes_forwarded += len(data)
                writer.write(data)
                await writer.drain()
        finally:
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
