"""NodeConfig refuses timings that make no sense, naming the flag."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from kvstore.node import NodeConfig


def config(**kw: float) -> NodeConfig:
    return NodeConfig(
        id=1, client_addr="127.0.0.1:1", peer_addr="127.0.0.1:2", data_dir=Path("d"), **kw
    )


def test_the_defaults() -> None:
    c = config()
    assert (c.flush_linger, c.read_round_gap) == (0.010, 0.004)
    assert config(read_round_gap=0).read_round_gap == 0  # rounds back to back


@pytest.mark.parametrize("flag", ["flush_linger", "read_round_gap"])
@pytest.mark.parametrize("value", [-0.001, math.nan])
def test_a_negative_or_missing_wait_is_refused(flag: str, value: float) -> None:
    with pytest.raises(ValueError, match="--" + flag.replace("_", "-")):
        config(**{flag: value})


def test_the_client_port_has_a_few_servers_by_default() -> None:
    assert config().client_acceptors == 8
    assert config(client_acceptors=1).client_acceptors == 1  # one server, the port exclusive


@pytest.mark.parametrize("count", [0, -1, 65])
def test_a_count_of_client_acceptors_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="--client-acceptors must be 1 to 64, got"):
        config(client_acceptors=count)
