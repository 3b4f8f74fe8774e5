"""The Raft safety properties, checked incrementally after every step.

The cluster reports what it observes through the ``Observer`` interface; the
no-op base lets benchmarks run without checking. ``Checker`` keeps just enough
history to check each property over the whole run in time proportional to the
entries written, not to the log length times the number of steps:

- election safety: at most one leader per term, ever;
- log matching: every (index, term) ever written anywhere (in-memory views and
  durable disk logs) carries the same entry and the same predecessor term, which
  by induction makes the logs identical up to it;
- leader completeness: an entry seen committed at term T (the term of a server
  whose commit index passed it: no lower than the term that committed it) is
  in the log of every leader of a term above T (checked when a leader is
  elected, when an entry is newly seen committed, and kept true because leaders
  only append);
- state machine safety: no two servers apply different entries at one index;
- commit indexes never decrease within one life of a server;
- vote safety: a server never votes for two candidates in one term, and its
  durable term never goes back.

Durability (acknowledge and commit only what is on disk) and the update
contract are checked by the I/O layer itself, in ``tests/sim/node.py``, since
they compare raftcore's words with the simulated disks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from raftcore import Entry
from tests.sim.log import Log
from tests.sim.trace import Trace

if TYPE_CHECKING:
    from tests.sim.app import Snapshot

REPLAY = "python -m tests.sim.run --seed {seed} -v"


class Observer:
    """What the simulated I/O layer reports; every method is a no-op here."""

    def report(self, problem: str) -> str:
        """The text of a failure: here just the problem."""
        return problem

    def wrote(self, where: str, log: Log, index: int, count: int) -> None:
        """``count`` entries were just written to ``log`` from ``index`` on."""

    def voted(self, server_id: int, term: int, voted_for: int) -> None:
        """Term and vote were persisted."""

    def after_step(
        self, server_id: int, life: int, is_leader: bool, term: int, commit: int, log: Log
    ) -> None:
        """A step completed; ``log`` is the server's in-memory view."""

    def leader_wrote(
        self, server_id: int, term: int, index: int, before: list[Entry], after: Sequence[Entry]
    ) -> None:
        """A leader of ``term`` replaced its entries ``before`` from ``index`` with ``after``."""

    def applied(self, server_id: int, index: int, entry: Entry) -> None:
        """The application of ``server_id`` applied ``entry`` at ``index``."""

    def crashed(self, server_id: int) -> None:
        """The server lost its memory (a new life starts at restart)."""

    def snapshot(self, server_id: int, how: str, snapshot: Snapshot, applied: int) -> None:
        """The application ``how`` ("took", "installed", "restored") ``snapshot``;
        it had applied up to ``applied`` before."""

    def read(self, server_id: int, read_id: int, index: int) -> None:
        """The leader ``server_id`` answered read ``read_id`` with read index ``index``."""


class Checker(Observer):
    """Raises AssertionError, with seed, replay command and trace, on the first violation."""

    def __init__(self, seed: int, trace: Trace, describe_state: Callable[[], str] | None = None):
        self.seed = seed
        self.trace = trace
        self.describe_state = describe_state
        self.leaders: dict[int, int] = {}  # term -> leader id, over the whole run
        # (index, term) -> (entry, term of the entry before it), over every log ever written
        self._entries: dict[tuple[int, int], tuple[Entry, int]] = {}
        self._applied: dict[int, tuple[int, Entry]] = {}  # index -> (first server, entry)
        self._committed: list[tuple[int, Entry] | None] = [None]  # index -> (commit term, entry)
        self._commits: dict[int, tuple[int, int]] = {}  # server -> (life, commit index)
        self._votes: dict[tuple[int, int], int] = {}  # (server, term) -> vote
        self._terms: dict[int, int] = {}  # server -> durable term
        self._active: dict[int, tuple[int, Log]] = {}  # current leaders: id -> (term, view)

    def fail(self, problem: str) -> None:
        raise AssertionError(self.report(problem))

    def report(self, problem: str) -> str:
        """The problem with everything needed to replay and understand it."""
        parts = [
            f"seed {self.seed}: {problem}",
            f"replay: {REPLAY.format(seed=self.seed)}",
        ]
        if self.describe_state is not None:
            parts.append("servers:\n" + self.describe_state())
        parts.append("last events:\n" + "\n".join(self.trace.lines()))
        return "\n".join(parts)

    # log matching ---------------------------------------------------------------

    def wrote(self, where: str, log: Log, index: int, count: int) -> None:
        known = self._entries
        prev_term = log.term_at(index - 1)
        first = index - log.start
        for offset in range(first, min(first + count, len(log.entries))):
            entry = log.entries[offset]
            key = (log.start + offset, entry.term)
            seen = known.get(key)
            if seen is None:
                known[key] = (entry, prev_term)
            elif seen != (entry, prev_term):
                self.fail(
                    f"log matching: {where} has {_show(entry)} at index {key[0]} after term "
                    f"{prev_term}, but another log had {_show(seen[0])} after term {seen[1]}"
                )
            prev_term = entry.term

    # votes and terms --------------------------------------------------------------

    def voted(self, server_id: int, term: int, voted_for: int) -> None:
        if term < self._terms.get(server_id, 0):
            self.fail(f"s{server_id} persisted term {term} below {self._terms[server_id]}")
        self._terms[server_id] = term
        if voted_for:
            earlier = self._votes.setdefault((server_id, term), voted_for)
            if earlier != voted_for:
                self.fail(
                    f"vote safety: s{server_id} voted for s{earlier} and then s{voted_for} "
                    f"in term {term}"
                )

    # leaders, commits ---------------------------------------------------------------

    def after_step(
        self, server_id: int, life: int, is_leader: bool, term: int, commit: int, log: Log
    ) -> None:
        if is_leader:
            active = self._active.get(server_id)
            if active is None or active[0] != term:
                self._elected(server_id, term, log)
        elif server_id in self._active:
            del self._active[server_id]
        last_life, last_commit = self._commits.get(server_id, (life, 0))
        if last_life != life:
            last_commit = 0
        if commit != last_commit:
            if commit < last_commit:
                self.fail(f"s{server_id} commit index went back from {last_commit} to {commit}")
            if commit > log.last_index:
                self.fail(
                    f"s{server_id} commit index {commit} beyond its last index {log.last_index}"
                )
            self._commits[server_id] = (life, commit)
            self._record_commits(server_id, last_commit + 1, commit, term, log)

    def _elected(self, server_id: int, term: int, log: Log) -> None:
        other = self.leaders.setdefault(term, server_id)
        if other != server_id:
            self.fail(f"election safety: s{server_id} and s{other} are both leaders of term {term}")
        self._active[server_id] = (term, log)
        for index in range(1, len(self._committed)):
            known = self._committed[index]
            if known is not None and known[0] < term:
                self._check_has(server_id, term, log, index, known[1])

    def _record_commits(self, server_id: int, first: int, last: int, term: int, log: Log) -> None:
        committed = self._committed
        if len(committed) <= last:
            committed.extend([None] * (last + 1 - len(committed)))
        for index in range(first, last + 1):
            entry = log.get(index)
            if entry is None:  # before the view's start: covered by a snapshot
                continue
            known = committed[index]
            if known is not None:
                if known[1] != entry:
                    self.fail(
                        f"s{server_id} committed {_show(entry)} at index {index}, but "
                        f"{_show(known[1])} was committed there before"
                    )
                if known[0] <= term:
                    continue
            committed[index] = (term, entry)
            for leader, (leader_term, leader_log) in self._active.items():
                if leader_term > term:
                    self._check_has(leader, leader_term, leader_log, index, entry)

    def _check_has(self, leader: int, term: int, log: Log, index: int, entry: Entry) -> None:
        if index >= log.start and log.get(index) != entry:
            self.fail(
                f"leader completeness: s{leader}, leader of term {term}, has "
                f"{_show(log.get(index))} at index {index} where {_show(entry)} was committed"
            )

    def leader_wrote(
        self, server_id: int, term: int, index: int, before: list[Entry], after: Sequence[Entry]
    ) -> None:
        if list(after[: len(before)]) != before:
            self.fail(
                f"leader append-only: s{server_id}, leader of term {term}, rewrote its log "
                f"from index {index} (last index was {index + len(before) - 1})"
            )

    # application --------------------------------------------------------------------

    def applied(self, server_id: int, index: int, entry: Entry) -> None:
        first = self._applied.setdefault(index, (server_id, entry))
        if first[1] != entry:
            self.fail(
                f"state machine safety: s{server_id} applied {_show(entry)} at index {index}, "
                f"s{first[0]} applied {_show(first[1])}"
            )

    def crashed(self, server_id: int) -> None:
        self._active.pop(server_id, None)


def _show(entry: Entry | None) -> str:
    if entry is None:
        return "nothing"
    return f"{entry.type.name}(term {entry.term}, {entry.data[:24]!r})"
