"""The timeline of a chaos run as a PNG: throughput and latency, faults shaded.

Top: operations completed per second (ok, fail) and writes of unknown
outcome (info) per second of invocation. Bottom: the latency of every
completed operation (log scale). Each fault's window (injected to healed)
is shaded and labelled, so a dip or a latency spike can be read against the
fault that caused it.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt
from matplotlib.patches import Patch

from tests.chaos.history import Op
from tests.chaos.nemesis import Fault

__all__ = ["plot_timeline"]

_COLORS = {"ok": "tab:green", "fail": "tab:red", "info": "tab:orange"}


def plot_timeline(ops: Sequence[Op], faults: Sequence[Fault], t0: float, path: Path) -> None:
    """Write the timeline of ``ops`` and ``faults`` (times relative to ``t0``) to ``path``."""
    end = max((op.complete or op.invoke for op in ops), default=t0) - t0
    seconds = max(1, math.ceil(end))
    fig, (rate, latency) = plt.subplots(
        2, 1, figsize=(max(10.0, min(24.0, seconds / 25)), 8), sharex=True
    )
    for status in ("ok", "fail", "info"):
        per_second: Counter[int] = Counter()
        for op in ops:
            if op.status == status:
                at = op.invoke if op.complete is None else op.complete
                per_second[int(at - t0)] += 1
        xs = list(range(seconds + 1))
        rate.plot(xs, [per_second[x] for x in xs], color=_COLORS[status], lw=0.8, label=status)
    rate.set_ylabel("operations / s")
    rate.legend(loc="upper right", fontsize=8)
    for status in ("ok", "fail"):
        done = [op for op in ops if op.status == status and op.complete is not None]
        latency.scatter(
            [op.complete - t0 for op in done if op.complete is not None],
            [max(1e-4, (op.complete or 0) - op.invoke) * 1000 for op in done],
            s=2,
            color=_COLORS[status],
            label=status,
            alpha=0.5,
            linewidths=0,
        )
    latency.set_yscale("log")
    latency.set_ylabel("latency (ms)")
    latency.set_xlabel("seconds since the start")
    latency.legend(loc="upper right", fontsize=8)
    # One colour per kind of fault, named in the legend below.
    names = sorted({f.name for f in faults})
    palette = plt.get_cmap("tab20")
    colors = {name: palette(k % 20) for k, name in enumerate(names)}
    for f in faults:
        until = (f.healed if f.healed is not None else end + t0) - t0
        for ax in (rate, latency):
            ax.axvspan(f.injected - t0, until, color=colors[f.name], alpha=0.25, lw=0)
        rate.annotate(
            f.name,
            (f.injected - t0, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=6,
            va="top",
        )
    rate.set_xlim(0, seconds)
    fig.tight_layout()
    if names:
        handles = [Patch(color=colors[n], alpha=0.4, label=n) for n in names]
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(names)), fontsize=8)
        fig.subplots_adjust(bottom=0.08 + 0.03 * math.ceil(len(names) / 6))
    fig.savefig(path, dpi=110)
    plt.close(fig)
