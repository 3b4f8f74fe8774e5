"""Which asyncio event loop runs a member (and the benchmark tool).

uvloop (libuv) runs the same asyncio code with a cheaper loop turn; measured
here, a bare grpc.aio echo server gains about a quarter in calls/s with it
(DESIGN 3.3). It is a dependency on Linux; where it cannot be imported the
standard loop runs instead, with a warning, since both are correct.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("kvstore.eventloop")


def run_event_loop(main: Coroutine[Any, Any, T], kind: str = "uvloop") -> T:
    """``asyncio.run(main)`` on the loop ``kind`` names ("uvloop" or "asyncio")."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed: running on the standard asyncio loop")
        else:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                return runner.run(main)
    elif kind != "asyncio":
        main.close()
        raise ValueError(f"unknown event loop {kind!r}: uvloop or asyncio")
    return asyncio.run(main)
