"""``kvctl bench``: load a cluster and print throughput and latency (etcd's
``benchmark`` is the model).

Clients are grpc.aio calls on one event loop, ``--clients`` of them in flight,
spread over ``--conns`` connections and the given endpoints (each channel its
own TCP connection, as etcd's ``--conns``; gRPC would otherwise let channels
to one address share one). ``echo`` measures a
bare grpc.aio echo server (started here, in a child process) with the same
client code, so that the store's numbers can be read against the cost of one
unary call on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc

from kvstore.tls import ClientTls
from kvstore.v1 import kv_pb2, kv_pb2_grpc

ECHO_METHOD = "/kvstore.bench.Echo/Echo"


@dataclass
class Report:
    name: str
    clients: int
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]

    def line(self) -> str:
        return (
            f"{self.name:<18} clients {self.clients:>3}  {self.rate:>8.0f} req/s  "
            f"p50 {self.percentile(50) * 1000:7.2f} ms  p99 {self.percentile(99) * 1000:7.2f} ms  "
            f"errors {self.errors}"
        )


class Progress:
    """A one-line progress bar on stderr (only when it is a terminal, or forced)."""

    def __init__(
        self, total: int, label: str, enabled: bool, unit: Callable[[int], str] = str
    ) -> None:
        self.total, self.label, self.enabled, self.unit = total, label, enabled, unit
        self.done = 0
        self._last = 0.0

    def tick(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            width = 30
            filled = min(width, int(width * self.done / max(self.total, 1)))
            bar = "#" * filled + "-" * (width - filled)
            done, total = self.unit(self.done), self.unit(self.total)
            sys.stderr.write(f"\r{self.label} [{bar}] {done}/{total}")
            if self.done >= self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


async def run_load(
    name: str,
    call: Callable[[int], Awaitable[object]],
    clients: int,
    total: int,
    progress: bool,
) -> Report:
    """``total`` calls with ``clients`` in flight; latencies per call."""
    latencies: list[float] = []
    errors = 0
    next_request = 0
    bar = Progress(total, f"{name} x{clients}", progress)

    async def client() -> None:
        nonlocal next_request, errors
        while next_request < total:
            i = next_request
            next_request += 1
            started = time.perf_counter()
            try:
                await call(i)
                latencies.append(time.perf_counter() - started)
            except grpc.aio.AioRpcError:
                errors += 1
            bar.tick()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return Report(name, clients, len(latencies), errors, time.perf_counter() - started, latencies)


def _channels(
    endpoints: list[str], conns: int, tls: ClientTls | None = None
) -> list[grpc.aio.Channel]:
    """``conns`` channels over the endpoints, each with its own connection; TLS as
    kvctl's --cacert/--cert/--key ask."""
    targets = [endpoints[i % len(endpoints)] for i in range(conns)]
    options = [("grpc.use_local_subchannel_pool", 1)]
    if tls is None:
        return [grpc.aio.insecure_channel(t, options=options) for t in targets]
    credentials = tls.credentials()
    return [grpc.aio.secure_channel(t, credentials, options=options) for t in targets]


async def bench_kv(args: argparse.Namespace, op: str, clients: int) -> Report:
    channels = _channels(args.endpoints, args.conns, getattr(args, "tls", None))
    stubs = [kv_pb2_grpc.KVStub(c) for c in channels]
    value = os.urandom(args.value_size)
    keys = [b"bench/%08d" % i for i in range(args.key_count)]
    rng = random.Random(1)

    async def put(i: int) -> object:
        return await stubs[i % len(stubs)].Put(
            kv_pb2.PutRequest(key=keys[rng.randrange(len(keys))], value=value), timeout=10
        )

    async def get(i: int) -> object:
        return await stubs[i % len(stubs)].Get(
            kv_pb2.GetRequest(key=keys[rng.randrange(len(keys))]), timeout=10
        )

    try:
        call = put if op == "put" else get
        return await run_load(op, call, clients, args.total, args.progress)
    finally:
        for c in channels:
            await c.close()


async def bench_echo(args: argparse.Namespace, address: str, clients: int) -> Report:
    channels = _channels([address], args.conns)
    calls = [c.unary_unary(ECHO_METHOD) for c in channels]
    payload = os.urandom(args.value_size + 20)

    async def echo(i: int) -> object:
        return await calls[i % len(calls)](payload, timeout=10)

    try:
        return await run_load("echo", echo, clients, args.total, args.progress)
    finally:
        for c in channels:
            await c.close()


async def serve_echo(address: str) -> None:
    """A bare grpc.aio server whose one method returns its request."""

    async def echo(request: bytes, context: object) -> bytes:
        return request

    server = grpc.aio.server()
    handler = grpc.method_handlers_generic_handler(
        "kvstore.bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


def start_echo_server(event_loop: str = "uvloop") -> tuple[subprocess.Popen[bytes], str]:
    """The echo server in a child process, by default on the event loop
    ``kvstore serve`` runs on, so that the two compare; "asyncio" gives grpc.aio
    as it comes."""
    from kvstore.devcluster import free_port

    address = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from kvstore.eventloop import run_event_loop; import kvstore.bench as b; "
            f"run_event_loop(b.serve_echo({address!r}), {event_loop!r})",
        ]
    )
    return process, address


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("op", choices=["put", "get", "echo"], help="what to measure")
    parser.add_argument("--clients", default="1,16,64", help="concurrent clients, a list")
    parser.add_argument(
        "--conns", type=int, default=4, help="gRPC channels, each its own TCP connection"
    )
    parser.add_argument("--total", type=int, default=5000, help="requests per run")
    parser.add_argument("--key-count", type=int, default=10000)
    parser.add_argument("--value-size", type=int, default=100)
    parser.add_argument("--progress", action="store_true", default=sys.stderr.isatty())
    parser.add_argument(
        "--echo-loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="echo: the echo server's event loop (uvloop: as kvstore serve's)",
    )


async def run(args: argparse.Namespace) -> list[Report]:
    if isinstance(args.endpoints, str):
        args.endpoints = [e for e in args.endpoints.split(",") if e]
    reports = []
    for clients in [int(c) for c in str(args.clients).split(",")]:
        if args.op == "echo":
            process, address = start_echo_server(args.echo_loop)
            try:
                await asyncio.sleep(0.5)
                reports.append(await bench_echo(args, address, clients))
            finally:
                process.terminate()
                process.wait(timeout=10)
        else:
            reports.append(await bench_kv(args, args.op, clients))
        print(reports[-1].line(), flush=True)
    return reports


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvctl bench")
    parser.add_argument("--endpoints", default="127.0.0.1:7101")
    add_arguments(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    asyncio.run(run(build_parser().parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
