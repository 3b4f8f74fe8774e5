"""raftcore must stay a pure library: standard library imports only (DESIGN section 1)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

RAFTCORE = Path(__file__).resolve().parents[2] / "raftcore"


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_raftcore_imports_only_the_standard_library_and_itself() -> None:
    files = sorted(RAFTCORE.glob("*.py"))
    assert files, "raftcore has no modules"
    allowed = set(sys.stdlib_module_names) | {"raftcore", "__future__"}
    offenders = {
        f"{path.name}: {name}"
        for path in files
        for name in _top_level_imports(path)
        if name not in allowed
    }
    assert not offenders, f"raftcore imports outside the standard library: {sorted(offenders)}"


def test_raftcore_does_no_io_or_clock_reads() -> None:
    """No clock, threads, sockets or files: time and randomness come from events and the seed."""
    forbidden = {"time", "socket", "threading", "asyncio", "os", "subprocess", "datetime"}
    used = {
        f"{path.name}: {name}"
        for path in sorted(RAFTCORE.glob("*.py"))
        for name in _top_level_imports(path) & forbidden
    }
    assert not used, f"raftcore reaches outside: {sorted(used)}"
