"""START: a server comes up from its persisted state."""

from __future__ import annotations

from raftcore import Entry, EntryType, Raft, Role, State, UpdateFlags
from tests.raftcore.harness import ELECTION_TIMEOUT, Cluster, cmd, configuration


def test_before_start_configuration_is_empty_and_role_is_none() -> None:
    r = Raft(id=1, address="s1", seed=1)

    assert len(r.configuration) == 0
    assert r.role is None


def test_queries_after_start_reflect_persisted_state() -> None:
    # Server 1 persisted term 3, a vote for server 2 and two commands after the
    # bootstrap configuration.
    c = Cluster(3, terms={1: 3}, votes={1: 2}, logs={1: [cmd(2, b"a"), cmd(3, b"b")]})
    r = c.raft(1)

    assert r.current_term == 3
    assert r.voted_for == 2
    assert r.state == State.FOLLOWER
    assert r.role == Role.VOTER
    assert r.leader == (0, None)
    assert r.last_index == 3
    assert r.configuration == configuration(3)
    # A follower's timer is the election timeout, randomized in [T, 2T).
    assert ELECTION_TIMEOUT <= r.timeout < 2 * ELECTION_TIMEOUT


def test_bootstrap_configuration_is_committed_on_start() -> None:
    # C-Raft's stepStart: without a snapshot the first entry must be the same
    # bootstrap CHANGE on every server, so commit_index is 1 at once.
    c = Cluster(3, logs={1: [cmd(1, b"a")]})

    assert c.raft(1).commit_index == 1
    assert c.raft(2).commit_index == 1


def test_start_asks_for_a_timer() -> None:
    c = Cluster(3)

    assert c[1].start_update.flags & UpdateFlags.TIMEOUT


def test_start_does_not_rewrite_entries_or_send_messages() -> None:
    c = Cluster(3, terms={1: 3}, votes={1: 2}, logs={1: [cmd(2, b"a")]})

    assert not c[1].last_update.flags & UpdateFlags.ENTRIES
    assert c[1].last_update.messages == []


def test_start_configuration_is_the_last_change_entry() -> None:
    # A second, later CHANGE entry (adding server 4) is the configuration in use.
    bigger = configuration(4)
    c = Cluster(3, terms={1: 2}, logs={1: [Entry(2, EntryType.CHANGE, bigger.encode())]})

    assert c.raft(1).configuration == bigger
    assert c.raft(1).configuration.get(4) is not None


def test_single_voter_elects_itself_on_start() -> None:
    c = Cluster(1)
    r = c.raft(1)
    update = c[1].start_update

    assert r.state == State.LEADER
    assert r.current_term == 2
    assert r.voted_for == 1
    assert r.leader == (1, "s1")
    assert update.flags & UpdateFlags.STATE
    assert update.flags & UpdateFlags.CURRENT_TERM
    assert update.flags & UpdateFlags.VOTED_FOR
    # The harness persisted what the flags asked for.
    assert (c[1].disk.term, c[1].disk.voted_for) == (2, 1)


def test_single_voter_among_non_voters_elects_itself_on_start() -> None:
    c = Cluster(3, roles={2: Role.STANDBY, 3: Role.SPARE})

    assert c.raft(1).state == State.LEADER
    assert c.raft(2).state == State.FOLLOWER
    assert c.raft(2).role == Role.STANDBY
    assert c.raft(3).role == Role.SPARE


def test_single_voter_commits_its_own_entries_once_persisted() -> None:
    c = Cluster(1)
    c.persist(1)
    index = c.raft(1).last_index + 1

    c.submit(1, b"x")
    assert c.raft(1).commit_index < index

    update = c.persist(1)
    assert update is not None
    assert update.flags & UpdateFlags.COMMIT_INDEX
    assert c.raft(1).commit_index == index
    assert c[1].applied_entries[-1] == cmd(2, b"x")
