"""Log replication: SUBMIT, AppendEntries, persistence, heartbeats, pipelining, barriers."""

from __future__ import annotations

import pytest

from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    EntryType,
    Event,
    Message,
    NotLeader,
    Raft,
    State,
    UpdateFlags,
)
from tests.raftcore.harness import (
    ELECTION_TIMEOUT,
    HEARTBEAT_TIMEOUT,
    Cluster,
    barrier,
    cmd,
    entries_sent,
)


def leader_cluster(n: int = 3, **options: object) -> Cluster:
    c = Cluster(n, **options)
    c.elect(1)
    return c


def successes(messages: list[Message], index: int) -> list[AppendEntriesResult]:
    """The acknowledgements among ``messages`` that cover ``index``."""
    return [
        m.payload
        for m in messages
        if isinstance(m.payload, AppendEntriesResult)
        and m.payload.rejected == 0
        and m.payload.last_log_index >= index
    ]


# -- SUBMIT -----------------------------------------------------------------


def test_submit_on_leader_appends_and_sends_append_entries() -> None:
    c = leader_cluster()
    last = c.raft(1).last_index
    last_term = c[1].log[-1].term

    update = c.submit(1, b"x")

    assert c.raft(1).last_index == last + 1
    assert update.flags & UpdateFlags.ENTRIES
    assert update.entries_index == last + 1
    assert update.entries == [cmd(2, b"x")]
    sent = {m.server_id: m.payload for m in update.messages}
    assert set(sent) == {2, 3}
    for ae in sent.values():
        assert isinstance(ae, AppendEntries)
        assert (ae.term, ae.prev_log_index, ae.prev_log_term) == (2, last, last_term)
        assert list(ae.entries) == [cmd(2, b"x")]


def test_submitted_data_is_shared_not_copied() -> None:
    c = leader_cluster()
    data = b"payload" * 100

    update = c.submit(1, data)

    [ae, _] = [m.payload for m in update.messages]
    assert ae.entries[0].data is data


@pytest.mark.parametrize("state", [State.FOLLOWER, State.CANDIDATE])
def test_submit_on_a_non_leader_raises_and_changes_nothing(state: State) -> None:
    c = leader_cluster()
    if state == State.CANDIDATE:
        c.isolate(2)
        c.fire_timeout(2)
    r = c.raft(2)
    assert r.state == state
    before = queries(r)

    with pytest.raises(NotLeader) as error:
        c.submit(2, b"nope")

    assert error.value.code == "RAFT_NOTLEADER"
    assert queries(r) == before
    # Nothing was queued either: it shows up in no later update.
    c.heal()
    c.advance(ELECTION_TIMEOUT, settle=True)
    assert all(e.data != b"nope" for u in c.updates(2) for e in u.entries)


def queries(r: Raft) -> tuple[object, ...]:
    return (r.current_term, r.voted_for, r.state, r.leader, r.commit_index, r.last_index, r.timeout)


# -- followers ----------------------------------------------------------------


def test_follower_appends_and_acknowledges_only_once_persisted() -> None:
    c = leader_cluster()
    c.submit(1, b"x")
    index = c.raft(1).last_index

    [update] = c.deliver(src=1, dst=2)

    assert update.flags & UpdateFlags.ENTRIES
    assert update.entries_index == index
    assert update.entries == [cmd(2, b"x")]
    assert successes(update.messages, index) == []

    update = c.persist(2)

    assert update is not None
    [ack] = successes(update.messages, index)
    assert ack.term == 2
    assert ack.last_log_index == index
    assert [m.server_id for m in update.messages] == [1]


def test_follower_answers_a_heartbeat_at_once() -> None:
    c = leader_cluster()
    c.advance(HEARTBEAT_TIMEOUT)

    [update] = c.deliver(src=1, dst=2)

    [reply] = update.messages
    assert isinstance(reply.payload, AppendEntriesResult)
    assert reply.payload.rejected == 0
    assert reply.payload.last_log_index == c.raft(1).last_index


def test_follower_resets_its_election_timer_on_append_entries() -> None:
    c = leader_cluster()

    c.advance(5 * ELECTION_TIMEOUT, settle=True)

    assert c.raft(2).state == State.FOLLOWER
    assert c.raft(2).current_term == 2
    assert c.raft(2).timeout >= c.now + ELECTION_TIMEOUT - HEARTBEAT_TIMEOUT


# -- heartbeats -----------------------------------------------------------------


def test_idle_leader_sends_empty_append_entries_every_heartbeat_timeout() -> None:
    c = leader_cluster()
    mark = len(c[1].sent)

    c.advance(HEARTBEAT_TIMEOUT - 1, settle=True)
    assert c.sent(1, kind=AppendEntries, since=mark) == []

    c.advance(1, settle=True)
    heartbeats = c.sent(1, kind=AppendEntries, since=mark)
    assert [e.dst for e in c[1].sent[mark:] if isinstance(e.payload, AppendEntries)] == [2, 3]
    assert all(list(ae.entries) == [] for ae in heartbeats)

    mark = len(c[1].sent)
    c.advance(10 * HEARTBEAT_TIMEOUT, settle=True)
    assert len(c.sent(1, 2, AppendEntries, since=mark)) == 10


def test_heartbeats_carry_the_leader_commit() -> None:
    c = leader_cluster()
    mark = len(c[1].sent)

    c.advance(HEARTBEAT_TIMEOUT)

    for ae in c.sent(1, kind=AppendEntries, since=mark):
        assert ae.leader_commit == c.raft(1).commit_index


# -- pipelining ---------------------------------------------------------------


def test_inflight_entries_are_bounded_by_max_inflight_entries() -> None:
    c = leader_cluster(max_inflight_entries=4)
    matched = c.raft(1).match_index(2)
    mark = len(c[1].sent)

    for i in range(10):  # followers receive nothing, so they answer nothing
        c.submit(1, b"%d" % i)
    c.advance(3 * HEARTBEAT_TIMEOUT)

    sent = entries_sent(c.sent(1, 2, AppendEntries, since=mark))
    assert sent == set(range(matched + 1, matched + 5))


def test_acknowledgements_open_the_pipeline_again() -> None:
    c = leader_cluster(max_inflight_entries=4)
    matched = c.raft(1).match_index(2)
    for i in range(10):
        c.submit(1, b"%d" % i)
    mark = len(c[1].sent)

    c.deliver(src=1, dst=2)
    c.persist(2)
    c.deliver(src=2, dst=1)

    sent = entries_sent(c.sent(1, 2, AppendEntries, since=mark))
    assert sent == set(range(matched + 5, matched + 9))


def full_window(n: int = 3) -> Cluster:
    """Server 1 leads with max_inflight_entries=4 and 10 new entries: each
    follower's window holds 4 of them and 6 wait (nothing delivered yet)."""
    c = leader_cluster(n, max_inflight_entries=4)
    for i in range(10):
        c.submit(1, b"%d" % i)
    return c


def test_a_result_that_does_not_move_match_sends_nothing_when_the_window_is_full() -> None:
    c = full_window()
    matched = c.raft(1).match_index(2)
    term = c.raft(1).current_term

    # An answer that acknowledges nothing new (a duplicate, or one to a heartbeat).
    update = c.send(2, 1, AppendEntriesResult(term=term, rejected=0, last_log_index=matched))

    assert c.raft(1).match_index(2) == matched
    assert update.messages == []


def test_a_result_that_moves_match_sends_entries_never_an_empty_append_entries() -> None:
    c = full_window()
    matched = c.raft(1).match_index(2)
    term = c.raft(1).current_term
    mark = len(c[1].sent)

    update = c.send(2, 1, AppendEntriesResult(term=term, rejected=0, last_log_index=matched + 1))
    # One more slot in the window: exactly the next entry goes out.
    [ae] = c.sent(1, 2, AppendEntries, since=mark)
    assert entries_sent([ae]) == {matched + 5}
    assert [m.server_id for m in update.messages] == [2]

    # The window is full again: a further answer for the same index sends nothing.
    update = c.send(2, 1, AppendEntriesResult(term=term, rejected=0, last_log_index=matched + 1))
    assert update.messages == []


def test_submit_sends_nothing_to_a_follower_whose_window_is_full() -> None:
    c = full_window()

    update = c.submit(1, b"more")

    assert update.flags & UpdateFlags.ENTRIES
    assert update.messages == []


def test_a_full_window_whose_entries_were_lost_is_repaired_at_the_next_heartbeat() -> None:
    c = full_window()
    c.drop(src=1)  # the 4 entries in each window are lost
    mark = len(c[1].sent)

    c.advance(HEARTBEAT_TIMEOUT, settle=True)

    # The heartbeat is rejected, the leader probes back and sends the rest.
    assert entries_sent(c.sent(1, 2, AppendEntries, since=mark)) >= set(
        range(c.raft(2).commit_index + 1, c.raft(1).last_index + 1)
    )
    assert c.raft(2).last_index == c.raft(1).last_index
    assert c.raft(1).commit_index == c.raft(1).last_index


def test_entries_are_sent_without_waiting_for_acknowledgements() -> None:
    c = leader_cluster()
    mark = len(c[1].sent)

    for i in range(3):
        c.submit(1, b"%d" % i)

    assert len(c.sent(1, 2, AppendEntries, since=mark)) == 3


# -- barriers -----------------------------------------------------------------


def test_new_leader_appends_a_barrier_when_its_log_has_uncommitted_entries() -> None:
    c = Cluster(3, terms={1: 2, 2: 2, 3: 2}, logs={i: [cmd(2, b"a")] for i in (1, 2, 3)})

    c.elect(1)

    assert c[1].log[2] == barrier(3)
    [update] = [u for u in c.updates(1) if u.flags & UpdateFlags.ENTRIES][:1]
    assert update.entries_index == 3
    assert update.entries == [barrier(3)]
    # The barrier commits, and with it the entry of term 2 before it.
    assert c.raft(1).commit_index == 3
    assert c[1].applied_entries[-2:] == [cmd(2, b"a"), barrier(3)]


def test_new_leader_appends_no_barrier_when_its_log_is_committed() -> None:
    c = leader_cluster()
    c.submit(1, b"x")
    c.settle()
    c.advance(HEARTBEAT_TIMEOUT, settle=True)  # followers learn the commit index
    assert c.raft(2).commit_index == c.raft(2).last_index
    last = c.raft(2).last_index
    c.crash(1)
    c.restart(3)  # forgets leader 1, so it will vote

    c.elect(2)

    assert c.raft(2).last_index == last
    assert c[2].log[-1] == cmd(2, b"x")


def test_barrier_entries_replicate_like_commands() -> None:
    c = leader_cluster()

    update = c.submit(1, b"", type=EntryType.BARRIER)
    c.settle()
    c.advance(HEARTBEAT_TIMEOUT, settle=True)

    index = update.entries_index
    for i in c.ids:
        assert c[i].disk.entries[index - 1] == barrier(2)
        assert c.raft(i).commit_index >= index


def test_persisted_report_that_does_not_advance_is_ignored() -> None:
    c = leader_cluster()
    c.submit(1, b"x")
    c.deliver(src=1, dst=2)
    c.persist(2)
    before = queries(c.raft(2))

    update = c.step(2, Event.persisted_entries(c.now, 1))

    assert update.messages == []
    assert not update.flags & (UpdateFlags.ENTRIES | UpdateFlags.COMMIT_INDEX)
    assert queries(c.raft(2)) == before
