"""Membership changes on the leader: add, remove, promote, demote, transfer.

Each operation is a short sequence of raftcore events on the node loop:
SUBMIT a CHANGE entry (an encoded ``Configuration`` that differs from the
current one in one server), wait until the leader has applied it (then
raftcore counts it as committed: the node reports it with a CONFIGURATION
event), CATCH_UP a stand-by before it may vote, TRANSFER leadership before
the leader removes or demotes itself.

Why the pieces are as they are:

- Operations run one at a time per leader (a lock): raftcore accepts one
  uncommitted change at a time and answers a second with CantChange, which
  would turn two concurrent MemberAdds into a spurious error. A change left
  uncommitted by an earlier leader is waited for, within the deadline.
- MemberAdd, MemberPromote and MemberDemote say what the end state is, so
  they are idempotent: a retry after a lost answer, a leader change or a
  deadline continues where the last attempt stopped (a new member that is
  already a stand-by is caught up and promoted). When leadership is lost in
  the middle they raise ``NotLeaderError``, and the executor retries on the
  new leader. MemberRemove is not idempotent (a second one finds no member):
  leadership lost after its entry entered the log is ``LeadershipLost``,
  outcome unknown.
- The leader never removes or demotes itself: it transfers leadership to
  the most up-to-date voter and raises ``NotLeaderError``, so that the
  executor hands the request to the new leader, which then changes the old
  one like any follower (C-Raft's and etcd's way; a leader outside the
  voters would have to keep leading a cluster it does not count in).
- A change that would leave fewer voters the leader has heard from recently
  than a majority of the new voters is refused (etcd's strict reconfig
  check): it could not commit, and would block every later change.
- Every wait is bounded by the request's deadline; the error then says
  what state the cluster was left in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import TYPE_CHECKING

from kvstore.node.waiters import LeadershipLost, NotLeaderError
from raftcore import (
    CantChange,
    CatchUpStatus,
    Configuration,
    Entry,
    EntryType,
    Event,
    NoSpace,
    RaftError,
    Role,
    Server,
    State,
)
from raftcore import NotLeader as RaftNotLeader

if TYPE_CHECKING:
    from kvstore.node.node import Node

log = logging.getLogger("kvstore.membership")

_POLL = 0.01  # seconds between looks at raftcore's state while waiting
# A voter counts as active when the leader heard from it within this many
# election timeouts and its peer stream is up (the strict reconfig check).
_ACTIVE_ELECTION_TIMEOUTS = 1


class MembershipError(Exception):
    """A membership request refused or failed; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def removed_members(configurations: Iterable[Configuration]) -> set[int]:
    """Ids that were in one configuration and are not in a later one.

    Every member refuses their messages (as etcd refuses removed members): a
    removed member that missed its removal keeps campaigning. Other unknown
    ids are accepted by a member that does not vote (see Node.accepts_from).
    """
    removed: set[int] = set()
    previous: set[int] | None = None
    for configuration in configurations:
        ids = {server.id for server in configuration}
        if previous is not None:
            removed |= previous - ids
        removed -= ids
        previous = ids
    return removed


def describe(configuration: Configuration) -> str:
    return ", ".join(f"{s.id}={s.address} {s.role.name}" for s in configuration) or "empty"


class Membership:
    """The leader's side of the Cluster membership calls (kvstore.v1.Cluster)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._lock = asyncio.Lock()

    # -- operations --------------------------------------------------------------

    async def add(self, server_id: int, address: str, timeout: float) -> Configuration:
        """Add ``server_id`` as a stand-by, catch it up, promote it; the new configuration."""
        deadline = self._deadline(timeout)
        async with self._exclusive(deadline, f"adding member {server_id}"):
            await self._settled(deadline)
            configuration = self.node.raft.configuration
            for server in configuration:
                if server.address == address and server.id != server_id:
                    raise MembershipError(
                        "ALREADY_EXISTS",
                        f"peer address {address} is already member {server.id}'s",
                    )
            existing = configuration.get(server_id)
            if existing is not None and existing.address != address:
                raise MembershipError(
                    "ALREADY_EXISTS",
                    f"member {server_id} already exists with peer address {existing.address}, "
                    f"not {address}: remove it first to re-add it elsewhere",
                )
            with _retry_elsewhere_if_leadership_lost():
                if existing is None:
                    new = configuration.with_server(server_id, address, Role.STANDBY)
                    await self._change(new, deadline, f"add member {server_id} as a stand-by")
                    log.info("member %d (%s) added as a stand-by", server_id, address)
                await self._promote(server_id, deadline)
        return self.node.raft.configuration

    async def promote(self, server_id: int, timeout: float) -> Configuration:
        """Catch a stand-by (or spare) up, then make it a voter; idempotent."""
        deadline = self._deadline(timeout)
        async with self._exclusive(deadline, f"promoting member {server_id}"):
            await self._settled(deadline)
            self._member(server_id)
            with _retry_elsewhere_if_leadership_lost():
                await self._promote(server_id, deadline)
        return self.node.raft.configuration

    async def demote(self, server_id: int, timeout: float) -> Configuration:
        """Make a voter a stand-by; the leader first hands leadership over."""
        deadline = self._deadline(timeout)
        async with self._exclusive(deadline, f"demoting member {server_id}"):
            await self._settled(deadline)
            server = self._member(server_id)
            if server.role == Role.STANDBY:
                return self.node.raft.configuration
            configuration = self.node.raft.configuration
            new = configuration.with_server(server_id, server.address, Role.STANDBY)
            if server.role == Role.VOTER:
                self._check_voters_remain(new, f"demote member {server_id}")
            if server_id == self.node.config.id:
                await self._hand_over(deadline, "to be demoted")
            with _retry_elsewhere_if_leadership_lost():
                await self._change(new, deadline, f"demote member {server_id} to a stand-by")
            log.info("member %d demoted to a stand-by", server_id)
        return self.node.raft.configuration

    async def remove(self, server_id: int, timeout: float) -> Configuration:
        """Remove a member; the leader first hands leadership over. Not idempotent."""
        deadline = self._deadline(timeout)
        async with self._exclusive(deadline, f"removing member {server_id}"):
            await self._settled(deadline)
            server = self._member(server_id)
            configuration = self.node.raft.configuration
            new = configuration.without_server(server_id)
            if server.role == Role.VOTER:
                self._check_voters_remain(new, f"remove member {server_id}")
            if server_id == self.node.config.id:
                await self._hand_over(deadline, "to be removed")
            await self._change(new, deadline, f"remove member {server_id}")
            log.info("member %d (%s) removed", server_id, server.address)
        return self.node.raft.configuration

    async def transfer(self, target: int, timeout: float) -> int:
        """Move leadership to ``target`` (0: the most up-to-date voter); the new leader."""
        deadline = self._deadline(timeout)
        self._require_leader()
        if target == self.node.config.id:
            return target
        if target:
            server = self._member(target)
            if server.role != Role.VOTER:
                raise MembershipError(
                    "FAILED_PRECONDITION",
                    f"member {target} is a {server.role.name.lower()}, not a voter: "
                    "promote it before it can lead",
                )
        return await self._transfer(target, deadline)

    # -- steps -------------------------------------------------------------------

    async def _promote(self, server_id: int, deadline: float) -> None:
        await self._settled(deadline)
        server = self._member(server_id)
        if server.role == Role.VOTER:
            return
        if server.role == Role.SPARE:  # a spare receives no entries: it cannot catch up
            new = self.node.raft.configuration.with_server(server_id, server.address, Role.STANDBY)
            await self._change(new, deadline, f"make spare {server_id} a stand-by")
        await self._catch_up(server_id, server.address, deadline)
        await self._settled(deadline)
        server = self._member(server_id)
        new = self.node.raft.configuration.with_server(server_id, server.address, Role.VOTER)
        await self._change(new, deadline, f"promote member {server_id} to voter")
        log.info("member %d (%s) promoted to voter", server_id, server.address)

    async def _catch_up(self, server_id: int, address: str, deadline: float) -> None:
        """CATCH_UP rounds until raftcore reports FINISHED (or ABORTED, or the deadline)."""
        node = self.node
        raft = node.raft
        try:
            node.step(Event.catch_up(node.now(), server_id, capacity=node.capacity))
        except RaftNotLeader as exc:
            raise NotLeaderError(str(exc)) from None
        except RaftError as exc:
            raise MembershipError(
                "FAILED_PRECONDITION", f"cannot catch member {server_id} up: {exc}"
            ) from None
        while True:
            self._require_leader()
            status = raft.catch_up_status(server_id)
            if status == CatchUpStatus.FINISHED:
                return
            where = (
                f"it has the log up to index {raft.match_index(server_id)}, "
                f"the leader up to {raft.last_index}"
            )
            if status != CatchUpStatus.RUNNING:
                raise MembershipError(
                    "FAILED_PRECONDITION",
                    f"catch-up of member {server_id} ({address}) aborted: it did not catch up "
                    f"with the leader's log in {raft.max_catch_up_rounds} rounds ({where}). "
                    "It stays a stand-by: check that it runs and is reachable, then retry "
                    "(MemberAdd or MemberPromote) or remove it",
                )
            if self._remaining(deadline) <= 0:
                raise MembershipError(
                    "DEADLINE_EXCEEDED",
                    f"member {server_id} ({address}) did not catch up before the deadline "
                    f"({where}). It stays a stand-by: is it running and reachable at "
                    f"{address}? A retry continues (MemberAdd or MemberPromote)",
                )
            await asyncio.sleep(_POLL)

    async def _change(self, configuration: Configuration, deadline: float, what: str) -> None:
        """SUBMIT one CHANGE entry and wait until the leader has applied it."""
        node = self.node
        entry = Entry(node.raft.current_term, EntryType.CHANGE, configuration.encode())
        try:
            node.step(Event.submit(node.now(), [entry], capacity=node.capacity))
        except RaftNotLeader as exc:
            raise NotLeaderError(str(exc)) from None
        except CantChange as exc:
            raise MembershipError("UNAVAILABLE", f"cannot {what} now: {exc}") from None
        except NoSpace as exc:
            raise MembershipError("RESOURCE_EXHAUSTED", f"cannot {what}: {exc}") from None
        except RaftError as exc:
            raise MembershipError("FAILED_PRECONDITION", f"cannot {what}: {exc}") from None
        index = node.raft.last_index
        log.info("%s: change at index %d: %s", what, index, describe(configuration))
        future = node.proposals.add(index, entry.term)
        try:
            await asyncio.wait_for(future, self._remaining(deadline))
        except TimeoutError:
            raise MembershipError(
                "DEADLINE_EXCEEDED",
                f"{what}: the change entered the log at index {index} but was not committed "
                "before the deadline (are a majority of the voters up?); it may still take effect",
            ) from None

    async def _hand_over(self, deadline: float, why: str) -> None:
        """Transfer leadership away (retrying a transfer that timed out), then raise
        NotLeaderError so the request goes on at the new leader."""
        while True:
            try:
                new_leader = await self._transfer(0, deadline)
            except MembershipError as exc:
                if exc.code != "UNAVAILABLE" or self._remaining(deadline) <= 0:
                    raise
                log.warning("%s; trying again", exc.message)
                continue
            raise NotLeaderError(
                f"member {self.node.config.id} handed leadership to {new_leader} {why}"
            )

    async def _transfer(self, target: int, deadline: float) -> int:
        node = self.node
        raft = node.raft
        await self._no_transfer(deadline)
        try:
            node.step(Event.transfer(node.now(), target, capacity=node.capacity))
        except RaftNotLeader as exc:
            raise NotLeaderError(str(exc)) from None
        except RaftError as exc:
            name = f"member {target}" if target else "another voter"
            raise MembershipError(
                "FAILED_PRECONDITION", f"cannot transfer leadership to {name}: {exc}"
            ) from None
        chosen = raft.transferee
        log.info("transferring leadership to member %d", chosen)
        while True:
            if raft.state != State.LEADER:
                leader_id = raft.leader[0]
                if leader_id and leader_id != node.config.id:
                    return leader_id
            elif not raft.transferee:
                raise MembershipError(
                    "UNAVAILABLE",
                    f"leadership transfer to member {chosen} did not complete within the "
                    f"election timeout ({raft.election_timeout} ms): is it running and "
                    f"reachable? member {node.config.id} still leads",
                )
            if self._remaining(deadline) <= 0:
                raise MembershipError(
                    "DEADLINE_EXCEEDED",
                    f"leadership transfer to member {chosen} not completed before the deadline",
                )
            await asyncio.sleep(_POLL)

    # -- waiting and checks ------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _exclusive(self, deadline: float, what: str) -> AsyncIterator[None]:
        self._require_leader()
        try:
            # asyncio.timeout, not wait_for: 3.11's wait_for can lose an acquired
            # lock when the timeout and the acquisition coincide.
            async with asyncio.timeout(self._remaining(deadline)):
                await self._lock.acquire()
        except TimeoutError:
            raise MembershipError(
                "UNAVAILABLE",
                f"{what}: another membership change is still in progress on the leader",
            ) from None
        try:
            yield
        finally:
            self._lock.release()

    async def _settled(self, deadline: float) -> None:
        """Wait until this node leads, transfers nothing and no change is uncommitted."""
        raft = self.node.raft
        await self._no_transfer(deadline)
        while raft.configuration_pending_index:
            self._require_leader()
            if self._remaining(deadline) <= 0:
                raise MembershipError(
                    "UNAVAILABLE",
                    f"the configuration change at index {raft.configuration_pending_index} "
                    "is not committed yet (are a majority of the voters up?)",
                )
            await asyncio.sleep(_POLL)

    async def _no_transfer(self, deadline: float) -> None:
        raft = self.node.raft
        while True:
            self._require_leader()
            if not raft.transferee:
                return
            if self._remaining(deadline) <= 0:
                raise MembershipError(
                    "UNAVAILABLE", f"leadership is being transferred to member {raft.transferee}"
                )
            await asyncio.sleep(_POLL)

    def _require_leader(self) -> None:
        node = self.node
        if node.raft.state != State.LEADER:
            raise NotLeaderError(f"member {node.config.id} is not the leader")

    def _member(self, server_id: int) -> Server:
        server = self.node.raft.configuration.get(server_id)
        if server is None:
            raise MembershipError(
                "NOT_FOUND",
                f"member {server_id} is not in the configuration "
                f"({describe(self.node.raft.configuration)})",
            )
        return server

    def _check_voters_remain(self, new: Configuration, what: str) -> None:
        """Refuse a change whose voters could not commit it (etcd's strict reconfig check)."""
        voters = new.voter_ids()
        if not voters:
            raise MembershipError(
                "FAILED_PRECONDITION", f"cannot {what}: it is the last voter of the cluster"
            )
        node = self.node
        now = asyncio.get_running_loop().time()
        window = _ACTIVE_ELECTION_TIMEOUTS * node.raft.election_timeout / 1000
        # A stream that broke tells of a crash at once, before the silence does.
        streams = node.transport.stats() if node.transport is not None else {}

        def is_active(i: int) -> bool:
            if i == node.config.id:
                return True
            stream = streams.get(i)
            heard = node.last_heard.get(i, float("-inf"))
            return now - heard <= window and (stream is None or stream.connected)

        active = [i for i in voters if is_active(i)]
        if len(active) <= len(voters) // 2:
            silent = sorted(set(voters) - set(active))
            raise MembershipError(
                "FAILED_PRECONDITION",
                f"cannot {what}: of the {len(voters)} voters left, only {len(active)} "
                f"answered recently (silent: {silent}); the change could not be committed",
            )

    def _deadline(self, timeout: float) -> float:
        return asyncio.get_running_loop().time() + timeout

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(deadline - asyncio.get_running_loop().time(), 0.0)


@contextlib.contextmanager
def _retry_elsewhere_if_leadership_lost() -> Iterator[None]:
    """For idempotent operations: leadership lost midway means "go on at the new
    leader", which ``NotLeaderError`` tells the executor."""
    try:
        yield
    except LeadershipLost as exc:
        raise NotLeaderError(f"{exc}; going on at the new leader") from None
