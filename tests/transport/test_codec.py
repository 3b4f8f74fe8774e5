"""Codec: raftcore messages round-trip through protobuf bytes; bad input raises DecodeError."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvstore.raft.v1 import peer_pb2 as pb
from kvstore.transport import codec
from kvstore.transport.codec import DecodeError
from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Configuration,
    Entry,
    EntryType,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResult,
    Role,
    Server,
    TimeoutNow,
)

u64 = st.integers(min_value=0, max_value=2**64 - 1)
entries = st.lists(
    st.builds(Entry, u64, st.sampled_from(list(EntryType)), st.binary(max_size=64)), max_size=8
)
configurations = st.lists(
    st.tuples(
        st.integers(min_value=1, max_value=2**64 - 1),
        st.text(max_size=20),
        st.sampled_from(list(Role)),
    ),
    max_size=5,
    unique_by=lambda s: s[0],
).map(lambda servers: Configuration(Server(i, a, r) for i, a, r in servers))

payloads = st.one_of(
    st.builds(AppendEntries, u64, u64, u64, u64, entries, u64),
    st.builds(AppendEntriesResult, u64, u64, u64, u64, u64, u64),
    st.builds(RequestVote, u64, u64, u64, u64, st.booleans(), st.booleans()),
    st.builds(RequestVoteResult, u64, st.booleans(), st.booleans(), u64, u64),
    st.builds(InstallSnapshot, u64, u64, u64, configurations, u64),
    st.builds(TimeoutNow, u64, u64, u64),
)


def _normalise(message: Message) -> Message:
    """Entries come back as a list; compare them as tuples."""
    p = message.payload
    if isinstance(p, AppendEntries):
        p = AppendEntries(
            p.term, p.prev_log_index, p.prev_log_term, p.leader_commit, tuple(p.entries), p.context
        )
    return Message(message.server_id, message.server_address, p)


@settings(max_examples=300, deadline=None)
@given(payloads, st.integers(min_value=1, max_value=2**64 - 1), st.text(max_size=30))
def test_every_payload_round_trips_through_bytes(payload, sender_id, sender_address):
    sent = Message(99, "destination:1", payload)
    wire = codec.encode_message(sent).SerializeToString()
    received = codec.decode_message(pb.RaftMessage.FromString(wire), sender_id, sender_address)
    # On a received message server_id/address name the sender, as raftcore expects.
    assert _normalise(received) == _normalise(Message(sender_id, sender_address, payload))


@settings(max_examples=100, deadline=None)
@given(st.lists(payloads, max_size=10), u64, u64, u64, st.text(max_size=10))
def test_batches_round_trip_in_order(payloads_, cluster_id, from_id, to_id, from_address):
    messages = [Message(to_id, "x", p) for p in payloads_]
    batch = codec.encode_batch(cluster_id, from_id, from_address, to_id, messages)
    back = pb.MessageBatch.FromString(batch.SerializeToString())
    assert (back.cluster_id, back.from_id, back.from_address, back.to_id) == (
        cluster_id,
        from_id,
        from_address,
        to_id,
    )
    decoded = codec.decode_messages(back.messages, from_id, from_address)
    assert [_normalise(m) for m in decoded] == [
        _normalise(Message(from_id, from_address, p)) for p in payloads_
    ]


def test_entry_data_is_passed_through_unchanged():
    data = bytes(range(256)) * 100
    message = Message(2, "b", AppendEntries(3, 4, 3, 4, [Entry(3, EntryType.COMMAND, data)], 7))
    wire = codec.encode_message(message).SerializeToString()
    assert data in wire  # embedded as is: no re-encoding beyond protobuf's framing
    decoded = codec.decode_message(pb.RaftMessage.FromString(wire), 1, "a")
    assert decoded.payload.entries[0].data == data
    assert decoded.payload.context == 7


def test_install_snapshot_header_carries_the_configuration_and_no_data():
    conf = Configuration([Server(1, "a:1", Role.VOTER), Server(2, "b:2", Role.SPARE)])
    header = InstallSnapshot(5, 100, 4, conf, 90, data=b"ignored")
    wire = codec.encode_install_snapshot(header)
    assert wire.conf == conf.encode()
    back = codec.decode_install_snapshot(pb.InstallSnapshot.FromString(wire.SerializeToString()))
    assert back == InstallSnapshot(5, 100, 4, conf, 90, b"")


def test_an_empty_raft_message_is_refused():
    with pytest.raises(DecodeError, match="no payload"):
        codec.decode_message(pb.RaftMessage(), 1, "a")


def test_a_payload_type_unknown_to_this_version_is_refused():
    # Field 7, length-delimited, empty: what a newer peer's seventh message type looks like.
    message = pb.RaftMessage.FromString(bytes([7 << 3 | 2, 0]))
    with pytest.raises(DecodeError, match="unknown here"):
        codec.decode_message(message, 1, "a")


def test_an_unknown_entry_type_is_refused():
    message = pb.RaftMessage(
        append_entries=pb.AppendEntries(term=1, entries=[pb.Entry(term=1, type=9, data=b"x")])
    )
    with pytest.raises(DecodeError, match="unknown type 9"):
        codec.decode_message(message, 1, "a")


@pytest.mark.parametrize(
    "conf",
    [b"", b"\x02\x00\x00\x00\x00", b"\x01\x00\x00\x00\x01\x00", Configuration().encode() + b"!"],
)
def test_bad_configuration_bytes_are_refused(conf):
    message = pb.RaftMessage(install_snapshot=pb.InstallSnapshot(term=1, conf=conf))
    with pytest.raises(DecodeError, match="bad configuration"):
        codec.decode_message(message, 1, "a")


def test_a_bad_role_in_the_configuration_is_refused():
    conf = bytearray(Configuration([Server(1, "a", Role.VOTER)]).encode())
    conf[5 + 8] = 7  # the role byte of the first server
    message = pb.RaftMessage(install_snapshot=pb.InstallSnapshot(term=1, conf=bytes(conf)))
    with pytest.raises(DecodeError, match="bad configuration"):
        codec.decode_message(message, 1, "a")


def test_the_error_names_the_position_in_the_batch():
    batch = pb.MessageBatch(
        messages=[pb.RaftMessage(timeout_now=pb.TimeoutNow()), pb.RaftMessage()]
    )
    with pytest.raises(DecodeError, match="message 1 of the batch"):
        codec.decode_messages(batch.messages, 1, "a")


def test_size_estimate_grows_with_entry_data():
    small = Message(2, "b", AppendEntries(1, 0, 0, 0))
    big = Message(2, "b", AppendEntries(1, 0, 0, 0, [Entry(1, EntryType.COMMAND, b"x" * 10_000)]))
    assert codec.estimate_size(big) > 10_000 > codec.estimate_size(small)
