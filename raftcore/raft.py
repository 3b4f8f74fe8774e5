"""The Raft object: persistent and volatile state, queries, and ``step``.

``step`` is the only entry point. It dispatches the event to one handler
(one module per concern, as C-Raft's ``recv_*.c`` and ``replication.c``),
collects what the caller must do in an ``Update`` and finally works out the
flags by comparing state before and after. Handlers raise ``RaftError`` only
before they change anything, so a failed step changes nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from raftcore import election, membership, read, replication, snapshot, start, transfer
from raftcore.configuration import Configuration
from raftcore.errors import Invalid, Malformed
from raftcore.events import Event, EventType
from raftcore.log import RaftLog
from raftcore.messages import Message, MessageType, Payload
from raftcore.progress import Progress
from raftcore.types import CatchUpStatus, Role, SnapshotMetadata, State
from raftcore.update import Update, UpdateFlags

logger = logging.getLogger("raftcore")

Handler = Callable[["Raft", Event], None]


class Raft:
    """One Raft server, driven by events; it performs no I/O itself."""

    def __init__(
        self,
        id: int,
        address: str,
        *,
        seed: int = 0,
        election_timeout: int = 1000,
        heartbeat_timeout: int = 100,
        install_snapshot_timeout: int = 30000,
        pre_vote: bool = False,
        max_catch_up_rounds: int = 10,
        max_catch_up_round_duration: int = 5000,
        max_inflight_entries: int = 32,
        capacity_threshold: int = 0,
    ) -> None:
        if id <= 0:
            raise Invalid(f"server id must be positive, got {id}")
        if heartbeat_timeout <= 0 or election_timeout <= heartbeat_timeout:
            raise Invalid("need 0 < heartbeat_timeout < election_timeout")
        if max_inflight_entries < 1:
            raise Invalid("max_inflight_entries must be at least 1")
        self.id = id
        self.address = address
        self.election_timeout = election_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.install_snapshot_timeout = install_snapshot_timeout
        self.pre_vote = pre_vote
        self.max_catch_up_rounds = max_catch_up_rounds
        self.max_catch_up_round_duration = max_catch_up_round_duration
        self.max_inflight_entries = max_inflight_entries
        self.capacity_threshold = capacity_threshold
        self.rng = random.Random(seed)

        # Persistent state (as last handed to the caller to persist).
        self.current_term = 0
        self.voted_for = 0
        self.log = RaftLog()

        # Volatile state.
        self.started = False
        self.now = 0
        self.capacity = 0
        self.state = State.FOLLOWER
        self.commit_index = 0
        self.leader_id = 0
        self.leader_address: str | None = None
        self.election_deadline = 0

        # Configuration: the latest one in the log is in force (dissertation 4.1).
        self.configuration = Configuration()
        self.configuration_index = 0
        self.configuration_committed_index = 0
        self.configuration_pending_index = 0

        # Snapshots: the last one taken or installed, and one being installed.
        self.snapshot_metadata: SnapshotMetadata | None = None
        self.installing: SnapshotMetadata | None = None

        # Candidate.
        self.votes: set[int] = set()
        self.in_pre_vote = False
        self.disrupt_leader = False

        # Follower: the highest index known to match the current leader's log,
        # and whether an acknowledgement waits for entries to become durable.
        self.match_bound = 0
        self.ack_pending = False

        # Leader.
        self.progress: dict[int, Progress] = {}
        self.quorum_check_start = 0
        self.transferee = 0
        self.transfer_start = 0
        self.transfer_sent = False
        self.catch_up_states: dict[int, membership.CatchUp] = {}
        self.catch_up_results: dict[int, CatchUpStatus] = {}
        self.read_round = 0
        self.reads_in_round: list[read.PendingRead] = []
        self.reads_waiting_commit: list[read.PendingRead] = []

        self.update = Update()
        self._timeout = 0

    # -- queries -------------------------------------------------------------

    @property
    def role(self) -> Role | None:
        server = self.configuration.get(self.id)
        return server.role if server is not None else None

    @property
    def leader(self) -> tuple[int, str | None]:
        if self.transferee:
            return (0, None)
        if self.state == State.LEADER:
            return (self.id, self.address)
        if self.leader_id:
            return (self.leader_id, self.leader_address)
        return (0, None)

    @property
    def last_index(self) -> int:
        return self.log.last_index

    @property
    def timeout(self) -> int:
        return self._timeout

    def match_index(self, server_id: int) -> int:
        """The leader's view of how much of the log ``server_id`` has durably."""
        if server_id == self.id:
            return self.log.persisted
        progress = self.progress.get(server_id)
        return progress.match_index if progress is not None else 0

    def catch_up_status(self, server_id: int) -> CatchUpStatus:
        if server_id in self.catch_up_states:
            return CatchUpStatus.RUNNING
        return self.catch_up_results.get(server_id, CatchUpStatus.NONE)

    # -- helpers for the handlers --------------------------------------------

    def trace(self, message: str, *args: object) -> None:
        """One line per decision, prefixed with who decided (C-Raft's tracef)."""
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%d: " + message, self.id, *args)

    def send(self, server_id: int, payload: Payload, address: str | None = None) -> None:
        """Queue a message; the address defaults to the one in the configuration."""
        if address is None:
            server = self.configuration.get(server_id)
            progress = self.progress.get(server_id)
            if server is not None:
                address = server.address
            elif progress is not None:
                address = progress.address  # removed by an uncommitted change
            else:
                address = ""
        self.update.messages.append(Message(server_id, address, payload))

    def reset_election_timer(self) -> None:
        """Re-arm the election timer at a fresh random point in [T, 2T)."""
        timeout = self.rng.randrange(self.election_timeout, 2 * self.election_timeout)
        self.election_deadline = self.now + timeout

    def compute_timeout(self) -> int:
        """When the next TIMEOUT event is due."""
        if self.state != State.LEADER:
            return self.election_deadline
        due = self.quorum_check_start + self.election_timeout
        for progress in self.progress.values():
            due = min(due, progress.last_send + self.heartbeat_timeout)
        if self.transferee:
            due = min(due, self.transfer_start + self.election_timeout)
        return max(due, self.now)

    # -- the entry point -----------------------------------------------------

    def step(self, event: Event) -> Update:
        """Feed one event; returns what the caller must persist, send and arm."""
        if not isinstance(event, Event):
            raise Malformed(f"expected an Event, got {type(event).__name__}")
        if event.type == EventType.START:
            if self.started:
                raise Invalid("server already started")
        elif not self.started:
            raise Invalid(f"{event.type.name} before START")
        handler = _HANDLERS.get(event.type)
        if handler is None:
            raise Invalid(f"unknown event type {event.type!r}")
        if event.type == EventType.RECEIVE:
            _check_message(event.message)

        term, voted_for, state = self.current_term, self.voted_for, self.state
        if event.type == EventType.START:
            term, voted_for = event.term, event.voted_for  # already durable
        commit_index, old_timeout = self.commit_index, self._timeout
        saved_now, saved_capacity = self.now, self.capacity
        self.update = Update()
        self.now = max(self.now, event.time)
        self.capacity = event.capacity
        try:
            handler(self, event)
        except BaseException:
            self.now, self.capacity = saved_now, saved_capacity
            raise

        update = self.update
        # Flags are worked out once, as plain ints: IntFlag arithmetic is slow.
        flags = 0
        if self.current_term != term:
            flags |= _CURRENT_TERM
        if self.voted_for != voted_for:
            flags |= _VOTED_FOR
        if update.entries:
            flags |= _ENTRIES
        if update.snapshot is not None:
            flags |= _SNAPSHOT
        if update.messages:
            flags |= _MESSAGES
        if self.state != state:
            flags |= _STATE
        if self.commit_index != commit_index:
            flags |= _COMMIT_INDEX
        if update.reads:
            flags |= _READS
        self._timeout = self.compute_timeout()
        if self._timeout != old_timeout:
            flags |= _TIMEOUT
        update.flags = UpdateFlags(flags)
        return update


_CURRENT_TERM = int(UpdateFlags.CURRENT_TERM)
_VOTED_FOR = int(UpdateFlags.VOTED_FOR)
_ENTRIES = int(UpdateFlags.ENTRIES)
_SNAPSHOT = int(UpdateFlags.SNAPSHOT)
_MESSAGES = int(UpdateFlags.MESSAGES)
_STATE = int(UpdateFlags.STATE)
_COMMIT_INDEX = int(UpdateFlags.COMMIT_INDEX)
_TIMEOUT = int(UpdateFlags.TIMEOUT)
_READS = int(UpdateFlags.READS)


def _check_message(message: Message | None) -> None:
    if not isinstance(message, Message):
        raise Malformed("RECEIVE needs a Message")
    if message.server_id <= 0:
        raise Malformed(f"message from invalid server id {message.server_id}")
    if getattr(message.payload, "type", None) not in _RECEIVERS:
        raise Malformed(f"unknown message payload {message.payload!r}")
    if message.payload.term < 0:
        raise Malformed(f"negative term in {message.payload.type.name}")


def _on_receive(r: Raft, event: Event) -> None:
    assert event.message is not None
    message = event.message
    receive = _RECEIVERS[message.payload.type]
    receive(r, message)


def _on_timeout(r: Raft, event: Event) -> None:
    if r.state == State.LEADER:
        replication.leader_tick(r)
    else:
        election.follower_tick(r)


_RECEIVERS: dict[MessageType, Callable[[Raft, Message], None]] = {
    MessageType.APPEND_ENTRIES: replication.recv_append_entries,
    MessageType.APPEND_ENTRIES_RESULT: replication.recv_append_entries_result,
    MessageType.REQUEST_VOTE: election.recv_request_vote,
    MessageType.REQUEST_VOTE_RESULT: election.recv_request_vote_result,
    MessageType.INSTALL_SNAPSHOT: snapshot.recv_install_snapshot,
    MessageType.TIMEOUT_NOW: election.recv_timeout_now,
}

_HANDLERS: dict[EventType, Handler] = {
    EventType.START: start.on_start,
    EventType.RECEIVE: _on_receive,
    EventType.PERSISTED_ENTRIES: replication.on_persisted_entries,
    EventType.PERSISTED_SNAPSHOT: snapshot.on_persisted_snapshot,
    EventType.CONFIGURATION: membership.on_configuration,
    EventType.SNAPSHOT: snapshot.on_snapshot,
    EventType.TIMEOUT: _on_timeout,
    EventType.SUBMIT: replication.on_submit,
    EventType.CATCH_UP: membership.on_catch_up,
    EventType.TRANSFER: transfer.on_transfer,
    EventType.READ_INDEX: read.on_read_index,
}
