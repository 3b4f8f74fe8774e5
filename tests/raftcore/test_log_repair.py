"""Log repair: conflicting suffixes, probing with the follower's hint, lost writes."""

from __future__ import annotations

from raftcore import AppendEntries, AppendEntriesResult, UpdateFlags
from tests.raftcore.harness import HEARTBEAT_TIMEOUT, Cluster, barrier, cmd


def win_election(c: Cluster, server_id: int) -> None:
    """Run the election without settling: the new leader's first messages stay in flight."""
    c.fire_timeout(server_id)
    c.deliver_from(server_id)
    c.deliver_to(server_id)
    assert c.leaders() == [server_id]


def next_append_entries(c: Cluster, src: int, dst: int) -> AppendEntries:
    """The next AppendEntries in flight from src to dst, waiting a heartbeat if need be."""
    if not c.in_flight(src, dst, AppendEntries):
        c.advance(HEARTBEAT_TIMEOUT)
    [envelope] = c.in_flight(src, dst, AppendEntries)
    return envelope.payload


def test_follower_truncates_a_conflicting_suffix() -> None:
    # Server 1 appended a and b in term 2; they reached nobody. Servers 2 and 3
    # then got c in term 3.
    c = Cluster(
        3,
        terms={1: 2, 2: 3, 3: 3},
        logs={1: [cmd(2, b"a"), cmd(2, b"b")], 2: [cmd(3, b"c")], 3: [cmd(3, b"c")]},
    )
    c.elect(2)  # term 4; it appends a barrier after c

    # Server 1's first write replaces its log from the first conflicting index.
    write = next(u for u in c.updates(1) if u.flags & UpdateFlags.ENTRIES)
    assert write.entries_index == 2
    assert write.entries == [cmd(3, b"c"), barrier(4)]
    assert c[1].disk.entries == c[2].disk.entries
    assert c[1].log == c[2].log


def test_rejection_carries_the_followers_last_index() -> None:
    # Servers 1 and 2 hold ten entries of term 2; server 3 only the bootstrap entry.
    ten = [cmd(2, b"%d" % i) for i in range(10)]
    c = Cluster(3, terms={1: 2, 2: 2, 3: 2}, logs={1: ten, 2: ten})
    win_election(c, 1)
    probe = next_append_entries(c, 1, 3)
    assert probe.prev_log_index >= 11

    [update] = c.deliver(src=1, dst=3)

    [reply] = [m.payload for m in update.messages]
    assert isinstance(reply, AppendEntriesResult)
    assert reply.rejected == probe.prev_log_index
    assert reply.last_log_index == 1


def test_leader_skips_back_to_the_followers_hint() -> None:
    ten = [cmd(2, b"%d" % i) for i in range(10)]
    c = Cluster(3, terms={1: 2, 2: 2, 3: 2}, logs={1: ten, 2: ten})
    win_election(c, 1)
    next_append_entries(c, 1, 3)
    c.deliver(src=1, dst=3)

    c.deliver(src=3, dst=1)  # rejected, last_log_index 1

    retry = next_append_entries(c, 1, 3)
    assert retry.prev_log_index == 1  # not 10, 9, 8, ... one at a time
    assert retry.entries[0] == ten[0]

    c.settle()
    assert c[3].disk.entries == c[1].disk.entries


def test_rejection_of_a_conflicting_entry_hints_just_before_it() -> None:
    # Server 3's entry 2 (term 2) conflicts with the leader's (term 3).
    c = Cluster(
        3,
        terms={1: 3, 2: 3, 3: 3},
        logs={1: [cmd(3, b"a")], 2: [cmd(3, b"a")], 3: [cmd(2, b"z"), cmd(2, b"zz")]},
    )
    win_election(c, 1)
    next_append_entries(c, 1, 3)

    c.deliver(src=1, dst=3)

    [reply] = [e.payload for e in c.in_flight(3, 1, AppendEntriesResult)]
    assert reply.rejected != 0
    assert reply.last_log_index == reply.rejected - 1

    c.settle()
    assert c[3].log == c[1].log


def test_leader_repairs_a_follower_that_lost_unpersisted_entries() -> None:
    c = Cluster(3)
    c.elect(1)
    for i in range(3):
        c.submit(1, b"%d" % i)
    c.deliver(src=1, dst=2)
    c.restart(2)  # its writes never landed
    assert c.raft(2).last_index < c.raft(1).last_index

    c.settle()
    c.advance(3 * HEARTBEAT_TIMEOUT, settle=True)

    assert c[2].disk.entries == c[1].disk.entries
    assert c.raft(1).match_index(2) == c.raft(1).last_index


def test_report_of_a_replaced_write_ending_at_the_same_index_is_not_taken_for_the_new_one() -> None:
    # Found by the simulator (seed 26): server 3 appends entries 2..3 of term 2
    # (write A), then a new leader's entries 2..3 of term 3 replace them (write
    # B) before A's report arrives. A's report must not make B count as durable.
    from raftcore import AppendEntries, Entry, EntryType, Event

    c = Cluster(3)
    r = c.raft(3)
    old = [Entry(2, EntryType.COMMAND, b"a"), Entry(2, EntryType.COMMAND, b"b")]
    new = [Entry(3, EntryType.COMMAND, b"x"), Entry(3, EntryType.COMMAND, b"y")]
    c.send(
        1, 3, AppendEntries(term=2, prev_log_index=1, prev_log_term=1, leader_commit=1, entries=old)
    )
    c.send(
        2, 3, AppendEntries(term=3, prev_log_index=1, prev_log_term=1, leader_commit=1, entries=new)
    )
    assert r.log.term_of(3) == 3 and r.log.persisted == 1

    # Write A (term 2) lands and is reported: nothing of B is durable yet.
    update = c.step(3, Event.persisted_entries(c.now, 3, term=2))
    assert r.log.persisted == 1
    assert not [m for m in update.messages if m.payload.type == 2 and m.payload.last_log_index == 3]

    # Write B lands: now entries up to 3 (of term 3) are durable and acknowledged.
    update = c.step(3, Event.persisted_entries(c.now, 3, term=3))
    assert r.log.persisted == 3
    acks = [m.payload for m in update.messages if m.server_id == 2]
    assert acks and acks[-1].last_log_index == 3 and not acks[-1].rejected


def test_a_report_without_term_never_counts_a_replacing_write_as_durable() -> None:
    # The same race as above, reported without the term (C-Raft's event): the
    # report is taken for the oldest pending write, so B is not acknowledged.
    from raftcore import AppendEntries, Entry, EntryType, Event

    c = Cluster(3)
    r = c.raft(3)
    old = [Entry(2, EntryType.COMMAND, b"a"), Entry(2, EntryType.COMMAND, b"b")]
    new = [Entry(3, EntryType.COMMAND, b"x"), Entry(3, EntryType.COMMAND, b"y")]
    c.send(1, 3, AppendEntries(2, 1, 1, 1, old))
    c.send(2, 3, AppendEntries(3, 1, 1, 1, new))

    update = c.step(3, Event.persisted_entries(c.now, 3))  # A's report
    assert r.log.persisted == 1
    assert not [m for m in update.messages if m.payload.type == 2 and m.payload.last_log_index == 3]
    c.step(3, Event.persisted_entries(c.now, 3))  # B's report
    assert r.log.persisted == 3
