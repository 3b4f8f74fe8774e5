"""``kvctl``: the command line for a kvstore cluster (DESIGN 3.2), etcdctl's sibling.

    kvctl --endpoints 127.0.0.1:7101,127.0.0.1:7102 put KEY VALUE
    kvctl get KEY            # the value and a newline; exit 1 when absent
    kvctl del KEY            # how many keys were deleted (0 or 1)
    kvctl range PREFIX | range --from A --to B [--limit N] [--keys-only]
    kvctl cas KEY NEW --expect-value V | --expect-absent | --expect-mod-revision N
    kvctl status | member list          [-w json]
    kvctl member add ID PEER_ADDR | member remove ID | member promote ID | member demote ID
    kvctl move-leader ID     # 0: the most up-to-date voter
    kvctl snapshot save FILE | snapshot status FILE      # backups; restore: kvstore restore
    kvctl --cacert ca.crt [--cert client.crt --key client.key] ...   # TLS (as etcdctl)

Exit codes: 0 success; 1 the answer is "no" (``get`` of a missing key, a
``cas`` whose comparison failed), so scripts can branch on it; 2 an error
(one line on stderr saying what went wrong). Keys and values are passed as
UTF-8 text and printed as raw bytes. Global options may also follow the
command (``kvctl status -w json``), as with etcdctl. ``--timeout`` defaults to
5 s, and to 60 s for membership changes: adding a member copies the data to it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from kvstore.backup_file import BackupHeader
from kvstore.backup_file import verify as verify_backup
from kvstore.bench import Progress
from kvstore.bench import add_arguments as add_bench_arguments
from kvstore.bench import run as run_bench
from kvstore.cli.output import Output, header_json, human_size, kv_json, table
from kvstore.client import Client, KeyValue, KVError, Member, MemberChange, Status, to_bytes
from kvstore.tls import ClientTls

DEFAULT_ENDPOINTS = "127.0.0.1:7101"
ENV_ENDPOINTS = "KVCTL_ENDPOINTS"
#: etcdctl's TLS options: (option, environment variable, help). Their dests
#: are tls_*: "key" is the commands' KEY argument.
TLS_OPTIONS = (
    ("--cacert", "KVCTL_CACERT", "CA file the servers' certificates must chain to; TLS on"),
    ("--cert", "KVCTL_CERT", "client certificate file, for servers with --client-cert-auth"),
    ("--key", "KVCTL_KEY", "private key file of --cert"),
)

EXIT_OK, EXIT_NO, EXIT_ERROR = 0, 1, 2
DEFAULT_TIMEOUT = 5.0
ADMIN_TIMEOUT = 60.0  # membership changes: a catch-up copies the whole data set
SNAPSHOT_TIMEOUT = 3600.0  # a backup streams the whole data set

Handler = Callable[[Client, argparse.Namespace, Output], int]


def _global_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """The options every command takes; ``suppress`` for their copy after the command.

    The copy in each subcommand has no default (SUPPRESS), so it overrides
    the value given before the command only when given itself.
    """

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    env_endpoints = os.environ.get(ENV_ENDPOINTS) or DEFAULT_ENDPOINTS
    parser.add_argument(
        "--endpoints",
        default=default(env_endpoints),
        help=f"comma-separated host:port list (env {ENV_ENDPOINTS}; default {DEFAULT_ENDPOINTS})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=default(None),
        help=(
            f"seconds for the whole command, retries included (default {DEFAULT_TIMEOUT:g}; "
            f"{ADMIN_TIMEOUT:g} for membership changes)"
        ),
    )
    for option, env, help in TLS_OPTIONS:
        parser.add_argument(
            option,
            dest="tls_" + option[2:],
            metavar="FILE",
            default=default(os.environ.get(env) or None),
            help=f"{help} (env {env})",
        )
    parser.add_argument(
        "-w",
        "--write-out",
        choices=("simple", "json"),
        default=default("simple"),
        help="output format (default simple)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvctl", description="Talk to a kvstore cluster through any of its members."
    )
    _global_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        sub.set_defaults(handler=handler)
        return sub

    put = command("put", "set KEY to VALUE (VALUE omitted: read it from stdin)", cmd_put)
    put.add_argument("key")
    put.add_argument("value", nargs="?")

    get = command("get", "print the value of KEY; exit 1 when absent", cmd_get)
    get.add_argument("key")
    get.add_argument("--serializable", action="store_true", help="read the local replica")

    delete = command("del", "delete KEY; prints how many keys were deleted", cmd_del)
    delete.add_argument("key")

    rng = command("range", "list keys with a prefix or in [--from, --to)", cmd_range)
    rng.add_argument("prefix", nargs="?", help="keys starting with this (default: all keys)")
    rng.add_argument("--from", dest="start", help="first key (inclusive)")
    rng.add_argument("--to", dest="end", help="end key (exclusive; default: to the last key)")
    rng.add_argument("--limit", type=int, default=0, help="at most N keys (0: no limit)")
    rng.add_argument("--keys-only", action="store_true", help="print keys without values")
    rng.add_argument("--serializable", action="store_true", help="read the local replica")

    cas = command("cas", "set KEY to NEW iff it is in the expected state", cmd_cas)
    cas.add_argument("key")
    cas.add_argument("new_value", metavar="NEW")
    expect = cas.add_mutually_exclusive_group(required=True)
    expect.add_argument("--expect-value", metavar="V", help="the current value must be V")
    expect.add_argument("--expect-absent", action="store_true", help="the key must not exist")
    expect.add_argument(
        "--expect-mod-revision", type=int, metavar="N", help="the key's mod_revision must be N"
    )

    command("status", "the state of every endpoint: leader, term, indexes", cmd_status)

    bench = command("bench", "load the cluster; print throughput and p50/p99 latency", cmd_bench)
    add_bench_arguments(bench)

    member = command("member", "cluster membership", cmd_member_list)
    member_commands = member.add_subparsers(dest="member_command", required=True)

    def member_command(
        name: str, help: str, handler: Handler, admin: bool = True
    ) -> argparse.ArgumentParser:
        sub = member_commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        sub.set_defaults(handler=handler)
        if admin:
            sub.set_defaults(default_timeout=ADMIN_TIMEOUT)
            sub.add_argument("id", type=_member_id, metavar="ID", help="the member's --id")
        return sub

    member_list = member_command("list", "list the members", cmd_member_list, admin=False)
    member_list.add_argument("--serializable", action="store_true", help="ask the local replica")
    add = member_command(
        "add",
        "add a member: it joins as a stand-by, catches up, then becomes a voter",
        cmd_member_add,
    )
    add.add_argument("peer_addr", metavar="PEER_ADDR", help="the new member's --peer-addr")
    member_command(
        "remove", "remove a member (the leader hands leadership over first)", cmd_member_remove
    )
    member_command("promote", "catch a stand-by up and make it a voter", cmd_member_promote)
    member_command("demote", "make a voter a stand-by (keeps the data, no vote)", cmd_member_demote)

    move = command("move-leader", "transfer leadership to member ID", cmd_move_leader)
    move.set_defaults(default_timeout=ADMIN_TIMEOUT)
    move.add_argument(
        "id", type=_member_id_or_zero, metavar="ID", help="the new leader (0: the best voter)"
    )

    snapshot = command(
        "snapshot", "back up the data (restore: `kvstore restore`)", cmd_snapshot_save
    )
    snapshot_commands = snapshot.add_subparsers(dest="snapshot_command", required=True)
    for name, help, handler in (
        ("save", "save a consistent backup of the data to FILE", cmd_snapshot_save),
        ("status", "print what a backup FILE holds and verify its checksum", cmd_snapshot_status),
    ):
        sub = snapshot_commands.add_parser(name, help=help, description=help)
        _global_options(sub, suppress=True)
        sub.set_defaults(handler=handler, default_timeout=SNAPSHOT_TIMEOUT)
        sub.add_argument("file", metavar="FILE")
    return parser


def _member_id(text: str) -> int:
    value = _member_id_or_zero(text)
    if value == 0:
        raise argparse.ArgumentTypeError("a member id must be positive")
    return value


def _member_id_or_zero(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a member id (a number)") from None
    if value < 0:
        raise argparse.ArgumentTypeError("a member id must be positive")
    return value


# -- commands -------------------------------------------------------------------


def cmd_put(client: Client, args: argparse.Namespace, out: Output) -> int:
    value = to_bytes(args.value, "value") if args.value is not None else sys.stdin.buffer.read()
    result = client.put(args.key, value)
    if args.write_out == "json":
        out.json({"header": header_json(result.header)})
    else:
        out.line("OK")
    return EXIT_OK


def cmd_get(client: Client, args: argparse.Namespace, out: Output) -> int:
    kv = client.get(args.key, serializable=args.serializable)
    if args.write_out == "json":
        out.json(kv_json(kv) if kv is not None else None)
    elif kv is not None:
        out.raw(kv.value + b"\n")
    return EXIT_OK if kv is not None else EXIT_NO


def cmd_del(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.delete(args.key)
    if args.write_out == "json":
        out.json({"deleted": int(result.deleted), "header": header_json(result.header)})
    else:
        out.line(str(int(result.deleted)))
    return EXIT_OK


def cmd_range(client: Client, args: argparse.Namespace, out: Output) -> int:
    if args.prefix is not None and (args.start is not None or args.end is not None):
        raise _UsageError("range takes a PREFIX or --from/--to, not both")
    result = client.range(
        args.prefix,
        start=args.start,
        end=args.end,
        limit=args.limit,
        serializable=args.serializable,
    )
    if args.write_out == "json":
        kvs = [kv_json(kv, keys_only=args.keys_only) for kv in result.kvs]
        out.json({"kvs": kvs, "more": result.more, "header": header_json(result.header)})
        return EXIT_OK
    for kv in result.kvs:
        out.raw(kv.key + b"\n" if args.keys_only else kv.key + b"\t" + kv.value + b"\n")
    if result.more:
        out.note(f"(more keys after these {len(result.kvs)}; raise --limit)")
    return EXIT_OK


def cmd_cas(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.compare_and_swap(
        args.key,
        args.new_value,
        expected_value=args.expect_value,
        expected_absent=args.expect_absent,
        expected_mod_revision=args.expect_mod_revision,
    )
    if args.write_out == "json":
        out.json(
            {
                "succeeded": result.succeeded,
                "kv": kv_json(result.kv) if result.kv is not None else None,
                "header": header_json(result.header),
            }
        )
    elif result.succeeded:
        out.line("SUCCEEDED")
    else:
        out.line("FAILED")
        out.raw(_describe(result.kv) + b"\n")
    return EXIT_OK if result.succeeded else EXIT_NO


def _describe(kv: KeyValue | None) -> bytes:
    """The current state after a failed compare, for a human deciding what to expect."""
    if kv is None:
        return b"current: absent"
    meta = f" (create_revision={kv.create_revision}, mod_revision={kv.mod_revision}, "
    meta += f"version={kv.version})"
    return b"current: " + kv.value + meta.encode()


def cmd_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    rows = client.status()
    if args.write_out == "json":
        out.json([_status_json(row.endpoint, row.status, row.error) for row in rows])
    else:
        header = ["ENDPOINT", "MEMBER ID", "LEADER ID", "TERM", "COMMIT INDEX"]
        header += ["APPLIED INDEX", "STATE", "DB SIZE"]
        lines = []
        for row in rows:
            s = row.status
            if s is None:
                lines.append([row.endpoint, "-", "-", "-", "-", "-", "UNREACHABLE", "-"])
                continue
            h = s.header
            cells = [s.endpoint, h.member_id, h.leader_id, h.term, s.commit_index]
            cells += [s.applied_index, s.state, human_size(s.db_size_bytes)]
            lines.append([str(cell) for cell in cells])
        out.line(table(header, lines))
    failed = [row for row in rows if row.error is not None]
    for row in failed:
        out.error(f"{row.endpoint}: {row.error}")
    return EXIT_ERROR if failed else EXIT_OK


def _status_json(endpoint: str, status: Status | None, error: KVError | None) -> dict[str, object]:
    if status is None:
        return {"endpoint": endpoint, "error": str(error)}
    return {
        "endpoint": endpoint,
        "header": header_json(status.header),
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
        "last_index": status.last_index,
        "state": status.state,
        "db_size_bytes": status.db_size_bytes,
        "version": status.version,
    }


def cmd_member_list(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.member_list(serializable=args.serializable)
    leader = result.header.leader_id
    if args.write_out == "json":
        members = [_member_json(m, leader) for m in result.members]
        out.json({"members": members, "header": header_json(result.header)})
    else:
        out.line(_members_table(result.members, leader))
    return EXIT_OK


def _member_json(m: Member, leader: int) -> dict[str, object]:
    return {"id": m.id, "peer_address": m.peer_address, "role": m.role, "leader": m.id == leader}


def _members_table(members: Sequence[Member], leader: int) -> str:
    lines = [
        [str(m.id), m.peer_address, m.role, "yes" if m.id == leader else "no"] for m in members
    ]
    return table(["ID", "PEER ADDRESS", "ROLE", "LEADER"], lines)


def _print_change(result: MemberChange, summary: str, args: argparse.Namespace, out: Output) -> int:
    leader = result.header.leader_id
    if args.write_out == "json":
        member = _member_json(result.member, leader) if result.member is not None else None
        members = [_member_json(m, leader) for m in result.members]
        out.json({"member": member, "members": members, "header": header_json(result.header)})
    else:
        out.line(summary)
        out.line(_members_table(result.members, leader))
    return EXIT_OK


def cmd_member_add(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.member_add(args.id, args.peer_addr)
    summary = f"Member {args.id} added at {args.peer_addr}: caught up and promoted to voter"
    return _print_change(result, summary, args, out)


def cmd_member_remove(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.member_remove(args.id)
    return _print_change(result, f"Member {args.id} removed", args, out)


def cmd_member_promote(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.member_promote(args.id)
    return _print_change(result, f"Member {args.id} is a voter", args, out)


def cmd_member_demote(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.member_demote(args.id)
    return _print_change(result, f"Member {args.id} is a stand-by", args, out)


def cmd_move_leader(client: Client, args: argparse.Namespace, out: Output) -> int:
    result = client.transfer_leader(args.id)
    if args.write_out == "json":
        out.json({"leader_id": result.leader_id, "header": header_json(result.header)})
    else:
        out.line(f"Leadership moved to member {result.leader_id}")
    return EXIT_OK


def cmd_bench(client: Client, args: argparse.Namespace, out: Output) -> int:
    """etcd's benchmark, in small: concurrency, key count, value size, progress bar."""
    args.endpoints, args.tls = list(client.endpoints), client.tls  # as the client parsed them
    asyncio.run(run_bench(args))
    return EXIT_OK


def cmd_snapshot_save(client: Client, args: argparse.Namespace, out: Output) -> int:
    """etcdctl snapshot save: FILE.part while streaming, renamed to FILE once verified."""
    bar = _SnapshotProgress(sys.stderr.isatty())
    try:
        saved = client.snapshot(args.file, progress=bar)
    except OSError as exc:
        raise _UsageError(f"cannot write {args.file}: {exc.strerror or exc}") from None
    bar.finish()
    h = saved.header
    if args.write_out == "json":
        out.json({"file": saved.path, "endpoint": saved.endpoint, **_backup_json(h)})
    else:
        out.line(
            f"Snapshot saved to {saved.path} from member {h.member_id} ({saved.endpoint}): "
            f"{h.data_size} bytes, {h.key_count} keys, revision {h.revision}, "
            f"applied index {h.applied_index}, sha256 {h.sha256_hex}"
        )
    return EXIT_OK


def cmd_snapshot_status(client: Client, args: argparse.Namespace, out: Output) -> int:
    """etcdutl snapshot status: the header, after reading the whole file to verify it."""
    h = verify_backup(args.file)  # BackupError (a ValueError): one line, exit 2
    if args.write_out == "json":
        out.json({"file": args.file, **_backup_json(h), "verified": True})
        return EXIT_OK
    created = datetime.fromtimestamp(h.created_ms / 1000, UTC)
    rows = [
        ["size", f"{human_size(h.data_size)} ({h.data_size} bytes of data)"],
        ["keys", str(h.key_count)],
        ["revision", str(h.revision)],
        ["applied index", str(h.applied_index)],
        ["raft term", str(h.raft_term)],
        ["cluster id", str(h.cluster_id)],
        ["member id", str(h.member_id)],
        ["created", created.isoformat(timespec="seconds")],
        ["sha256", f"{h.sha256_hex} (verified)"],
    ]
    out.line(table(["FILE", args.file], rows))
    return EXIT_OK


def _backup_json(h: BackupHeader) -> dict[str, object]:
    return {
        "size": h.data_size,
        "keys": h.key_count,
        "revision": h.revision,
        "applied_index": h.applied_index,
        "raft_term": h.raft_term,
        "cluster_id": h.cluster_id,
        "member_id": h.member_id,
        "created_ms": h.created_ms,
        "sha256": h.sha256_hex,
    }


class _SnapshotProgress:
    """bench's progress bar over the bytes received; the member's size is an estimate,
    so the bar stays short of full until the stream's trailer has arrived."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Progress | None = None

    def __call__(self, received: int, estimate: int) -> None:
        if self.bar is None:
            self.bar = Progress(estimate, "snapshot", self.enabled, human_size)
        self.bar.total = max(self.bar.total, received + 1)
        self.bar.tick(received - self.bar.done)

    def finish(self) -> None:
        if self.bar is not None:
            self.bar.total = self.bar.done
            self.bar.tick(0)


# -- entry point ------------------------------------------------------------------


class _UsageError(Exception):
    """Arguments argparse accepts but the command cannot use together."""


def _client_tls(args: argparse.Namespace) -> ClientTls | None:
    """TLS when any of --cacert, --cert, --key is given (else plaintext, or https:// endpoints)."""
    if not (args.tls_cacert or args.tls_cert or args.tls_key):
        return None
    return ClientTls(ca_file=args.tls_cacert, cert_file=args.tls_cert, key_file=args.tls_key)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output()
    try:
        timeout = args.timeout
        if timeout is None:
            timeout = getattr(args, "default_timeout", DEFAULT_TIMEOUT)
        if timeout <= 0:
            raise _UsageError(f"--timeout must be positive, got {timeout}")
        with Client(args.endpoints, timeout=timeout, tls=_client_tls(args)) as client:
            code: int = args.handler(client, args, out)
            return code
    except KVError as exc:
        out.error(exc.message)
    except (_UsageError, ValueError, TypeError) as exc:
        out.error(str(exc))
    except BrokenPipeError:
        # `kvctl range | head`: the reader left. Point stdout at /dev/null so
        # the interpreter's final flush does not complain about it either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        out.error("interrupted")
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
