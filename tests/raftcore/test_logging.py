"""Trace logging: one DEBUG line per decision on the "raftcore" logger."""

from __future__ import annotations

import logging

import pytest

from raftcore import RequestVote
from tests.raftcore.harness import Cluster


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("raftcore")]


def test_election_logs_its_decisions(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="raftcore")
    c = Cluster(3)

    c.elect(1)

    lines = messages(caplog)
    assert any("term" in line for line in lines)
    assert any("vote" in line for line in lines)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name.startswith("raftcore"))
    assert all("\n" not in line for line in lines)


def test_refused_vote_is_logged_with_its_reason(caplog: pytest.LogCaptureFixture) -> None:
    c = Cluster(3)
    c.elect(1)
    c.isolate(3)
    c.fire_timeout(3)  # its requests are lost
    c.heal()
    caplog.set_level(logging.DEBUG, logger="raftcore")

    c.send(3, 2, c.sent(3, 2, RequestVote)[-1])  # server 2 has a leader: refused

    assert any("leader" in line for line in messages(caplog))


def test_nothing_is_logged_above_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="raftcore")
    c = Cluster(3)

    c.elect(1)
    c.submit(1, b"x")
    c.settle()

    assert messages(caplog) == []
