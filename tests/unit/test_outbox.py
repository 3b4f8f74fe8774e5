"""The outbox merges what one loop turn sends: per destination, back-to-back
AppendEntries become one (entries in order), successful results become the
latest; anything else, and the order per destination, stays as it was."""

from __future__ import annotations

from kvstore.node.outbox import coalesce
from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Entry,
    EntryType,
    Message,
    RequestVote,
)


def entry(n: int) -> Entry:
    return Entry(2, EntryType.COMMAND, b"w%d" % n)


def append(to: int, prev: int, count: int, commit: int = 0, term: int = 2) -> Message:
    """An AppendEntries to ``to`` carrying entries prev+1 .. prev+count."""
    entries = [entry(prev + 1 + i) for i in range(count)]
    return Message(to, f"m{to}", AppendEntries(term, prev, term, commit, entries))


def result(to: int, last: int, rejected: int = 0, context: int = 0) -> Message:
    return Message(to, f"m{to}", AppendEntriesResult(2, rejected, last, 0, 100, context))


def test_one_append_per_follower_with_every_entry_in_order() -> None:
    turn = [append(2, 10, 1, commit=8), append(3, 10, 1)]
    for i in range(1, 12):  # eleven more writes in the same turn
        turn += [append(2, 10 + i, 1, commit=8 + i), append(3, 10 + i, 1)]
    merged = coalesce(turn)
    assert [m.server_id for m in merged] == [2, 3]
    for m in merged:
        assert isinstance(m.payload, AppendEntries)
        assert m.payload.prev_log_index == 10 and m.payload.prev_log_term == 2
        assert [e.data for e in m.payload.entries] == [b"w%d" % n for n in range(11, 23)]
    assert merged[0].payload.leader_commit == 19
    assert merged[1].payload.leader_commit == 0


def test_appends_that_do_not_follow_on_stay_apart() -> None:
    gap = [append(2, 10, 2), append(2, 13, 1)]  # entry 13 is missing
    assert len(coalesce(gap)) == 2
    new_term = [append(2, 10, 1), append(2, 11, 1, term=3)]
    assert len(coalesce(new_term)) == 2


def test_another_message_between_appends_keeps_its_place() -> None:
    vote = Message(2, "m2", RequestVote(3, 1, 11, 2))
    merged = coalesce([append(2, 10, 1), append(2, 11, 1), vote, append(2, 12, 1)])
    assert [type(m.payload) for m in merged] == [AppendEntries, RequestVote, AppendEntries]
    assert [len(m.payload.entries) for m in (merged[0], merged[2])] == [2, 1]  # type: ignore[union-attr]


def test_successful_results_merge_into_the_furthest_one() -> None:
    merged = coalesce([result(1, 11, context=4), result(1, 14, context=5), result(1, 12)])
    assert len(merged) == 1
    payload = merged[0].payload
    assert isinstance(payload, AppendEntriesResult)
    assert (payload.last_log_index, payload.context, payload.rejected) == (14, 5, 0)


def test_a_rejection_is_never_merged_away() -> None:
    merged = coalesce([result(1, 11), result(1, 9, rejected=12), result(1, 12)])
    assert [m.payload.rejected for m in merged] == [0, 12, 0]  # type: ignore[union-attr]
