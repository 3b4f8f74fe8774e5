"""The fault-injecting proxies with real sockets: pass, drop (hold, then deliver), cut, delay."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.chaos.proxy import Mode, ProxyNet

TIMEOUT = 5.0


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.settimeout(30.0)
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def echo() -> Iterator[str]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


@pytest.fixture
def net() -> Iterator[ProxyNet]:
    with ProxyNet() as net:
        yield net


def _connect(address: str) -> socket.socket:
    host, port = address.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=TIMEOUT)


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _roundtrip(sock: socket.socket, data: bytes) -> bytes:
    """Send ``data`` and read as many bytes back (the echo server's answer)."""
    sock.sendall(data)
    return _recv_exactly(sock, len(data))


def _silent(sock: socket.socket, wait: float = 0.5) -> bool:
    """Nothing arrives within ``wait`` seconds (and the connection stays open)."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b"x-never"
    except TimeoutError:
        return True
    finally:
        sock.settimeout(TIMEOUT)


def _closed(sock: socket.socket) -> bool:
    """The proxy ended the connection: EOF or a reset (within the socket's timeout)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pass_forwards_both_ways_and_counts_bytes(echo: str, net: ProxyNet) -> None:
    proxy = net.add("a:1", echo)
    assert net.route("a:1") == {echo: proxy}
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"hello") == b"hello"
    assert net.bytes_forwarded()[("a:1", echo)] == 10


def test_drop_holds_connections_then_delivers_what_was_sent(echo: str, net: ProxyNet) -> None:
    proxy = net.add("a:1", echo)
    with _connect(proxy) as before:
        assert _roundtrip(before, b"1") == b"1"
        net.set([("a:1", echo)], Mode.DROP)
        before.sendall(b"2")
        with _connect(proxy) as during:  # accepted, like a SYN into a partition... held
            during.sendall(b"3")
            assert _silent(before) and _silent(during)
            net.heal()
            assert _recv_exactly(before, 1) == b"2"
            assert _recv_exactly(during, 1) == b"3"


def test_cut_resets_connections_and_refuses_new_ones(echo: str, net: ProxyNet) -> None:
    proxy = net.add("a:1", echo)
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"1") == b"1"
        net.set([("a:1", echo)], Mode.CUT)
        assert _closed(sock)
    with _connect(proxy) as sock:  # accepted only to be closed
        assert _closed(sock)
    net.heal()
    with _connect(proxy) as sock:
        assert _roundtrip(sock, b"4") == b"4"


def test_delay_holds_each_chunk_back(echo: str, net: ProxyNet) -> None:
    proxy = net.add("a:1", echo)
    net.set([("a:1", echo)], Mode.PASS, delay=0.2)
    with _connect(proxy) as sock:
        started = time.monotonic()
        assert _roundtrip(sock, b"late") == b"late"
        # Both directions are delayed: the echo cannot be back sooner (a lower bound).
        assert time.monotonic() - started >= 0.4


def test_isolate_blocks_both_directions_of_the_pairs_only(echo: str, net: ProxyNet) -> None:
    for src, dst in [("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]:
        net.add(src, dst)
    net.isolate([("a", "b")])
    modes = net.modes()
    assert modes[("a", "b")] == modes[("b", "a")] == Mode.DROP
    assert {modes[p] for p in [("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")]} == {Mode.PASS}
    net.isolate([("b", "c")], Mode.CUT)  # a new partition replaces the old one
    modes = net.modes()
    assert modes[("a", "b")] == Mode.PASS and modes[("c", "b")] == Mode.CUT
