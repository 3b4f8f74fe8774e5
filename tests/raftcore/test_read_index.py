"""ReadIndex (dissertation 6.4), raftcore's extension beyond C-Raft: a read gets
the commit index once a majority confirmed the leader after the read arrived."""

from __future__ import annotations

import pytest

from raftcore import AppendEntries, Event, NotLeader, UpdateFlags
from tests.raftcore.harness import HEARTBEAT_TIMEOUT, Cluster


def reads_of(c: Cluster, server_id: int) -> list[tuple[int, int]]:
    return [read for u in c.updates(server_id) for read in u.reads]


def leader_with_commit(n: int, **options: object) -> Cluster:
    """Server 1 leads and has committed an entry of its own term."""
    c = Cluster(n, **options)
    c.elect(1)
    c.submit(1, b"a")
    c.settle()
    assert c.raft(1).log.term_of(c.raft(1).commit_index) == c.raft(1).current_term
    return c


def test_read_is_confirmed_by_a_majority_round() -> None:
    c = leader_with_commit(3)
    commit = c.raft(1).commit_index

    update = c.step(1, Event.read_index(c.now, 7))
    # Not yet: only the leader itself vouches for its leadership.
    assert update.reads == []
    rounds = [e.payload.context for e in c.network if isinstance(e.payload, AppendEntries)]
    assert sorted(rounds) == [1, 1]  # a heartbeat carrying round 1 to each voter

    # One follower answers: with the leader that is a majority of 3.
    c.deliver(dst=2)
    answers = c.deliver(src=2)
    assert answers[0].reads == [(7, commit)]
    assert answers[0].flags & UpdateFlags.READS


def test_read_waits_for_a_majority() -> None:
    c = leader_with_commit(5)
    c.step(1, Event.read_index(c.now, 1))
    c.deliver(dst=2)
    c.deliver(src=2)
    assert reads_of(c, 1) == []  # 2 of 5
    c.deliver(dst=3)
    c.deliver(src=3)
    assert reads_of(c, 1) == [(1, c.raft(1).commit_index)]


def test_answers_to_heartbeats_sent_before_the_read_do_not_confirm_it() -> None:
    c = leader_with_commit(3)
    c.advance(100)  # a plain heartbeat goes out, context 0
    old = [e.payload for e in c.network if e.dst == 2]
    assert [p.context for p in old] == [0]
    c.step(1, Event.read_index(c.now, 3))
    c.deliver(dst=2, kind=AppendEntries)  # delivers both heartbeats to 2, in order
    stale_then_fresh = c.deliver(src=2)
    # The first answer (to the old heartbeat) did not confirm, the second did.
    assert stale_then_fresh[0].reads == []
    assert stale_then_fresh[1].reads == [(3, c.raft(1).commit_index)]


def test_isolated_leader_never_confirms_a_read() -> None:
    c = leader_with_commit(3)
    c.isolate(1)
    c.step(1, Event.read_index(c.now, 9))
    c.advance(500, settle=True)
    assert reads_of(c, 1) == []


def test_new_leader_appends_a_barrier_and_reads_after_it_commits() -> None:
    # The bootstrap entry is committed at START, so a fresh leader has no
    # entry of its own term: the read makes it append one and waits for it.
    c = Cluster(3)
    c.elect(1)
    r = c.raft(1)
    assert r.log.last_term != r.current_term

    update = c.step(1, Event.read_index(c.now, 5))
    assert update.reads == []
    assert [e.type.name for e in update.entries] == ["BARRIER"]
    c.settle()
    assert reads_of(c, 1) == [(5, r.commit_index)]
    assert r.log.term_of(r.commit_index) == r.current_term


def test_read_index_on_a_follower_raises_not_leader_and_changes_nothing() -> None:
    c = leader_with_commit(3)
    before = (c.raft(2).current_term, c.raft(2).commit_index, c.raft(2).timeout)
    with pytest.raises(NotLeader):
        c.step(2, Event.read_index(c.now, 1))
    assert (c.raft(2).current_term, c.raft(2).commit_index, c.raft(2).timeout) == before


def test_single_voter_confirms_at_once() -> None:
    c = Cluster(1)
    c.submit(1, b"a")
    c.persist(1)
    update = c.step(1, Event.read_index(c.now, 4))
    assert update.reads == [(4, c.raft(1).commit_index)]


def test_followers_echo_the_round_even_before_their_entries_are_durable() -> None:
    c = leader_with_commit(3)
    c.submit(1, b"b")
    c.deliver(src=1)  # 2 and 3 append "b" but do not persist it yet
    c.step(1, Event.read_index(c.now, 8))
    c.deliver(src=1)
    answers = c.deliver(src=2)
    assert any(u.reads for u in answers)


def full_windows(n: int, *followers: int) -> Cluster:
    """Server 1 leads with max_inflight_entries=4 and 10 new entries, 4 of them
    in each follower's window; ``followers`` appended those but did not persist them."""
    c = leader_with_commit(n, max_inflight_entries=4)
    for i in range(10):
        c.submit(1, b"%d" % i)
    for follower in followers:
        c.deliver(src=1, dst=follower)
    return c


def exchange(c: Cluster, rounds: int = 20) -> None:
    """Deliver back and forth, writes left pending, until the network is quiet."""
    for _ in range(rounds):
        if not c.network:
            return
        c.deliver()


def test_a_read_round_with_full_windows_completes_with_one_append_entries_per_voter() -> None:
    c = full_windows(3, 2, 3)
    commit = c.raft(1).commit_index
    mark = len(c[1].sent)

    c.step(1, Event.read_index(c.now, 6))
    exchange(c)

    assert reads_of(c, 1) == [(6, commit)]
    assert c.network == []
    for follower in (2, 3):
        [ae] = c.sent(1, follower, AppendEntries, since=mark)
        assert (ae.entries, ae.context) == ([], c.raft(1).read_round)


def test_a_waiting_read_round_with_a_full_window_does_not_ping_pong() -> None:
    # 1 and 2 are cut off from 3, 4 and 5: the round cannot reach a majority,
    # and server 2 answers each AppendEntries of the round at once.
    c = leader_with_commit(5, max_inflight_entries=4)
    c.partition([1, 2], [3, 4, 5])
    for i in range(10):
        c.submit(1, b"%d" % i)
    c.deliver(src=1, dst=2)
    mark = len(c[1].sent)

    c.step(1, Event.read_index(c.now, 4))
    exchange(c)

    assert c.network == []
    assert len(c.sent(1, 2, AppendEntries, since=mark)) == 1
    # The round goes on at heartbeat pace, one AppendEntries per heartbeat timeout.
    mark = len(c[1].sent)
    c.advance(3 * HEARTBEAT_TIMEOUT)
    exchange(c)
    heartbeats = c.sent(1, 2, AppendEntries, since=mark)
    assert [ae.context for ae in heartbeats] == [c.raft(1).read_round] * 3
    assert reads_of(c, 1) == []


def test_a_read_round_whose_append_entries_are_lost_completes_at_the_next_heartbeat() -> None:
    c = full_windows(3, 2, 3)
    commit = c.raft(1).commit_index

    c.step(1, Event.read_index(c.now, 5))
    c.drop(src=1)
    exchange(c)
    assert reads_of(c, 1) == []

    c.advance(HEARTBEAT_TIMEOUT)
    exchange(c)
    assert reads_of(c, 1) == [(5, commit)]


def test_losing_leadership_drops_pending_reads() -> None:
    c = leader_with_commit(3)
    c.isolate(1)
    c.step(1, Event.read_index(c.now, 2))
    c.advance(3000)  # check-quorum: server 1 steps down
    assert c.raft(1).reads_in_round == []
    c.heal()
    c.settle()
    assert reads_of(c, 1) == []
