"""Concurrent clients that issue random operations and record them in a history.

Each worker runs one operation at a time on a small set of keys, through the
public gRPC API (grpc.aio stubs of ``kvstore.v1``), and records it once with
the `Recorder`: invoke before the first attempt, then ok, fail or info.

Within one operation a worker retries on the next endpoint, as a client
library would, until the operation's deadline. Writes carry a RequestId, the
same on every retry, so a retry cannot apply twice. The outcome follows the
status codes of DESIGN 3.1 (classified by ``kvstore.client_errors.classify``):

- ok: an attempt answered;
- fail: a read failed, or no attempt of a write can have reached the log
  (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE from the server);
- info: some attempt of a write may have reached the log (DEADLINE_EXCEEDED,
  ABORTED, a connection lost after sending) and none answered. The write may
  still take effect later, so the worker continues as a new process (as
  Jepsen does): one process never has two operations open at once.

Keys rotate: after ``ops_per_key`` operations a key is retired and a fresh
one takes its place (Jepsen's independent keys). The store is checked key by
key, and an open (info) write keeps a key's search space large for the rest
of its history; bounded histories per key keep the check fast however long
the run.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc.aio

from kvstore.client import CHANNEL_OPTIONS
from kvstore.client_errors import classify
from kvstore.v1 import kv_pb2, kv_pb2_grpc
from tests.chaos.history import Recorder

__all__ = ["KEY_PREFIX", "Channels", "KeySpace", "Workload", "run_workers"]

KEY_PREFIX = "chaos/"


@dataclass(frozen=True)
class Workload:
    clients: int = 6
    keys: int = 5  # keys in use at once
    ops_per_key: int = 400
    op_timeout: float = 2.0  # one logical operation, retries included
    attempt_timeout: float = 1.0  # one attempt on one endpoint
    think: float = 0.005  # at most this many seconds between two ops of a worker
    # Relative frequencies of get, put, cas and delete.
    mix: tuple[float, float, float, float] = (0.4, 0.25, 0.25, 0.1)
    # Serializable gets may be stale, so a run with them must be found not linearizable
    # under partitions: a check of the harness itself, never of the store.
    serializable_reads: bool = False


class KeySpace:
    """The keys in use: a few at a time, each retired after ``ops_per_key`` ops."""

    def __init__(self, active: int, ops_per_key: int) -> None:
        self._names = (f"{KEY_PREFIX}k{i:05d}" for i in itertools.count())
        self._ops_per_key = ops_per_key
        self.active = [next(self._names) for _ in range(active)]
        self.used: list[str] = list(self.active)
        self._counts = dict.fromkeys(self.active, 0)
        #: The last value seen for each key (a hint for CAS expectations).
        self.last_seen: dict[str, str | None] = {}

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self.active))
        key = self.active[slot]
        self._counts[key] += 1
        if self._counts[key] >= self._ops_per_key:
            fresh = next(self._names)
            self.active[slot] = fresh
            self.used.append(fresh)
            self._counts[fresh] = 0
        return key


class Channels:
    """One grpc.aio channel per client endpoint, shared by the workers."""

    def __init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def kv(self, endpoint: str) -> kv_pb2_grpc.KVStub:
        return kv_pb2_grpc.KVStub(self._channel(endpoint))

    def cluster(self, endpoint: str) -> kv_pb2_grpc.ClusterStub:
        return kv_pb2_grpc.ClusterStub(self._channel(endpoint))

    def _channel(self, endpoint: str) -> grpc.aio.Channel:
        channel = self._channels.get(endpoint)
        if channel is None:
            channel = self._channels[endpoint] = grpc.aio.insecure_channel(
                endpoint, options=CHANNEL_OPTIONS
            )
        return channel

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)


class _Worker:
    def __init__(
        self,
        slot: int,
        workload: Workload,
        endpoints: Callable[[], Sequence[str]],
        recorder: Recorder,
        keys: KeySpace,
        channels: Channels,
        seed: int,
    ) -> None:
        self.slot = slot
        self.process = slot
        self.workload = workload
        self.endpoints = endpoints
        self.recorder = recorder
        self.keys = keys
        self.channels = channels
        self.rng = random.Random(seed)
        self.client_id = self.rng.getrandbits(63) + 1
        self.sequence = 0
        self.writes = 0
        self.current = slot  # endpoint index; workers start on different members

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.one_op()
            if self.workload.think:
                await asyncio.sleep(self.rng.uniform(0, self.workload.think))

    async def one_op(self) -> None:
        kind = self.rng.choices(("get", "put", "cas", "delete"), self.workload.mix)[0]
        key = self.keys.pick(self.rng)
        value = expected = None
        request: Any
        if kind == "get":
            request = kv_pb2.GetRequest(key=key.encode())
            if self.workload.serializable_reads:
                request.consistency = kv_pb2.SERIALIZABLE
        elif kind == "delete":
            request = kv_pb2.DeleteRequest(key=key.encode())
        else:
            self.writes += 1
            value = f"{self.process}.{self.writes}"
            if kind == "put":
                request = kv_pb2.PutRequest(key=key.encode(), value=value.encode())
            else:
                expected = self.keys.last_seen.get(key)
                request = kv_pb2.CompareAndSwapRequest(key=key.encode(), new_value=value.encode())
                if expected is None:
                    request.absent = True
                else:
                    request.value = expected.encode()
        if kind != "get":
            self.sequence += 1
            request.request_id.client_id = self.client_id
            request.request_id.sequence = self.sequence
        handle = self.recorder.invoke(self.process, kind, key, value, expected)
        outcome = await self._call(kind, request)
        if isinstance(outcome, str):
            if outcome == "info":
                self.recorder.info(handle)
                self.process += self.workload.clients  # the open op may still happen
            else:
                self.recorder.fail(handle)
            return
        if kind == "get":
            result = outcome.kv.value.decode() if outcome.found else None
            self.keys.last_seen[key] = result
            self.recorder.ok(handle, result=result)
        elif kind == "put":
            self.keys.last_seen[key] = value
            self.recorder.ok(handle)
        elif kind == "delete":
            self.keys.last_seen[key] = None
            self.recorder.ok(handle, ok=outcome.deleted)
        else:
            self.keys.last_seen[key] = value if outcome.succeeded else _value_of(outcome)
            self.recorder.ok(handle, ok=outcome.succeeded)

    async def _call(self, kind: str, request: Any) -> Any:
        """The response, or "fail" / "info" when no attempt answered in time."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.workload.op_timeout
        write = kind != "get"
        maybe_applied = False
        tried = 0
        while (remaining := deadline - loop.time()) > 0.01:
            endpoints = self.endpoints()
            endpoint = endpoints[self.current % len(endpoints)]
            stub = self.channels.kv(endpoint)
            method = {
                "get": stub.Get,
                "put": stub.Put,
                "delete": stub.Delete,
                "cas": stub.CompareAndSwap,
            }[kind]
            try:
                return await method(request, timeout=min(remaining, self.workload.attempt_timeout))
            except grpc.aio.AioRpcError as err:
                code, details = err.code(), err.details() or ""
            retriable, applied = classify(code, details)
            maybe_applied = maybe_applied or (write and applied)
            if not retriable:
                break
            self.current += 1
            tried += 1
            if tried % len(endpoints) == 0:  # a full round failed: back off a little
                await asyncio.sleep(min(0.1, max(0.0, deadline - loop.time())))
        return "info" if maybe_applied else "fail"


def _value_of(response: Any) -> str | None:
    return response.kv.value.decode() if response.HasField("kv") else None


async def run_workers(
    workload: Workload,
    endpoints: Callable[[], Sequence[str]],
    recorder: Recorder,
    keys: KeySpace,
    channels: Channels,
    stop: asyncio.Event,
    seed: int,
) -> None:
    """Run ``workload.clients`` workers until ``stop`` is set (each ends its op first)."""
    workers = [
        _Worker(slot, workload, endpoints, recorder, keys, channels, seed * 1000 + slot)
        for slot in range(workload.clients)
    ]
    await asyncio.gather(*(w.run(stop) for w in workers))
