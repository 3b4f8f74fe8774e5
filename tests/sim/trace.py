"""A short, lazily formatted trace of the last simulator events.

Formatting every event as text would cost more than the Raft step itself, so
the trace keeps raw arguments and formats only when a failure is reported (or
immediately, in verbose replays).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Entry,
    InstallSnapshot,
    RequestVote,
    RequestVoteResult,
    TimeoutNow,
)

logger = logging.getLogger("sim")


def describe(value: Any) -> str:
    """A one-line summary of a message payload or entry (entries' data is elided)."""
    if isinstance(value, AppendEntries):
        span = ""
        if value.entries:
            first = value.prev_log_index + 1
            span = f" entries={first}..{first + len(value.entries) - 1}"
        return (
            f"AppendEntries(term={value.term} prev={value.prev_log_index}/"
            f"{value.prev_log_term} commit={value.leader_commit}{span})"
        )
    if isinstance(value, AppendEntriesResult):
        return (
            f"AppendEntriesResult(term={value.term} rejected={value.rejected} "
            f"last={value.last_log_index})"
        )
    if isinstance(value, RequestVote):
        extra = " pre" if value.pre_vote else ""
        extra += " disrupt" if value.disrupt_leader else ""
        return (
            f"RequestVote(term={value.term} cand={value.candidate_id} "
            f"last={value.last_log_index}/{value.last_log_term}{extra})"
        )
    if isinstance(value, RequestVoteResult):
        extra = " pre" if value.pre_vote else ""
        return f"RequestVoteResult(term={value.term} granted={value.vote_granted}{extra})"
    if isinstance(value, InstallSnapshot):
        return f"InstallSnapshot(term={value.term} last={value.last_index}/{value.last_term})"
    if isinstance(value, TimeoutNow):
        return f"TimeoutNow(term={value.term} last={value.last_log_index}/{value.last_log_term})"
    if isinstance(value, Entry):
        return f"{value.type.name}/{value.term}:{value.data[:16]!r}"
    return str(value)


class Trace:
    """A ring buffer of (time, format, args); ``verbose`` also logs each line at once."""

    def __init__(self, size: int = 60, verbose: bool = False) -> None:
        self._lines: deque[tuple[int, str, tuple[Any, ...]]] = deque(maxlen=size)
        self.verbose = verbose

    def add(self, time: int, fmt: str, *args: Any) -> None:
        self._lines.append((time, fmt, args))
        if self.verbose:
            logger.info("%s", self._format(time, fmt, args))

    @staticmethod
    def _format(time: int, fmt: str, args: tuple[Any, ...]) -> str:
        return f"t={time:>7} " + fmt.format(*(describe(a) for a in args))

    def lines(self) -> list[str]:
        return [self._format(*line) for line in self._lines]
