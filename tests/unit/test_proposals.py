"""Proposals: the client writes a leader waits on, by log index and term."""

from __future__ import annotations

import asyncio

import pytest

from kvstore.node.waiters import LeadershipLost, Proposals, WriteTimeout
from kvstore.storage import Put


def test_the_operation_proposed_is_found_only_for_its_own_entry() -> None:
    async def main() -> None:
        proposals = Proposals()
        op = Put(b"k", b"v")
        proposals.add(5, 2, op)
        assert proposals.operation(5, 2) is op
        # Entry 5 of another term is another write: decode it, do not reuse.
        assert proposals.operation(5, 3) is None
        assert proposals.operation(6, 2) is None

    asyncio.run(main())


def test_expire_fails_only_the_writes_past_their_deadline() -> None:
    async def main() -> None:
        proposals = Proposals()
        late = proposals.add(1, 1, deadline=10.0)
        on_time = proposals.add(2, 1, deadline=20.0)
        unbounded = proposals.add(3, 1)
        assert proposals.have_deadlines
        proposals.expire(15.0)
        with pytest.raises(WriteTimeout):
            late.result()
        assert not on_time.done() and not unbounded.done()
        # The late write's entry may still apply: that is not an error.
        proposals.applied(1, 1, "ignored")
        proposals.applied(2, 1, "result")
        assert on_time.result() == "result"
        assert not proposals.have_deadlines
        proposals.applied(3, 2, "other")  # replaced by another leader's entry
        with pytest.raises(LeadershipLost):
            unbounded.result()
        assert len(proposals) == 0

    asyncio.run(main())
