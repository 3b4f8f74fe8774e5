"""``kvstore serve`` on a taken port exits 1 with one line naming the port,
before the member starts anything (real processes on 127.0.0.1)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kvstore.devcluster import free_ports


@contextmanager
def listening_socket() -> Iterator[int]:
    """A port something else listens on, for the length of the block."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def serve(data_dir: Path, client_port: int, peer_port: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "kvstore", "serve", "--id", "1",
               "--client-addr", f"127.0.0.1:{client_port}",
               "--peer-addr", f"127.0.0.1:{peer_port}", "--data-dir", str(data_dir),
               "--initial-cluster", f"1=127.0.0.1:{peer_port}"]  # fmt: skip
    # run() kills the process if it outlives the timeout.
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_a_taken_client_port_is_named_and_nothing_starts(tmp_path: Path) -> None:
    (peer_port,) = free_ports(1)
    with listening_socket() as client_port:
        result = serve(tmp_path / "data", client_port, peer_port)
    assert result.returncode == 1, result.stderr
    assert (
        f"member 1 cannot start: cannot listen for clients on 127.0.0.1:{client_port}: "
        "address already in use" in result.stderr
    ), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # It failed before the peer server listened or the node bootstrapped.
    assert "peer server listening" not in result.stderr, result.stderr
    assert "bootstrapped" not in result.stderr, result.stderr


def test_a_taken_peer_port_is_named(tmp_path: Path) -> None:
    (client_port,) = free_ports(1)
    with listening_socket() as peer_port:
        result = serve(tmp_path / "data", client_port, peer_port)
    assert result.returncode == 1, result.stderr
    assert f"cannot listen for peers on 127.0.0.1:{peer_port}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # The client port was never bound: a member can take it now.
    with socket.socket() as again:
        again.bind(("127.0.0.1", client_port))
