"""raftcore messages <-> the protobuf messages of the peer protocol (proto/kvstore/raft/v1).

Why it is written the way it is:

* Entry payloads are passed through as ``bytes``: protobuf copies them into and
  out of its wire format once, and nothing here re-encodes them (DESIGN 3.3).
* Encoding goes through dict initialisers (``add(append_entries={...})``): with
  the upb backend that is the cheapest way to build nested messages (measured
  about 30% faster than assigning fields one by one, 2x faster than building
  sub-message objects and appending them, which copies them).
* Decoding is the trust boundary of the node: whatever a peer (or a stranger
  that got past the batch checks) sends, it either becomes a well-formed
  raftcore message or raises :class:`DecodeError` with a message that names the
  problem. Nothing half-decoded reaches raftcore.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from kvstore.raft.v1 import peer_pb2 as pb
from raftcore import (
    AppendEntries,
    AppendEntriesResult,
    Configuration,
    Entry,
    EntryType,
    InstallSnapshot,
    Malformed,
    Message,
    RequestVote,
    RequestVoteResult,
    TimeoutNow,
)
from raftcore.messages import Payload

__all__ = [
    "DecodeError",
    "add_message",
    "decode_install_snapshot",
    "decode_message",
    "decode_messages",
    "encode_batch",
    "encode_install_snapshot",
    "encode_message",
    "estimate_size",
]

# A dict lookup is both the validation and the conversion; EntryType(x) would
# raise ValueError and cost a few times more per entry.
_ENTRY_TYPES: dict[int, EntryType] = {int(t): t for t in EntryType}


class DecodeError(ValueError):
    """A peer sent bytes or fields that are not a valid Raft message."""


# --------------------------------------------------------------------- encoding


def _append_entries(p: AppendEntries) -> dict[str, Any]:
    return {
        "term": p.term,
        "prev_log_index": p.prev_log_index,
        "prev_log_term": p.prev_log_term,
        "leader_commit": p.leader_commit,
        "context": p.context,
        "entries": [{"term": e.term, "type": int(e.type), "data": e.data} for e in p.entries],
    }


def _append_entries_result(p: AppendEntriesResult) -> dict[str, Any]:
    return {
        "term": p.term,
        "rejected": p.rejected,
        "last_log_index": p.last_log_index,
        "features": p.features,
        "capacity": p.capacity,
        "context": p.context,
    }


def _request_vote(p: RequestVote) -> dict[str, Any]:
    return {
        "term": p.term,
        "candidate_id": p.candidate_id,
        "last_log_index": p.last_log_index,
        "last_log_term": p.last_log_term,
        "disrupt_leader": p.disrupt_leader,
        "pre_vote": p.pre_vote,
    }


def _request_vote_result(p: RequestVoteResult) -> dict[str, Any]:
    return {
        "term": p.term,
        "vote_granted": p.vote_granted,
        "pre_vote": p.pre_vote,
        "features": p.features,
        "capacity": p.capacity,
    }


def _install_snapshot(p: InstallSnapshot) -> dict[str, Any]:
    return {
        "term": p.term,
        "last_index": p.last_index,
        "last_term": p.last_term,
        "conf": p.conf.encode(),
        "conf_index": p.conf_index,
    }


def _timeout_now(p: TimeoutNow) -> dict[str, Any]:
    return {"term": p.term, "last_log_index": p.last_log_index, "last_log_term": p.last_log_term}


# payload class -> (oneof field name, field dict builder)
_ENCODERS: dict[type, tuple[str, Callable[[Any], dict[str, Any]]]] = {
    AppendEntries: ("append_entries", _append_entries),
    AppendEntriesResult: ("append_entries_result", _append_entries_result),
    RequestVote: ("request_vote", _request_vote),
    RequestVoteResult: ("request_vote_result", _request_vote_result),
    InstallSnapshot: ("install_snapshot", _install_snapshot),
    TimeoutNow: ("timeout_now", _timeout_now),
}


def add_message(batch: pb.MessageBatch, message: Message) -> None:
    """Append ``message``'s payload to ``batch.messages`` without an intermediate copy.

    An InstallSnapshot payload keeps only its header here: its data travels
    in the InstallSnapshot call (see ``peer_client.Transport.send_snapshot``).
    """
    name, build = _ENCODERS[type(message.payload)]
    batch.messages.add(**{name: build(message.payload)})


def encode_message(message: Message) -> pb.RaftMessage:
    """One raftcore message as a standalone ``RaftMessage`` (tests, tools)."""
    name, build = _ENCODERS[type(message.payload)]
    return pb.RaftMessage(**{name: build(message.payload)})


def encode_batch(
    cluster_id: int, from_id: int, from_address: str, to_id: int, messages: Iterable[Message]
) -> pb.MessageBatch:
    """A stream frame: the sender's credentials and any number of messages for ``to_id``."""
    batch = pb.MessageBatch(
        cluster_id=cluster_id, from_id=from_id, from_address=from_address, to_id=to_id
    )
    for message in messages:
        add_message(batch, message)
    return batch


def encode_install_snapshot(payload: InstallSnapshot) -> pb.InstallSnapshot:
    """The snapshot header of the first SnapshotChunk (``data`` travels in the chunks)."""
    return pb.InstallSnapshot(**_install_snapshot(payload))


def estimate_size(message: Message) -> int:
    """A cheap upper-ish estimate of the encoded size, used to bound frame sizes.

    Computing ``ByteSize()`` would cost as much as encoding; entry payloads are
    what makes a message big, so counting them plus a fixed overhead is enough.
    """
    payload = message.payload
    if isinstance(payload, AppendEntries):
        return 48 + sum(len(e.data) + 24 for e in payload.entries)
    return 64


# --------------------------------------------------------------------- decoding


def _entries(p: pb.AppendEntries) -> list[Entry]:
    try:
        return [Entry(e.term, _ENTRY_TYPES[e.type], e.data) for e in p.entries]
    except KeyError as exc:
        raise DecodeError(
            f"AppendEntries carries an entry of unknown type {exc.args[0]} "
            f"(known: {sorted(_ENTRY_TYPES)})"
        ) from None


def _configuration(data: bytes) -> Configuration:
    try:
        return Configuration.decode(data)
    except Malformed as exc:
        raise DecodeError(f"InstallSnapshot carries a bad configuration: {exc}") from None


def _dec_append_entries(rm: pb.RaftMessage) -> Payload:
    p = rm.append_entries
    return AppendEntries(
        p.term, p.prev_log_index, p.prev_log_term, p.leader_commit, _entries(p), p.context
    )


def _dec_append_entries_result(rm: pb.RaftMessage) -> Payload:
    p = rm.append_entries_result
    return AppendEntriesResult(
        p.term, p.rejected, p.last_log_index, p.features, p.capacity, p.context
    )


def _dec_request_vote(rm: pb.RaftMessage) -> Payload:
    p = rm.request_vote
    return RequestVote(
        p.term, p.candidate_id, p.last_log_index, p.last_log_term, p.disrupt_leader, p.pre_vote
    )


def _dec_request_vote_result(rm: pb.RaftMessage) -> Payload:
    p = rm.request_vote_result
    return RequestVoteResult(p.term, p.vote_granted, p.pre_vote, p.features, p.capacity)


def _dec_install_snapshot(rm: pb.RaftMessage) -> Payload:
    return decode_install_snapshot(rm.install_snapshot)


def _dec_timeout_now(rm: pb.RaftMessage) -> Payload:
    p = rm.timeout_now
    return TimeoutNow(p.term, p.last_log_index, p.last_log_term)


_DECODERS: dict[str, Callable[[pb.RaftMessage], Payload]] = {
    "append_entries": _dec_append_entries,
    "append_entries_result": _dec_append_entries_result,
    "request_vote": _dec_request_vote,
    "request_vote_result": _dec_request_vote_result,
    "install_snapshot": _dec_install_snapshot,
    "timeout_now": _dec_timeout_now,
}


def decode_install_snapshot(p: pb.InstallSnapshot, data: bytes = b"") -> InstallSnapshot:
    """A snapshot header as raftcore's InstallSnapshot (``data`` empty unless given)."""
    return InstallSnapshot(
        p.term, p.last_index, p.last_term, _configuration(p.conf), p.conf_index, data
    )


def decode_message(rm: pb.RaftMessage, sender_id: int, sender_address: str) -> Message:
    """A received message; ``server_id``/``server_address`` name the sender, as raftcore expects.

    Raises DecodeError when the oneof is empty or unknown to this version (a
    newer peer's message type lands in unknown fields, so ``WhichOneof`` is
    None), or when an enum or the configuration bytes are invalid.
    """
    which = rm.WhichOneof("payload")
    if which is None:
        raise DecodeError("RaftMessage has no payload (empty, or a message type unknown here)")
    return Message(sender_id, sender_address, _DECODERS[which](rm))


def decode_messages(
    messages: Sequence[pb.RaftMessage], sender_id: int, sender_address: str
) -> list[Message]:
    """All messages of a batch, or DecodeError naming the position of the first bad one."""
    out: list[Message] = []
    for position, rm in enumerate(messages):
        try:
            out.append(decode_message(rm, sender_id, sender_address))
        except DecodeError as exc:
            raise DecodeError(f"message {position} of the batch: {exc}") from None
    return out
