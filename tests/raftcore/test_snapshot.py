"""Snapshots: compaction with trailing entries, InstallSnapshot, restart from a snapshot."""

from __future__ import annotations

import dataclasses

from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Entry,
    EntryType,
    Event,
    InstallSnapshot,
    Invalid,
    Raft,
    Role,
    SnapshotMetadata,
    State,
    UpdateFlags,
)
from tests.raftcore.harness import cmd, configuration
from tests.raftcore.harness_ext import ExtCluster, assert_refused, leader_cluster

BEHIND = 10


def compacted(trailing: int, **options: object) -> ExtCluster:
    """Servers 1 (leader) and 2 committed BEHIND commands that server 3, cut off,
    lacks; then leader 1 took a snapshot of all it applied, keeping ``trailing``."""
    c = leader_cluster(3, **options)
    c.isolate(3)
    c.commands(1, BEHIND)
    c.heartbeat()
    c.take_snapshot(1, trailing)
    return c


def reconnect(c: ExtCluster) -> None:
    c.heal()
    c.heartbeat()


def snapshots_sent(c: ExtCluster, dst: int) -> list[InstallSnapshot]:
    return c.sent(1, dst=dst, kind=InstallSnapshot)


def test_follower_behind_the_kept_entries_gets_the_snapshot() -> None:
    c = compacted(trailing=2)
    metadata = c.snapshots[1]

    reconnect(c)

    assert snapshots_sent(c, 3) == [
        InstallSnapshot(
            term=2,
            last_index=metadata.index,
            last_term=2,
            conf=configuration(3),
            conf_index=1,
            data=b"",
        )
    ]
    assert snapshots_sent(c, 2) == []


def test_follower_within_the_trailing_entries_gets_append_entries() -> None:
    # Server 3 needs entries from 3 on; entry 2 (the previous one) is kept too.
    c = compacted(trailing=BEHIND + 1)

    reconnect(c)

    assert snapshots_sent(c, 3) == []
    assert c.raft(3).last_index == c.raft(1).last_index
    assert c[3].log == c[1].log


def test_received_snapshot_is_persisted_before_it_is_adopted() -> None:
    c = compacted(trailing=2)
    c.auto_install = False
    last = c.raft(3).last_index

    reconnect(c)

    # Server 3 asks for the snapshot to be stored, as one chunk.
    snapshot = c.pending_snapshots[3]
    assert (snapshot.metadata, snapshot.offset, snapshot.chunk, snapshot.last) == (
        c.snapshots[1],
        0,
        b"",
        True,
    )
    [update] = [u for u in c.updates(3) if u.flags & UpdateFlags.SNAPSHOT]
    assert update.snapshot == snapshot
    assert c.raft(3).last_index == last


def test_follower_ignores_append_entries_while_installing() -> None:
    c = compacted(trailing=2)
    c.auto_install = False
    reconnect(c)
    answers = len(c.sent(3, kind=AppendEntriesResult))
    last = c.raft(3).last_index

    c.heartbeat()
    c.submit(1, b"more")
    c.settle()

    assert c.sent(1, dst=3, kind=AppendEntries)
    assert len(c.sent(3, kind=AppendEntriesResult)) == answers
    assert c.raft(3).last_index == last


def test_persisted_snapshot_resets_the_log_and_is_acknowledged() -> None:
    c = compacted(trailing=2)
    c.auto_install = False
    reconnect(c)
    metadata = c.snapshots[1]

    c.persist_snapshot(3)

    r = c.raft(3)
    assert r.last_index == metadata.index
    assert r.commit_index >= metadata.index
    assert r.configuration == metadata.configuration
    assert c.sent(3, dst=1, kind=AppendEntriesResult)[-1] == AppendEntriesResult(
        term=2, rejected=0, last_log_index=metadata.index
    )


def test_follower_continues_from_the_installed_snapshot() -> None:
    c = compacted(trailing=0)
    reconnect(c)

    c.submit(1, b"after")
    c.settle()
    c.heartbeat()

    r = c.raft(3)
    assert r.last_index == c.raft(1).last_index
    assert r.commit_index == c.raft(1).commit_index
    assert c.raft(1).match_index(3) == r.last_index
    assert c[3].applied_entries[-1] == cmd(2, b"after")


def test_installed_snapshot_brings_its_configuration() -> None:
    # While server 3 is cut off, stand-by 4 joins; the snapshot covers the change.
    c = leader_cluster(3)
    c.isolate(3)
    new = c.with_role(4, Role.STANDBY)
    index = c.change(1, new)
    c.commands(1, 3)
    c.heartbeat()
    c.take_snapshot(1, trailing=0)
    assert c.snapshots[1].configuration_index == index

    reconnect(c)

    assert snapshots_sent(c, 3)[-1].conf == new
    assert c.raft(3).configuration == new


def test_new_server_joins_from_the_snapshot() -> None:
    c = compacted(trailing=2)
    c.heal()
    c.add_server(4)

    index = c.change(1, c.with_role(4, Role.STANDBY))
    c.settle()
    c.heartbeat()

    assert snapshots_sent(c, 4)
    assert c.raft(4).last_index == index
    assert c.raft(4).role == Role.STANDBY
    assert c.raft(1).match_index(4) == index


def test_lost_snapshot_is_sent_again_after_the_install_snapshot_timeout() -> None:
    c = compacted(trailing=2, install_snapshot_timeout=2000)
    c.lose = {InstallSnapshot}
    reconnect(c)
    assert len(snapshots_sent(c, 3)) == 1
    c.lose.clear()

    # Heartbeats keep server 3 quiet meanwhile; no second snapshot yet.
    c.advance(1500, settle=True)
    assert len(snapshots_sent(c, 3)) == 1
    assert c.raft(3).state == State.FOLLOWER

    c.advance(600, settle=True)
    assert len(snapshots_sent(c, 3)) == 2
    assert c.raft(3).last_index == c.raft(1).last_index


def snapshot_of(c: ExtCluster, server_id: int, term: int) -> InstallSnapshot:
    """An InstallSnapshot for the server's own last entry."""
    last = c.raft(server_id).last_index
    conf = configuration(3)
    return InstallSnapshot(term, last, c.last_term(server_id), conf, conf_index=1)


def test_lost_snapshot_acknowledgement_is_made_up_by_the_next_heartbeat() -> None:
    c = compacted(trailing=2)
    c.auto_install = False
    reconnect(c)
    c.persist_snapshot(3)
    c.drop(src=3)

    c.heartbeat()

    assert len(snapshots_sent(c, 3)) == 1
    assert c.raft(1).match_index(3) == c.raft(1).last_index
    assert c.raft(3).last_index == c.raft(1).last_index


def test_follower_that_already_has_the_snapshot_index_just_acknowledges() -> None:
    c = leader_cluster(3)
    c.commands(1, 2)
    c.settle()
    last = c.raft(2).last_index

    update = c.send(1, 2, snapshot_of(c, 2, term=2))

    assert not update.flags & UpdateFlags.SNAPSHOT
    assert c.raft(2).last_index == last
    assert c.sent(2, dst=1)[-1] == AppendEntriesResult(term=2, rejected=0, last_log_index=last)


def test_install_snapshot_of_an_old_term_is_rejected() -> None:
    c = leader_cluster(3)
    last = c.raft(2).last_index
    stale = dataclasses.replace(snapshot_of(c, 2, term=1), last_index=last + 5)

    update = c.send(1, 2, stale)

    assert not update.flags & UpdateFlags.SNAPSHOT
    assert c.raft(2).last_index == last
    assert c.sent(2, dst=1)[-1].rejected


def test_persisted_snapshot_that_is_not_being_installed_is_ignored() -> None:
    c = leader_cluster(3)
    stray = SnapshotMetadata(9, 2, configuration(3), 1)
    before = (c.raft(2).last_index, c.raft(2).commit_index)

    update = c.step(2, Event.persisted_snapshot(c.now, stray, 0, True))

    assert (c.raft(2).last_index, c.raft(2).commit_index) == before
    assert update.messages == []


# -- taking snapshots --------------------------------------------------------------


def test_follower_snapshot_compacts_and_keeps_following() -> None:
    c = leader_cluster(3)
    c.commands(1, 3)
    c.settle()
    c.heartbeat()
    c.take_snapshot(2, trailing=0)

    c.commands(1, 2)
    c.settle()

    assert c.raft(2).last_index == c.raft(1).last_index


def test_snapshot_past_the_commit_index_is_invalid() -> None:
    c = leader_cluster(3)
    c.submit(1, b"x")
    r = c.raft(1)
    metadata = SnapshotMetadata(r.last_index, 2, configuration(3), 1)

    assert_refused(c, 1, Event.snapshot(c.now, metadata, 0), Invalid)


def test_snapshot_before_the_last_one_or_of_another_term_is_invalid() -> None:
    c = leader_cluster(3)
    c.commands(1, 3)
    c.settle()
    c.take_snapshot(1, trailing=0)
    index = c.snapshots[1].index
    older = SnapshotMetadata(index - 1, 2, configuration(3), 1)
    wrong_term = SnapshotMetadata(index, 1, configuration(3), 1)

    assert_refused(c, 1, Event.snapshot(c.now, older, 0), Invalid)
    assert_refused(c, 1, Event.snapshot(c.now, wrong_term, 0), Invalid)


# -- restarting from a snapshot ----------------------------------------------------


def test_restart_from_a_snapshot_with_trailing_entries() -> None:
    c = compacted(trailing=2)
    c.submit(1, b"after")
    c.settle()
    last, metadata = c.raft(1).last_index, c.snapshots[1]

    c.restart(1)

    r = c.raft(1)
    assert r.state == State.FOLLOWER
    assert r.last_index == last
    assert r.commit_index == metadata.index
    assert r.configuration == metadata.configuration


def test_restart_after_installing_a_snapshot() -> None:
    c = compacted(trailing=0)
    reconnect(c)
    last = c.raft(3).last_index

    c.restart(3)

    assert c.raft(3).last_index == last
    assert c.raft(3).commit_index >= c.snapshots[3].index


def test_start_with_metadata_restores_log_commit_and_configuration() -> None:
    # Snapshot at 10 of term 3 with a configuration from index 4; entries 9..11 kept.
    conf = configuration(3, {3: Role.STANDBY})
    metadata = SnapshotMetadata(10, 3, conf, 4)
    entries = [cmd(3, b"9"), cmd(3, b"10"), Entry(4, EntryType.COMMAND, b"11")]
    r = Raft(id=1, address="s1", seed=1)

    r.step(Event.start(0, 4, 0, metadata, 9, entries))

    assert (r.last_index, r.commit_index) == (11, 10)
    assert r.configuration == conf
    assert r.role == Role.VOTER


def test_start_with_a_gap_after_the_snapshot_is_invalid() -> None:
    metadata = SnapshotMetadata(10, 3, configuration(3), 4)
    r = Raft(id=1, address="s1", seed=1)

    try:
        r.step(Event.start(0, 4, 0, metadata, 12, [cmd(3, b"12")]))
    except Invalid:
        pass
    else:
        raise AssertionError("START with a gap after the snapshot was accepted")
    assert r.last_index == 0
    assert len(r.configuration) == 0


def test_snapshot_older_than_the_followers_commit_is_acknowledged_not_installed() -> None:
    # Found by the simulator (seed 350): a follower that has committed and
    # compacted past a leader's older snapshot must not install it (that would
    # take its state machine back); it acknowledges what it has instead.
    from raftcore import InstallSnapshot, UpdateFlags

    c = leader_cluster(3)
    for i in range(6):
        c.submit(1, b"x%d" % i)
    c.settle()
    c.heartbeat()
    follower = c.raft(2)
    commit = follower.commit_index
    assert commit >= 7
    c.take_snapshot(2, trailing=0)
    assert follower.log.snapshot_index == commit

    old = InstallSnapshot(
        term=c.raft(1).current_term,
        last_index=3,
        last_term=c.raft(1).log.term_of(3) or 0,
        conf=follower.configuration,
        conf_index=1,
    )
    update = c.send(1, 2, old)
    assert not update.flags & UpdateFlags.SNAPSHOT
    assert follower.commit_index == commit and follower.log.snapshot_index == commit
    acks = [m.payload for m in update.messages if m.server_id == 1]
    assert acks and acks[-1].rejected == 0 and acks[-1].last_log_index == commit
