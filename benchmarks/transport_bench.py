"""Transport benchmark: Raft messages per second, one way, between two transports on loopback.

The receiver runs in a child process (as a peer would, on the other core);
the sender keeps its Transport's queue fed and the receiver counts what its
``on_messages`` callback gets. Each round is run with frames of at most 1
message (one gRPC stream message per Raft message) and at most 64, for
heartbeats (AppendEntries without entries) and for AppendEntries carrying one
100-byte entry (a typical replicated put).

    .venv/bin/python benchmarks/transport_bench.py [--messages 50000] [--uvloop]

Benchmarks are programs, not tests: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from typing import Any

from kvstore.transport import PeerServicer, Transport, start_peer_server
from raftcore import AppendEntries, Entry, EntryType, Message

CLUSTER = 1


def _new_loop(use_uvloop: bool) -> None:
    if use_uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def serve(expected: int) -> None:
    """The receiving member: count messages, time first to last, report CPU used."""
    received = 0
    first = last = 0.0
    cpu_first = 0.0
    done = asyncio.Event()

    def on_messages(from_id: int, from_address: str, messages: list[Message]) -> None:
        nonlocal received, first, last, cpu_first
        if received == 0:
            first = time.perf_counter()
            cpu_first = time.process_time()
        received += len(messages)
        if received >= expected:
            last = time.perf_counter()
            done.set()

    servicer = PeerServicer(
        cluster_id=CLUSTER, node_id=2, accept_from=lambda _: True, on_messages=on_messages
    )
    server = await start_peer_server(servicer, "127.0.0.1:0")
    print(f"PORT {server.port}", flush=True)
    try:
        await asyncio.wait_for(done.wait(), 120)
        cpu = time.process_time() - cpu_first
        elapsed = last - first
        report = {
            "received": received,
            "seconds": elapsed,
            "per_second": received / elapsed,
            "cpu_us_per_message": cpu / received * 1e6,
            "frames": servicer.stats.batches,
        }
        print(json.dumps(report), flush=True)
    finally:
        await server.stop(5.0)  # the sender ends its stream once it has the report


async def send(
    port: int, count: int, per_frame: int, entries: list[Entry], child: subprocess.Popen[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Feed the queue (never past its bound, so nothing is dropped); the receiver's report."""
    transport = Transport(
        cluster_id=CLUSTER,
        node_id=1,
        node_address="127.0.0.1:1",
        max_frame_messages=per_frame,
        max_queue=8192,
    )
    address = f"127.0.0.1:{port}"
    messages = [Message(2, address, AppendEntries(1, i, 1, i, entries)) for i in range(count)]
    assert child.stdout is not None
    report = asyncio.ensure_future(asyncio.to_thread(child.stdout.readline))
    cpu = time.process_time()
    transport.send(messages[:1])
    sender = transport._senders[2]  # the benchmark watches the queue to avoid drops
    sent = 1
    while sent < count:
        room = 4096 - sender.queued
        if room > 0:
            transport.send(messages[sent : sent + room])
            sent += min(room, count - sent)
        await asyncio.sleep(0)
    while sender.stats.messages_sent < count:
        await asyncio.sleep(0.001)
    cpu = time.process_time() - cpu
    stats = sender.stats
    received = json.loads(await asyncio.wait_for(report, 120))
    await transport.close()
    sent_report = {
        "cpu_us_per_message": cpu / count * 1e6,
        "frames": stats.frames_sent,
        "dropped": stats.dropped,
    }
    return sent_report, received


def round_(count: int, per_frame: int, payload: int, use_uvloop: bool) -> None:
    argv = [sys.executable, __file__, "--serve", str(count)] + (["--uvloop"] if use_uvloop else [])
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline().split()[1])
        entries = [Entry(1, EntryType.COMMAND, b"v" * payload)] if payload else []
        _new_loop(use_uvloop)
        sent, received = asyncio.run(send(port, count, per_frame, entries, child))
    finally:
        child.wait(30)
    kind = f"1 entry of {payload} B" if payload else "heartbeat"
    print(
        f"{kind:>18}, <= {per_frame:>2}/frame: {received['per_second']:>9,.0f} messages/s  "
        f"frames {received['frames']:>6}  receiver {received['cpu_us_per_message']:6.1f} µs CPU/msg  "
        f"sender {sent['cpu_us_per_message']:6.1f} µs CPU/msg  dropped {sent['dropped']}"
    )


async def ping_pong(rounds: int) -> list[float]:
    """Round trips of one message each way between two members in this process: the
    latency a lone message sees (no timer holds a frame back)."""
    arrived: asyncio.Queue[None] = asyncio.Queue()
    transports: dict[int, Transport] = {}
    servers = []

    def make(node_id: int) -> PeerServicer:
        def on_messages(from_id: int, from_address: str, messages: list[Message]) -> None:
            if node_id == 2:  # echo back
                transports[2].send([Message(1, from_address, m.payload) for m in messages])
            else:
                arrived.put_nowait(None)

        return PeerServicer(
            cluster_id=CLUSTER, node_id=node_id, accept_from=lambda _: True, on_messages=on_messages
        )

    try:
        for node_id in (1, 2):
            server = await start_peer_server(make(node_id), "127.0.0.1:0")
            servers.append(server)
            transports[node_id] = Transport(
                cluster_id=CLUSTER, node_id=node_id, node_address=f"127.0.0.1:{server.port}"
            )
        to_2 = f"127.0.0.1:{servers[1].port}"
        times = []
        for i in range(rounds + 50):
            started = time.perf_counter()
            transports[1].send([Message(2, to_2, AppendEntries(1, i, 1, i))])
            await asyncio.wait_for(arrived.get(), 5)
            if i >= 50:  # after the connections are up and warm
                times.append(time.perf_counter() - started)
        return sorted(times)
    finally:
        for transport in transports.values():
            await transport.close()
        for server in servers:
            await server.stop(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _new_loop(args.uvloop)
        asyncio.run(serve(args.serve))
        return
    print(
        f"{args.messages} messages per round, receiver in a child process, loop: "
        f"{'uvloop' if args.uvloop else 'asyncio'}"
    )
    for payload in (0, 100):
        for per_frame in (1, 64):
            count = args.messages if per_frame > 1 else max(args.messages // 40, 1000)
            round_(count, per_frame, payload, args.uvloop)
    _new_loop(args.uvloop)
    times = asyncio.run(ping_pong(2000))
    print(
        f"round trip of one message each way (one process): "
        f"p50 {times[len(times) // 2] * 1e6:.0f} µs, p99 {times[len(times) * 99 // 100] * 1e6:.0f} µs"
    )


if __name__ == "__main__":
    main()
