"""Backup and restore with real processes: ``kvctl snapshot save`` against a
running cluster, ``kvstore restore`` into new data directories, and a new
cluster of ``kvstore serve`` processes started from them.

The guarantee under test: a backup holds every write acknowledged before the
save started (also when a follower takes it while writes go on), and a
cluster restored from it serves exactly that data, with its revisions.
"""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from kvstore.cli.kvctl import main as kvctl_main
from kvstore.cli.server import main as kvstore_main
from kvstore.client import KeyValue, RequestId
from kvstore.devcluster import free_port
from kvstore.restore import restore
from kvstore.storage import Storage
from tests.integration.cluster import REPO, Cluster, Member, running_cluster, wait_until

BIN = Path(sys.executable).parent
COMMAND_TIMEOUT = 60.0


def run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    """A console script of the package (``kvctl``, ``kvstore``), bounded in time."""
    command = [str(BIN / str(argv[0])), *map(str, argv[1:])]
    return subprocess.run(
        command,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )


def follower_endpoint(cluster: Cluster) -> str:
    """A follower's client address: its backup needs the read barrier through the leader."""
    leader = cluster.wait_for_leader()
    return next(m.client_addr for i, m in cluster.members.items() if i != leader)


def save(endpoint: str, path: Path) -> dict[str, object]:
    result = run("kvctl", "--endpoints", endpoint, "snapshot", "save", path, "-w", "json")
    assert result.returncode == 0, result.stderr
    saved: dict[str, object] = json.loads(result.stdout)
    return saved


def restore_member(backup: Path, cluster: Cluster, member: Member) -> None:
    result = run(
        "kvstore", "restore", backup,
        "--id", str(member.id),
        "--data-dir", member.data_dir,
        "--initial-cluster", cluster.initial_cluster,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"restored member {member.id}" in result.stdout


def restored_from(backup: Path) -> Callable[[Path, int, Sequence[str]], Cluster]:
    """A cluster factory for running_cluster: new ports, every member restored from
    ``backup`` by ``kvstore restore`` (the members' restores run in parallel)."""

    def factory(base_dir: Path, size: int, extra_args: Sequence[str]) -> Cluster:
        cluster = Cluster(base_dir, size, extra_args)
        with ThreadPoolExecutor(size) as pool:
            members = list(cluster.members.values())
            list(pool.map(restore_member, [backup] * size, [cluster] * size, members))
        return cluster

    return factory


def test_restored_cluster_serves_every_acknowledged_write(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client(timeout=10) as client:
        for i in range(40):
            client.put(f"restore/k{i:02d}", f"v{i}")
        for i in range(0, 40, 3):
            client.put(f"restore/k{i:02d}", f"v{i}-overwritten")
        for i in range(1, 40, 7):
            assert client.delete(f"restore/k{i:02d}").deleted
        client.put("restore/k01", "re-created")
        assert client.compare_and_swap("restore/k02", "swapped", expected_value="v2").succeeded
        big = os.urandom(128 << 10)
        for i in range(24):  # 3 MiB: the stream has several 1 MiB chunks
            client.put(f"restore/big/{i:02d}", big)
        session = RequestId(client_id=0x5E55, sequence=1)
        put = client.put("restore/session", "once", request_id=session)
        expected = client.range("restore/").kvs
    backup = tmp_path / "backup.kvb"
    saved = save(follower_endpoint(cluster), backup)
    assert saved["revision"] >= put.header.revision  # type: ignore[operator]

    with running_cluster(tmp_path / "restored", factory=restored_from(backup)) as restored:
        assert restored.initial_cluster != cluster.initial_cluster
        with restored.client(timeout=10) as client:
            assert client.range("restore/").kvs == expected
            got = client.get("restore/k01")
            assert got is not None and got.value == b"re-created" and got.version == 1
            assert client.get("restore/k08") is None  # deleted before the backup
            # A write retried with its original request id is answered from the
            # session kept in the backup, not applied a second time.
            again = client.put("restore/session", "twice", request_id=session)
            assert again.header.revision == put.header.revision
            after = client.put("restore/new", "accepted")
            assert after.header.revision == saved["revision"] + 1  # type: ignore[operator]
            assert client.get("restore/session") == _kv(expected, b"restore/session")
            header = after.header
        assert header.cluster_id != cluster.status(1).header.cluster_id
        restored.wait_converged()


def _kv(kvs: list[KeyValue], key: bytes) -> KeyValue:
    return next(kv for kv in kvs if kv.key == key)


def test_backup_during_writes_holds_every_write_acknowledged_before(
    cluster: Cluster, tmp_path: Path
) -> None:
    acked: list[tuple[int, int]] = []  # (i, revision) of each acknowledged put, in order
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with cluster.client(timeout=10) as client:
                for i in range(100_000):
                    if stop.is_set():
                        return
                    acked.append((i, client.put(f"live/{i:06d}", str(i)).header.revision))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(acked) >= 50, 30, "50 writes acknowledged")
        before = list(acked)  # acknowledged before the save starts
        backup = tmp_path / "backup.kvb"
        saved = save(follower_endpoint(cluster), backup)
        during = len(acked) - len(before)
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and not errors, errors

    check = tmp_path / "check"
    restore(backup, check, 1, {1: "127.0.0.1:1"})
    with Storage(check) as storage:
        live = {kv.key: kv for kv in storage.data.range(prefix=b"live/").kvs}
    for i, revision in before:
        kv = live.get(b"live/%06d" % i)
        assert kv is not None, f"acknowledged write {i} missing from the backup"
        assert (kv.value, kv.mod_revision) == (str(i).encode(), revision)
    assert saved["revision"] >= before[-1][1]  # type: ignore[operator]
    # Writes acknowledged during the save may or may not be in it; those that
    # are form a prefix (one consistent read), as the writer is sequential.
    contained = [i for i, _ in acked if b"live/%06d" % i in live]
    assert contained == list(range(len(contained))), f"{during} writes during the save"


def cli(main: Callable[[list[str]], int], *argv: str | Path) -> tuple[int, str, str]:
    """A console script's ``main`` in this process (exit code, stdout, stderr): the
    same code as ``kvctl``/``kvstore`` without a Python start per call."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(arg) for arg in argv])
    return code, out.getvalue(), err.getvalue()


def test_damaged_backups_and_used_data_dirs_are_refused(cluster: Cluster, tmp_path: Path) -> None:
    with cluster.client() as client:
        for i in range(20):
            client.put(f"damage/{i}", os.urandom(2000))
    backup = tmp_path / "backup.kvb"
    code, out, err = cli(
        kvctl_main, "--endpoints", cluster.endpoints[0], "snapshot", "save", backup
    )
    assert code == 0 and out.startswith(f"Snapshot saved to {backup}"), err
    code, out, err = cli(kvctl_main, "snapshot", "status", backup)
    assert code == 0 and "(verified)" in out, err

    raw = backup.read_bytes()
    half = len(raw) // 2
    truncated = tmp_path / "truncated.kvb"
    truncated.write_bytes(raw[:half])
    corrupted = tmp_path / "corrupted.kvb"
    corrupted.write_bytes(raw[:half] + bytes([raw[half] ^ 1]) + raw[half + 1 :])
    members = "1=127.0.0.1:1,2=127.0.0.1:2"
    for bad, problem in ((truncated, "is truncated"), (corrupted, "is corrupted")):
        data_dir = tmp_path / f"from-{bad.stem}"
        code, _, err = cli(
            kvstore_main, "restore", bad, "--id", "1", "--data-dir", data_dir,
            "--initial-cluster", members,
        )  # fmt: skip
        assert code == 1 and err.startswith("kvstore restore: ") and problem in err, err
        assert not data_dir.exists()
        code, _, err = cli(kvctl_main, "snapshot", "status", bad)
        assert code == 2 and problem in err, err

    used = tmp_path / "used"
    used.mkdir()
    (used / "cluster_id").write_text("42\n")
    code, _, err = cli(
        kvstore_main, "restore", backup, "--id", "2", "--data-dir", used,
        "--initial-cluster", members,
    )  # fmt: skip
    assert code == 1 and "is not empty (cluster_id)" in err, err
    assert [p.name for p in used.iterdir()] == ["cluster_id"]
    assert (used / "cluster_id").read_text() == "42\n"


def test_progress_bar_on_a_terminal(cluster: Cluster, tmp_path: Path) -> None:
    """The bar is drawn on stderr when it is a terminal (a pty here); the summary
    goes to stdout."""
    backup = tmp_path / "backup.kvb"
    master, slave = pty.openpty()
    process = None
    try:
        process = subprocess.Popen(
            [str(BIN / "kvctl"), "--endpoints", cluster.endpoints[0], "snapshot", "save", backup],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=slave,
        )
        os.close(slave)
        slave = -1
        terminal = _read_until_closed(master, COMMAND_TIMEOUT)
        stdout, _ = process.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0, terminal
    assert b"snapshot [" + b"#" * 30 + b"]" in terminal
    assert stdout.startswith(b"Snapshot saved to " + bytes(backup))


def _read_until_closed(fd: int, timeout: float) -> bytes:
    """Everything written to a pty until its other end is closed (or ``timeout``)."""
    deadline = time.monotonic() + timeout
    out = b""
    while time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], 0.2)
        if not readable:
            continue
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the other end is closed
            return out
        if not data:
            return out
        out += data
    raise TimeoutError(f"pty still open after {timeout} s: {out!r}")


def test_save_without_a_member_fails_and_writes_nothing(tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{free_port()}"  # nobody listens there
    backup = tmp_path / "b.kvb"
    code, _, err = cli(
        kvctl_main, "--endpoints", endpoint, "--timeout", "2", "snapshot", "save", backup
    )
    assert code == 2
    assert "no member could take a backup" in err and endpoint in err
    assert list(tmp_path.iterdir()) == []


def test_save_without_a_leader_fails_and_writes_nothing(tmp_path: Path) -> None:
    """One member of three: no leader, so no read barrier; the member refuses
    rather than back up data that may be behind."""
    lonely = Cluster(tmp_path / "lonely", 3)
    try:
        lonely.start(1)
        member = lonely.members[1]
        wait_until(lambda: lonely.status(1), 20, "member 1 answering")
        backup = tmp_path / "b.kvb"
        code, _, err = cli(
            kvctl_main,
            "--endpoints",
            member.client_addr,
            "--timeout",
            "2",
            "snapshot",
            "save",
            backup,
        )
        assert code == 2 and "no member could take a backup" in err and "no leader" in err, err
        assert not backup.exists() and not backup.with_name("b.kvb.part").exists()
        lonely.check_running([1])
    finally:
        lonely.stop()
