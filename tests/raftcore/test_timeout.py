"""``r.timeout`` is the time of the next due TIMEOUT; updates say when it moves.

The harness checks every step of every scenario: a move of ``r.timeout``
without the TIMEOUT flag, a timeout not in the future, and a term or vote
change without CURRENT_TERM/VOTED_FOR (which would not be persisted) are all
recorded in ``cluster.violations``.
"""

from __future__ import annotations

from raftcore import AppendEntries, State, UpdateFlags
from tests.raftcore.harness import ELECTION_TIMEOUT, HEARTBEAT_TIMEOUT, Cluster


def busy_scenario(**options: object) -> Cluster:
    """Elections, replication, a partition, a step-down, a crash and a restart."""
    c = Cluster(3, **options)
    c.elect(1)
    for i in range(5):
        c.submit(1, b"%d" % i)
    c.settle()
    c.advance(3 * HEARTBEAT_TIMEOUT, settle=True)
    c.isolate(1)
    c.advance(3 * ELECTION_TIMEOUT, settle=True)
    c.heal()
    c.advance(3 * ELECTION_TIMEOUT, settle=True)
    c.restart(2)
    c.advance(3 * ELECTION_TIMEOUT, settle=True)
    return c


def test_every_change_of_the_timeout_is_flagged() -> None:
    c = busy_scenario()

    assert [v for v in c.violations if "r.timeout" in v] == []


def test_every_change_of_the_timeout_is_flagged_with_pre_vote() -> None:
    c = busy_scenario(pre_vote=True)

    assert [v for v in c.violations if "r.timeout" in v] == []


def test_every_change_of_term_or_vote_is_flagged() -> None:
    c = busy_scenario()

    assert [v for v in c.violations if "term/vote" in v] == []


def test_busy_scenario_ends_with_one_leader() -> None:
    c = busy_scenario()

    assert len(c.leaders()) == 1


def test_leader_timeout_is_the_next_heartbeat() -> None:
    c = Cluster(3)
    c.elect(1)

    assert c.now < c.raft(1).timeout <= c.now + HEARTBEAT_TIMEOUT

    mark = len(c[1].sent)
    update = c.fire_timeout(1)

    assert len(c.sent(1, kind=AppendEntries, since=mark)) == 2
    assert update.flags & UpdateFlags.TIMEOUT
    assert c.now < c.raft(1).timeout <= c.now + HEARTBEAT_TIMEOUT


def test_follower_timeout_restarts_on_each_append_entries() -> None:
    c = Cluster(3)
    c.elect(1)
    c.advance(ELECTION_TIMEOUT // 2)
    before = c.raft(2).timeout

    update = c.deliver(src=1, dst=2)[0]  # the first of several heartbeats

    assert update.flags & UpdateFlags.TIMEOUT
    timeout = c.raft(2).timeout
    assert timeout > before
    assert c.now + ELECTION_TIMEOUT <= timeout < c.now + 2 * ELECTION_TIMEOUT


def test_nothing_happens_between_timeouts() -> None:
    # Firing TIMEOUT only when r.timeout comes is enough to drive everything:
    # with no messages delivered, a follower becomes candidate exactly then.
    c = Cluster(3)
    due = c.raft(1).timeout

    c.advance(due - c.now - 1)
    assert c.raft(1).state == State.FOLLOWER

    c.advance(1)
    assert c.raft(1).state == State.CANDIDATE
