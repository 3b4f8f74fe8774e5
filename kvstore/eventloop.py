"""Which asyncio event loop runs a member (and the benchmark tool).

uvloop (libuv) runs the same asyncio code with a cheaper loop turn; measured
here, a bare grpc.aio echo server gains about a quarter in calls/s with it
(DESIGN 3.3). It is a dependency on Linux; where it cannot be imported the
standard loop runs instead, with a warning, since both are correct.
"""

from __future__ import annotations

import asyncio
import gc
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


#: Allocations between young-generation collections (CPython's default is 700).
GC_YOUNG_THRESHOLD = 10_000


def settle_gc() -> None:
    """Once a member has started: what it built so far (modules, protobuf
    descriptors, gRPC, the log loaded from disk) lives until it exits, so it
    is frozen out of the collector's walks; and young objects are collected
    less often, since the request path makes few reference cycles. Measured
    on a leader at 64 clients: time in the collector per put 8 -> 2 us."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
