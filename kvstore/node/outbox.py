"""What the updates of one loop turn ask for, merged before it leaves.

Each client write is its own SUBMIT, so a busy leader's turn produces many
small updates. Carrying them out one by one would cost a disk request and an
AppendEntries per follower per write; merged, a turn costs one group-commit
request and one AppendEntries per follower, and the follower steps, persists
and answers once. Order is kept per destination, and term and vote still go
to disk before any message of the turn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from kvstore.storage import Persist
from raftcore import AppendEntries, AppendEntriesResult, Entry, Message, Update, UpdateFlags

_CURRENT_TERM = int(UpdateFlags.CURRENT_TERM)
_VOTED_FOR = int(UpdateFlags.VOTED_FOR)


@dataclass
class Turn:
    """One turn's merged work: a disk write (maybe none) and messages."""

    persist: Persist | None
    hard_state: bool
    last_index: int  # last entry index written, 0 if no entries
    messages: list[Message] = field(default_factory=list)


class Outbox:
    def __init__(self) -> None:
        self._term: int | None = None
        self._voted_for: int | None = None
        self._entries_index = 0
        self._entries: list[Entry] = []
        self._messages: list[Message] = []

    def __bool__(self) -> bool:
        return bool(
            self._messages or self._entries or self._term is not None or self._voted_for is not None
        )

    def add(self, update: Update, term: int, voted_for: int) -> None:
        """Take what ``update`` asks to persist and send (term/vote as they are now)."""
        flags = int(update.flags)
        if flags & _CURRENT_TERM:
            self._term = term
        if flags & _VOTED_FOR:
            self._voted_for = voted_for
        if update.entries:
            index = update.entries_index
            if not self._entries or index < self._entries_index:
                self._entries_index, self._entries = index, list(update.entries)
            else:
                del self._entries[index - self._entries_index :]
                self._entries.extend(update.entries)
        if update.messages:
            self._messages.extend(update.messages)

    def take(self) -> Turn:
        persist = None
        hard_state = self._term is not None or self._voted_for is not None
        last = 0
        if hard_state or self._entries:
            persist = Persist(
                term=self._term,
                voted_for=self._voted_for,
                entries_index=self._entries_index if self._entries else None,
                entries=self._entries,
            )
            if self._entries:
                last = self._entries_index + len(self._entries) - 1
        turn = Turn(persist, hard_state, last, coalesce(self._messages))
        self._term = self._voted_for = None
        self._entries_index, self._entries, self._messages = 0, [], []
        return turn


def coalesce(messages: list[Message]) -> list[Message]:
    """Merge back-to-back AppendEntries (and their successful results) per destination.

    A busy leader's turn holds an AppendEntries per write per follower: the
    runs are collected first and each merged message is built once, so the
    work stays linear in the number of entries.
    """
    out: list[Message] = []
    runs: list[list[object]] = []  # payloads of each message in out
    open_run: dict[int, int] = {}  # destination -> position in out of its last message
    for message in messages:
        at = open_run.get(message.server_id)
        if at is not None and _mergeable(runs[at][-1], message.payload):
            runs[at].append(message.payload)
            continue
        open_run[message.server_id] = len(out)
        out.append(message)
        runs.append([message.payload])
    for at, run in enumerate(runs):
        if len(run) > 1:
            first = out[at]
            out[at] = Message(first.server_id, first.server_address, _merged(run))
    return out


def _mergeable(first: object, second: object) -> bool:
    if isinstance(first, AppendEntries) and isinstance(second, AppendEntries):
        return first.term == second.term and second.prev_log_index == first.prev_log_index + len(
            first.entries
        )
    if isinstance(first, AppendEntriesResult) and isinstance(second, AppendEntriesResult):
        return first.term == second.term and not first.rejected and not second.rejected
    return False


def _merged(run: list[object]) -> AppendEntries | AppendEntriesResult:
    """One message for a run that :func:`_mergeable` accepted pairwise."""
    if isinstance(run[0], AppendEntries):
        appends = cast(list[AppendEntries], run)
        first = appends[0]
        entries: list[Entry] = []
        for append in appends:
            entries.extend(append.entries)
        return AppendEntries(
            first.term,
            first.prev_log_index,
            first.prev_log_term,
            max(a.leader_commit for a in appends),
            entries,
            max(a.context for a in appends),
        )
    results = cast(list[AppendEntriesResult], run)
    last = results[-1]
    return AppendEntriesResult(
        last.term,
        0,
        max(r.last_log_index for r in results),
        last.features,
        last.capacity,
        max(r.context for r in results),
    )
