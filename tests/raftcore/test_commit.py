"""Commitment (Raft paper 5.3, 5.4.2; dissertation 10.2.1 for the leader's own disk)."""

from __future__ import annotations

from raftcore import UpdateFlags
from tests.raftcore.harness import HEARTBEAT_TIMEOUT, Cluster, barrier, cmd


def leader_with_one_new_entry() -> tuple[Cluster, int]:
    """Server 1 leads term 2 and has just appended x; nobody has received or persisted it."""
    c = Cluster(3)
    c.elect(1)
    c.submit(1, b"x")
    return c, c.raft(1).last_index


def replicate(c: Cluster, follower: int) -> None:
    """The follower receives, persists and acknowledges what the leader sent it."""
    c.deliver(src=1, dst=follower)
    c.persist(follower)
    c.deliver(src=follower, dst=1)


def test_commit_advances_when_a_majority_of_voters_match() -> None:
    c, index = leader_with_one_new_entry()
    c.persist(1)
    assert c.raft(1).commit_index < index

    c.deliver(src=1, dst=2)
    c.persist(2)
    [update] = c.deliver(src=2, dst=1)

    assert c.raft(1).commit_index == index
    assert update.flags & UpdateFlags.COMMIT_INDEX
    assert c[1].applied_entries[-1] == cmd(2, b"x")
    assert c.raft(1).match_index(2) == index


def test_leader_counts_its_own_entries_only_once_persisted() -> None:
    c, index = leader_with_one_new_entry()

    replicate(c, 2)  # 1 of 3 (the leader's own write has not landed)

    assert c.raft(1).commit_index < index

    update = c.persist(1)  # now 2 of 3

    assert update is not None
    assert update.flags & UpdateFlags.COMMIT_INDEX
    assert c.raft(1).commit_index == index


def test_leader_may_commit_before_its_own_write_lands() -> None:
    c, index = leader_with_one_new_entry()

    replicate(c, 2)
    replicate(c, 3)  # the followers alone are a majority

    assert c[1].pending  # the leader's write is still in flight
    assert c.raft(1).commit_index == index


def test_followers_learn_the_commit_index_from_the_leader() -> None:
    c, index = leader_with_one_new_entry()
    c.persist(1)
    replicate(c, 2)
    assert c.raft(2).commit_index < index

    c.advance(HEARTBEAT_TIMEOUT)
    [update] = c.deliver(src=1, dst=2)

    assert c.raft(2).commit_index == index
    assert update.flags & UpdateFlags.COMMIT_INDEX
    assert c[2].applied_entries[-1] == cmd(2, b"x")


def test_commit_needs_a_majority_of_five() -> None:
    c = Cluster(5)
    c.elect(1)
    c.submit(1, b"x")
    index = c.raft(1).last_index
    c.persist(1)

    replicate(c, 2)
    assert c.raft(1).commit_index < index  # 2 of 5

    replicate(c, 3)
    assert c.raft(1).commit_index == index  # 3 of 5


def test_old_term_entry_on_a_majority_is_not_committed_by_counting_replicas() -> None:
    # Figure 8 of the Raft paper. Server 1 led term 2 and appended x, which
    # reached nobody; server 3 led term 3 and appended y, which reached nobody.
    c = Cluster(
        3,
        terms={1: 3, 2: 3, 3: 3},
        logs={1: [cmd(2, b"x")], 3: [cmd(3, b"y")]},
    )
    # Server 1 wins term 4 with server 2's vote and appends a barrier (index 3).
    c.fire_timeout(1)
    c.deliver_from(1)
    c.deliver_to(1)
    assert c.raft(1).current_term == 4
    assert c[1].log == [c[1].log[0], cmd(2, b"x"), barrier(4)]

    # It repairs server 2's log; its own write of the barrier has not landed.
    for _ in range(4):
        replicate(c, 2)
        c.advance(HEARTBEAT_TIMEOUT)
    assert c[2].disk.entries[1:] == [cmd(2, b"x"), barrier(4)]
    assert c.raft(1).match_index(2) == 3

    # x (term 2) is on a majority (servers 1 and 2), the barrier only on
    # server 2. x must not count as committed: server 3, whose y has term 3,
    # could still win with the vote of a server holding only x.
    assert c.raft(1).commit_index < 2

    # Once the current-term barrier is on a majority, both commit.
    c.persist(1)

    assert c.raft(1).commit_index == 3
    assert c[1].applied_entries[-2:] == [cmd(2, b"x"), barrier(4)]
