"""Catch-up rounds: bringing a server up to date before promoting it."""

from __future__ import annotations

from raftcore import (
    AppendEntriesResult,
    BadId,
    CatchUpStatus,
    Event,
    NotFound,
    NotLeader,
    Role,
    State,
)
from tests.raftcore.harness import HEARTBEAT_TIMEOUT
from tests.raftcore.harness_ext import ExtCluster, assert_refused, leader_cluster

ROUND = 500  # max_catch_up_round_duration
ROUNDS = 3  # max_catch_up_rounds


def lagging_standby(behind: int = 5) -> ExtCluster:
    """Voters 1 (leader) and 2; stand-by 3 is cut off and ``behind`` entries behind."""
    c = leader_cluster(
        3,
        roles={3: Role.STANDBY},
        max_catch_up_round_duration=ROUND,
        max_catch_up_rounds=ROUNDS,
    )
    c.isolate(3)
    c.commands(1, behind)
    c.heartbeat()
    return c


def catch_up(c: ExtCluster, server_id: int) -> None:
    c.step(1, Event.catch_up(c.now, server_id))


def test_status_is_none_until_asked() -> None:
    c = lagging_standby()

    assert c.raft(1).catch_up_status(2) == CatchUpStatus.NONE
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.NONE


def test_server_reaching_the_leaders_last_index_in_time_is_finished() -> None:
    c = lagging_standby()
    catch_up(c, 3)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.RUNNING

    # Stand-by 3 is reachable again: within one heartbeat it holds the whole log.
    c.heal()
    c.heartbeat()

    assert c.raft(1).match_index(3) == c.raft(1).last_index
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.FINISHED


def test_up_to_date_server_is_finished_at_its_next_answer() -> None:
    c = lagging_standby()
    c.heal()
    c.heartbeat()
    catch_up(c, 3)

    c.heartbeat()

    assert c.raft(1).catch_up_status(3) == CatchUpStatus.FINISHED


def test_round_reached_too_late_starts_another_round() -> None:
    # Round 1 aims at the leader's last index now; stand-by 3 receives the
    # missing entries at once but its disk is slow to persist them.
    c = lagging_standby()
    c.heal()
    catch_up(c, 3)
    c.fire_timeout(1)
    for _ in range(3):
        c.deliver()
    target = c.raft(1).last_index
    assert c.raft(3).last_index == target

    # More than a round later (no timer fired meanwhile) a new command arrives,
    # then server 3's acknowledgement: round 1's target reached too slowly.
    c.now += ROUND + 100
    c.submit(1, b"late")
    c.persist(3)
    c.deliver(src=3, dst=1)
    assert c.raft(1).match_index(3) == target
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.RUNNING

    # Round 2 aims at the new command and is done quickly.
    c.settle()
    c.heartbeat()
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.FINISHED


def test_round_outlasting_its_duration_counts_as_slow() -> None:
    # Stand-by 3 stays unreachable through round 1; round 2 then succeeds.
    c = lagging_standby()
    catch_up(c, 3)
    c.advance(ROUND + 100, settle=True)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.RUNNING

    c.heal()
    c.heartbeat()
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.FINISHED


def test_unreachable_server_is_aborted_after_max_rounds() -> None:
    c = lagging_standby()
    catch_up(c, 3)

    # Each round outlasts its duration; the leader notices at its next tick.
    c.advance(ROUNDS * ROUND, settle=True)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.RUNNING

    c.advance(ROUNDS * HEARTBEAT_TIMEOUT + 100, settle=True)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.ABORTED
    # The leader and the rest of the cluster are fine.
    assert c.raft(1).state == State.LEADER


def test_aborted_catch_up_can_be_started_again() -> None:
    c = lagging_standby()
    catch_up(c, 3)
    c.advance(ROUNDS * (ROUND + HEARTBEAT_TIMEOUT) + 100, settle=True)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.ABORTED

    catch_up(c, 3)
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.RUNNING
    c.heal()
    c.heartbeat()
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.FINISHED


def test_losing_leadership_aborts_running_catch_ups() -> None:
    c = lagging_standby()
    catch_up(c, 3)

    # Leader 1 learns of term 5 from server 2 and steps down.
    c.send(2, 1, AppendEntriesResult(term=5, rejected=0, last_log_index=0))

    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).catch_up_status(3) == CatchUpStatus.ABORTED


def test_new_server_is_caught_up_then_promoted() -> None:
    # The MemberAdd path: join as stand-by, catch up, become a voter.
    c = leader_cluster(3, max_catch_up_round_duration=ROUND)
    c.commands(1, 10)
    c.add_server(4)
    c.change(1, c.with_role(4, Role.STANDBY))
    catch_up(c, 4)
    c.settle()
    c.heartbeat()
    assert c.raft(1).catch_up_status(4) == CatchUpStatus.FINISHED

    index = c.change(1, c.with_role(4, Role.VOTER))
    c.settle()
    c.heartbeat()

    assert c.raft(1).commit_index >= index
    assert c.raft(4).role == Role.VOTER
    assert [s.id for s in c.raft(1).configuration.voters] == [1, 2, 3, 4]


# -- refused requests ---------------------------------------------------------------


def test_catch_up_on_a_follower_is_refused() -> None:
    c = lagging_standby()

    assert_refused(c, 2, Event.catch_up(c.now, 3), NotLeader)


def test_catch_up_of_self_or_a_spare_is_a_bad_id() -> None:
    c = leader_cluster(3, roles={3: Role.SPARE})

    assert_refused(c, 1, Event.catch_up(c.now, 1), BadId)
    assert_refused(c, 1, Event.catch_up(c.now, 3), BadId)


def test_catch_up_of_an_unknown_server_is_not_found() -> None:
    c = lagging_standby()

    assert_refused(c, 1, Event.catch_up(c.now, 9), NotFound)
