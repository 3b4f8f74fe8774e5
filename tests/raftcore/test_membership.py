"""Membership: roles, single-server changes, uncommitted configurations, removal."""

from __future__ import annotations

from raftcore import (
    AppendEntries,
    CantChange,
    Configuration,
    Entry,
    EntryType,
    Event,
    Invalid,
    Malformed,
    NotLeader,
    RequestVote,
    RequestVoteResult,
    Role,
    Server,
    State,
)
from tests.raftcore.harness import ELECTION_TIMEOUT, configuration
from tests.raftcore.harness_ext import ExtCluster, assert_refused, leader_cluster

# -- a change takes effect when appended ------------------------------------------


def test_change_takes_effect_on_the_leader_when_appended() -> None:
    # Leader 1 adds the new, empty server 4 as a stand-by; nothing is persisted yet.
    c = leader_cluster(3)
    c.add_server(4)
    new = c.with_role(4, Role.STANDBY)

    index = c.change(1, new)

    assert c.raft(1).configuration == new
    assert c.raft(1).commit_index < index
    # ... and the leader starts replicating to server 4 at once.
    assert c.in_flight(src=1, dst=4, kind=AppendEntries)


def test_change_takes_effect_on_a_follower_when_appended() -> None:
    c = leader_cluster(3)
    new = c.with_role(4, Role.STANDBY)
    c.change(1, new)

    # Server 2 receives the CHANGE entry; it has not persisted it yet.
    c.deliver(src=1, dst=2)

    assert c.raft(2).configuration == new
    assert c.raft(3).configuration == configuration(3)


def test_new_server_learns_the_log_and_configuration_from_the_leader() -> None:
    c = leader_cluster(3)
    c.add_server(4)
    assert c.raft(4).role is None

    new = c.with_role(4, Role.STANDBY)
    index = c.change(1, new)
    c.settle()

    assert c.raft(4).configuration == new
    assert c.raft(4).role == Role.STANDBY
    assert c.raft(4).last_index == index
    assert c.raft(1).match_index(4) == index


def test_change_is_rolled_back_when_its_entry_is_truncated() -> None:
    # Leader 1 appends a change removing server 3, but nobody receives it.
    c = leader_cluster(3)
    c.change(1, c.without(3))
    c.drop(src=1)
    assert c.raft(1).configuration == configuration(3).without_server(3)

    # Server 2 or 3 wins an election without it and replicates a command at
    # the same index: server 1 truncates its change and rolls back.
    c.isolate(1)
    leader = c.await_leader([2, 3])
    c.submit(leader, b"x")
    c.heal()
    c.heartbeat()

    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).configuration == configuration(3)
    assert c[1].log == c[leader].log


# -- one change at a time, one server at a time -----------------------------------


def test_second_change_while_first_is_uncommitted_is_refused() -> None:
    c = leader_cluster(3)
    c.change(1, c.with_role(4, Role.STANDBY))

    second = c.with_role(5, Role.STANDBY)
    assert_refused(c, 1, c.change_event(1, second.encode()), CantChange)


def test_commit_without_configuration_event_still_refuses_a_change() -> None:
    # The application of leader 1 is slow: the change commits, yet raftcore
    # hears of it only through the CONFIGURATION event.
    c = leader_cluster(3)
    c.hold(1)
    index = c.change(1, c.with_role(4, Role.STANDBY))
    c.settle()
    assert c.raft(1).commit_index >= index

    second = c.with_role(5, Role.STANDBY)
    assert_refused(c, 1, c.change_event(1, second.encode()), CantChange)

    # A CONFIGURATION event for another index is ignored.
    c.step(1, Event.configuration(c.now, index - 1, configuration(3)))
    assert_refused(c, 1, c.change_event(1, second.encode()), CantChange)

    c.release(1)
    c.change(1, second)
    assert c.raft(1).configuration == second


def test_two_changes_in_one_submit_are_refused() -> None:
    c = leader_cluster(3)
    a = Entry(2, EntryType.CHANGE, c.with_role(4, Role.STANDBY).encode())
    b = Entry(2, EntryType.CHANGE, c.with_role(5, Role.STANDBY).encode())

    assert_refused(c, 1, Event.submit(c.now, [a, b]), CantChange)


def test_change_touching_two_servers_is_invalid() -> None:
    c = leader_cluster(3)
    two_added = c.with_role(4, Role.STANDBY).with_server(5, "s5", Role.STANDBY)
    role_and_removal = c.with_role(2, Role.STANDBY).without_server(3)

    assert_refused(c, 1, c.change_event(1, two_added.encode()), Invalid)
    assert_refused(c, 1, c.change_event(1, role_and_removal.encode()), Invalid)


def test_malformed_change_is_refused() -> None:
    c = leader_cluster(3)
    no_voter = Configuration([Server(1, "s1", Role.STANDBY)])

    assert_refused(c, 1, c.change_event(1, b"not a configuration"), Malformed)
    assert_refused(c, 1, c.change_event(1, no_voter.encode()), Malformed)


def test_follower_refuses_a_change() -> None:
    c = leader_cluster(3)

    assert_refused(c, 2, c.change_event(2, c.with_role(4, Role.STANDBY).encode()), NotLeader)


def test_append_entries_with_malformed_change_is_refused() -> None:
    c = leader_cluster(3)
    r = c.raft(1)
    bad = AppendEntries(
        term=r.current_term,
        prev_log_index=r.last_index,
        prev_log_term=r.current_term,
        leader_commit=r.commit_index,
        entries=[Entry(r.current_term, EntryType.CHANGE, b"\xff")],
    )

    assert_refused(c, 2, c.received(1, bad), Malformed)


def test_refused_change_leaves_nothing_behind() -> None:
    # After a refused change the next submit appends exactly its own entry.
    c = leader_cluster(3)
    assert_refused(c, 1, c.change_event(1, b"junk"), Malformed)
    last = c.raft(1).last_index

    update = c.submit(1, b"x")

    assert update.entries_index == last + 1
    assert update.entries == [Entry(2, EntryType.COMMAND, b"x")]


# -- roles ----------------------------------------------------------------------


def test_standby_receives_entries_but_does_not_count_for_commit() -> None:
    # Voters 1 and 2, stand-by 3: the stand-by holding the new entry commits nothing.
    c = leader_cluster(3, roles={3: Role.STANDBY})
    c.submit(1, b"x")
    index = c.raft(1).last_index
    c.deliver(src=1, dst=3)
    c.persist_all()
    c.deliver(src=3)

    assert c.raft(3).last_index == index
    assert c.raft(1).commit_index < index

    c.settle()
    assert c.raft(1).commit_index == index


def test_spare_receives_nothing() -> None:
    c = leader_cluster(3, roles={3: Role.SPARE})
    c.submit(1, b"x")
    c.heartbeat()

    assert c.raft(1).commit_index == c.raft(1).last_index
    assert c.sent(1, dst=3) == []


def test_check_quorum_counts_voters_only() -> None:
    # Voters 1 and 2, stand-bys 3 and 4: leader 1 hears only from the stand-bys.
    c = leader_cluster(4, roles={3: Role.STANDBY, 4: Role.STANDBY})
    c.isolate(2)

    c.advance(2 * ELECTION_TIMEOUT, settle=True)

    assert c.raft(1).state == State.FOLLOWER


def test_spare_made_standby_starts_receiving_the_log() -> None:
    c = leader_cluster(3, roles={3: Role.SPARE})
    c.commands(1, 3)
    c.settle()

    index = c.change(1, c.with_role(3, Role.STANDBY))
    c.settle()

    assert c.raft(3).last_index == index
    assert c.raft(3).role == Role.STANDBY


def test_candidate_counts_votes_in_its_uncommitted_configuration() -> None:
    # Server 2 appended (not committed) a change adding voter 4: four voters.
    c = leader_cluster(3)
    c.change(1, c.with_role(4, Role.VOTER))
    c.deliver(src=1, dst=2)
    c.isolate(1)

    c.fire_timeout(2)
    assert sorted(e.dst for e in c.in_flight(src=2, kind=RequestVote)) == [3]
    assert sorted(e.dst for e in c[2].sent if isinstance(e.payload, RequestVote)) == [1, 3, 4]

    # Two votes of four are no majority.
    c.send(3, 2, RequestVoteResult(term=c.raft(2).current_term, vote_granted=True))
    assert c.raft(2).state == State.CANDIDATE


def test_non_voters_never_start_elections() -> None:
    c = ExtCluster(3, roles={2: Role.STANDBY, 3: Role.SPARE})
    c.isolate(1)

    for i in (2, 3):
        c.fire_timeout(i)
        c.fire_timeout(i)
        assert c.raft(i).state == State.FOLLOWER
        assert c.raft(i).current_term == 1
        assert c.sent(i) == []


def test_candidate_asks_only_voters_but_a_standby_answers() -> None:
    # A stand-by promoted by an entry it has not received yet may be needed as
    # a voter (the simulator found a cluster stuck otherwise), so it answers
    # on the log alone, as etcd's learners do; candidates count only voters.
    c = ExtCluster(3, roles={3: Role.STANDBY})
    c.fire_timeout(1)

    assert [e.dst for e in c.in_flight(src=1, kind=RequestVote)] == [2]
    c.send(1, 3, RequestVote(term=2, candidate_id=1, last_log_index=1, last_log_term=1))

    assert c.sent(3, dst=1, kind=RequestVoteResult)[-1].vote_granted is True
    assert c.raft(3).voted_for == 1


def test_vote_of_a_non_voter_does_not_count() -> None:
    # Voters 1 and 2: a granted vote from stand-by 3 does not make 1 leader.
    c = ExtCluster(3, roles={3: Role.STANDBY})
    c.fire_timeout(1)
    c.send(3, 1, RequestVoteResult(term=2, vote_granted=True))
    assert c.raft(1).state == State.CANDIDATE

    c.deliver(src=1, dst=2)
    c.deliver(src=2, dst=1)
    assert c.raft(1).state == State.LEADER


def test_promoted_standby_counts_for_commit() -> None:
    # Voters 1, 2 and stand-by 3; 3 becomes a voter, then 2 goes away:
    # with 1 and 3 a majority of three voters, entries still commit.
    c = leader_cluster(3, roles={3: Role.STANDBY})
    c.change(1, c.with_role(3, Role.VOTER))
    c.settle()
    c.heartbeat()
    assert c.raft(3).role == Role.VOTER

    c.isolate(2)
    c.submit(1, b"x")
    c.settle()

    assert c.raft(1).commit_index == c.raft(1).last_index


# -- removal and demotion of servers ---------------------------------------------


def test_quorum_counts_the_new_configuration_at_once() -> None:
    # Leader 1 removes itself: from now on commit needs both 2 and 3.
    c = leader_cluster(3)
    index = c.change(1, c.without(1))
    c.deliver(src=1, dst=2)
    c.persist_all()
    c.deliver(src=2, dst=1)
    assert c.raft(1).commit_index < index

    c.settle()
    assert c.raft(1).commit_index == index


def test_removed_leader_leads_until_the_configuration_event() -> None:
    c = leader_cluster(3)
    c.hold(1)
    index = c.change(1, c.without(1))
    c.settle()

    # The removal committed, but the application has not applied it yet.
    assert c.raft(1).commit_index >= index
    assert c.raft(1).state == State.LEADER
    c.heartbeat()
    assert c.raft(1).state == State.LEADER

    c.release(1)
    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).role is None


def test_remaining_servers_elect_a_leader_after_the_leader_left() -> None:
    c = leader_cluster(3)
    c.change(1, c.without(1))
    c.settle()
    c.heartbeat()
    assert c.raft(1).state == State.FOLLOWER

    leader = c.await_leader([2, 3])

    assert c.leaders() == [leader]
    assert c.raft(1).current_term == 2
    c.submit(leader, b"x")
    c.settle()
    assert c.raft(leader).commit_index == c.raft(leader).last_index


def test_demoted_leader_steps_down_and_stays_quiet() -> None:
    c = leader_cluster(3)
    c.change(1, c.with_role(1, Role.STANDBY))
    c.settle()
    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).role == Role.STANDBY

    # Stand-by 1 hears no more leader, yet starts no election.
    c.isolate(1)
    term = c.raft(1).current_term
    c.fire_timeout(1)
    c.fire_timeout(1)
    assert c.raft(1).state == State.FOLLOWER
    assert c.raft(1).current_term == term


def test_removed_server_learns_of_its_removal_and_stops_starting_elections() -> None:
    # Until the removal commits, the leader still replicates to server 3.
    c = leader_cluster(3)
    index = c.change(1, c.without(3))
    c.settle()
    c.heartbeat()  # 3 learns that its removal committed
    assert c.raft(3).last_index == index
    assert c.raft(3).commit_index >= index
    assert c.raft(3).role is None
    sent = len(c.sent(3))

    c.fire_timeout(3)
    c.fire_timeout(3)

    assert c.raft(3).state == State.FOLLOWER
    assert c.raft(3).current_term == 2
    assert len(c.sent(3)) == sent


def test_rollback_to_a_committed_configuration_does_not_block_later_changes() -> None:
    # Five voters (with pre-vote, so that cut-off servers keep their term).
    # Change A (stand-by 6 joins) commits with 1, 3 and 4.
    c = leader_cluster(5, pre_vote=True)
    a = c.change(1, c.with_role(6, Role.STANDBY))
    for i in (3, 4):
        c.deliver(src=1, dst=i)
    c.persist_all()
    c.deliver(dst=1)
    assert c.raft(1).commit_index == a

    # Change B (stand-by 7 joins) reaches only server 2, in the same step that
    # tells it A is committed: 2 applies A while B is its latest configuration.
    c.change(1, c.with_role(7, Role.STANDBY))
    c.deliver(src=1, dst=2)
    assert c.raft(2).commit_index == a
    assert c.raft(2).configuration.get(7) is not None

    # Servers 1 and 2 are cut off; one of 3, 4, 5 leads. Server 2 comes back
    # and the new leader overwrites B: it rolls back to the committed A.
    c.partition([1], [2], [3, 4, 5])
    leader = c.await_leader([3, 4, 5])
    c.partition([1], [2, 3, 4, 5])
    c.heartbeat()
    assert c.raft(2).configuration.get(7) is None
    assert c.raft(2).configuration.get(6) is not None

    # Leadership passes to server 2, which may change the configuration again.
    c.step(leader, Event.transfer(c.now, 2))
    c.settle()
    c.heartbeat()
    assert c.leaders() == [2]
    c.change(2, c.with_role(8, Role.STANDBY, base=2))
    assert c.raft(2).configuration.get(8) is not None


def test_server_removed_by_an_uncommitted_change_still_campaigns() -> None:
    # It may hold the only log that can win (dissertation 4.2.2): until it
    # knows its removal committed, it keeps starting elections.
    c = leader_cluster(3)
    index = c.change(1, c.without(3))
    c.deliver(src=1, dst=3)
    c.drop()
    assert c.raft(3).last_index == index
    assert c.raft(3).role is None
    assert c.raft(3).commit_index < index

    c.fire_timeout(3)

    assert c.raft(3).state == State.CANDIDATE
    assert c.in_flight(src=3, kind=RequestVote)
