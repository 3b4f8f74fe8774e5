"""Output helpers of kvctl: raw bytes, aligned tables, JSON and one-line errors.

Values are bytes: ``get`` writes them as they are (a binary value survives
``kvctl get k > file``), and JSON carries them as UTF-8 text when they are
text and as base64 (``value_base64``) when not, so JSON output never fails
and never silently mangles a value.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Sequence
from typing import Any

from kvstore.client import Header, KeyValue


class Output:
    """Where kvctl writes: results to stdout (bytes-safe), messages to stderr."""

    def __init__(self) -> None:
        self.stdout = sys.stdout
        self.stderr = sys.stderr

    def raw(self, data: bytes) -> None:
        buffer = getattr(self.stdout, "buffer", None)
        if buffer is None:  # a text-only stream (some test harnesses)
            self.stdout.write(data.decode("utf-8", "surrogateescape"))
            return
        self.stdout.flush()
        buffer.write(data)
        buffer.flush()

    def line(self, text: str) -> None:
        self.raw(text.encode("utf-8") + b"\n")

    def json(self, value: Any) -> None:
        self.line(json.dumps(value, indent=2, ensure_ascii=False))

    def note(self, text: str) -> None:
        """A remark for the human that must not pollute piped output."""
        print(text, file=self.stderr)

    def error(self, text: str) -> None:
        print(f"kvctl: {text}", file=self.stderr)


def _bytes_field(name: str, data: bytes) -> dict[str, str]:
    try:
        return {name: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{name}_base64": base64.b64encode(data).decode("ascii")}


def kv_json(kv: KeyValue, *, keys_only: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = _bytes_field("key", kv.key)
    if not keys_only:
        out.update(_bytes_field("value", kv.value))
    out.update(create_revision=kv.create_revision, mod_revision=kv.mod_revision, version=kv.version)
    return out


def header_json(header: Header) -> dict[str, int]:
    return {
        "cluster_id": header.cluster_id,
        "member_id": header.member_id,
        "leader_id": header.leader_id,
        "term": header.term,
        "revision": header.revision,
    }


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns aligned on the widest cell, two spaces apart (like `kubectl get`)."""
    widths = [len(h) for h in header]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [header, *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{n} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"
