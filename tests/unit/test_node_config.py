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
