"""kvctl's parsing, output and exit codes, in-process against fake members."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from kvstore.cli.kvctl import DEFAULT_ENDPOINTS, build_parser, main
from kvstore.cli.output import human_size, table
from tests.client.fakeserver import Fail, FakeMember, dead_endpoint, fake_cluster

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def members() -> Iterator[list[FakeMember]]:
    with fake_cluster(2) as members:
        yield members


@pytest.fixture
def kvctl(members: list[FakeMember], capsys: pytest.CaptureFixture[str]) -> Iterator[Run]:
    endpoints = ",".join(m.address for m in members)

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(["--endpoints", endpoints, "--timeout", "2", *argv])
        out, err = capsys.readouterr()
        return code, out, err

    yield run


# -- parsing -------------------------------------------------------------------


def test_global_options_go_before_or_after_the_command() -> None:
    parser = build_parser()
    before = parser.parse_args(["--endpoints", "a:1", "-w", "json", "--timeout", "3", "status"])
    after = parser.parse_args(["status", "--endpoints", "a:1", "-w", "json", "--timeout", "3"])
    for args in (before, after):
        assert (args.endpoints, args.write_out, args.timeout) == ("a:1", "json", 3.0)
    nested = parser.parse_args(["member", "list", "-w", "json"])
    assert nested.write_out == "json" and nested.member_command == "list"


def test_endpoints_come_from_the_environment_or_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("KVCTL_ENDPOINTS", raising=False)
    assert build_parser().parse_args(["get", "k"]).endpoints == DEFAULT_ENDPOINTS
    monkeypatch.setenv("KVCTL_ENDPOINTS", "x:1,y:2")
    assert build_parser().parse_args(["get", "k"]).endpoints == "x:1,y:2"
    assert build_parser().parse_args(["get", "k", "--endpoints", "z:3"]).endpoints == "z:3"


def test_range_and_cas_arguments() -> None:
    parser = build_parser()
    args = parser.parse_args(["range", "--from", "a", "--to", "b", "--limit", "5", "--keys-only"])
    assert (args.prefix, args.start, args.end, args.limit, args.keys_only) == (
        None, "a", "b", 5, True,
    )  # fmt: skip
    args = parser.parse_args(["cas", "k", "new", "--expect-mod-revision", "7"])
    assert (args.key, args.new_value, args.expect_mod_revision) == ("k", "new", 7)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["cas", "k", "new"])
    assert info.value.code == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["cas", "k", "new", "--expect-absent", "--expect-value", "v"])


def test_table_and_sizes() -> None:
    assert table(["A", "LONG"], [["xyz", "1"]]) == "A    LONG\nxyz  1"
    assert human_size(512) == "512 B"
    assert human_size(3 << 20) == "3.0 MiB"


# -- commands against fake members --------------------------------------------------


def test_put_get_del(kvctl: Run) -> None:
    assert kvctl("put", "greeting", "hello world") == (0, "OK\n", "")
    assert kvctl("get", "greeting") == (0, "hello world\n", "")
    assert kvctl("get", "greeting", "--serializable") == (0, "hello world\n", "")
    assert kvctl("get", "absent") == (1, "", "")
    assert kvctl("del", "greeting") == (0, "1\n", "")
    assert kvctl("del", "greeting") == (0, "0\n", "")


def test_put_reads_the_value_from_stdin(
    kvctl: Run, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "value"
    source.write_bytes(b"from stdin\n")
    with open(source, "rb") as f:
        monkeypatch.setattr("sys.stdin", type("S", (), {"buffer": f})())
        assert kvctl("put", "k") == (0, "OK\n", "")
    assert kvctl("get", "k") == (0, "from stdin\n\n", "")


def test_get_json(kvctl: Run) -> None:
    kvctl("put", "k", "v")
    code, out, _ = kvctl("get", "k", "-w", "json")
    assert code == 0
    assert json.loads(out) == {
        "key": "k", "value": "v", "create_revision": 1, "mod_revision": 1, "version": 1,
    }  # fmt: skip
    code, out, _ = kvctl("get", "nope", "-w", "json")
    assert (code, json.loads(out)) == (1, None)


def test_range(kvctl: Run) -> None:
    for key in ("app/a", "app/b", "app/c", "other"):
        kvctl("put", key, key.upper())
    assert kvctl("range", "app/") == (0, "app/a\tAPP/A\napp/b\tAPP/B\napp/c\tAPP/C\n", "")
    assert kvctl("range", "--from", "app/b", "--to", "other", "--keys-only") == (
        0, "app/b\napp/c\n", "",
    )  # fmt: skip
    code, out, err = kvctl("range", "--limit", "2", "--keys-only")
    assert (code, out) == (0, "app/a\napp/b\n")
    assert "more keys" in err
    code, out, _ = kvctl("range", "app/", "--limit", "1", "-w", "json")
    doc = json.loads(out)
    assert doc["more"] is True and [kv["key"] for kv in doc["kvs"]] == ["app/a"]
    assert doc["kvs"][0]["value"] == "APP/A" and doc["header"]["revision"] == 4
    code, _, err = kvctl("range", "app/", "--from", "a")
    assert code == 2 and err == "kvctl: range takes a PREFIX or --from/--to, not both\n"


def test_binary_values_are_raw_on_stdout_and_base64_in_json(
    members: list[FakeMember], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    from kvstore.client import Client

    with Client([members[0].address]) as client:
        client.put(b"bin", b"\xff\x00\xfe")
    assert main(["--endpoints", members[0].address, "get", "bin"]) == 0
    assert capsysbinary.readouterr().out == b"\xff\x00\xfe\n"
    assert main(["--endpoints", members[0].address, "get", "bin", "-w", "json"]) == 0
    doc = json.loads(capsysbinary.readouterr().out)
    assert doc["value_base64"] == "/wD+" and "value" not in doc


def test_cas(kvctl: Run) -> None:
    assert kvctl("cas", "lock", "me", "--expect-absent") == (0, "SUCCEEDED\n", "")
    code, out, _ = kvctl("cas", "lock", "you", "--expect-absent")
    assert code == 1
    assert out == "FAILED\ncurrent: me (create_revision=1, mod_revision=1, version=1)\n"
    assert kvctl("cas", "lock", "you", "--expect-value", "me") == (0, "SUCCEEDED\n", "")
    assert kvctl("cas", "lock", "x", "--expect-mod-revision", "2")[:2] == (0, "SUCCEEDED\n")
    assert kvctl("cas", "gone", "x", "--expect-value", "y") == (1, "FAILED\ncurrent: absent\n", "")
    code, out, _ = kvctl("cas", "lock", "z", "--expect-value", "x", "-w", "json")
    doc = json.loads(out)
    assert code == 0 and doc["succeeded"] is True and doc["kv"]["value"] == "z"


def test_status_table_and_json(kvctl: Run, members: list[FakeMember]) -> None:
    code, out, err = kvctl("status")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == [
        "ENDPOINT", "MEMBER", "ID", "LEADER", "ID", "TERM", "COMMIT", "INDEX",
        "APPLIED", "INDEX", "STATE", "DB", "SIZE",
    ]  # fmt: skip
    assert lines[1].split() == [
        members[0].address,
        "1",
        "1",
        "3",
        "10",
        "9",
        "LEADER",
        "3.0",
        "MiB",
    ]
    assert lines[2].split()[6] == "FOLLOWER"
    code, out, _ = kvctl("status", "-w", "json")
    doc = json.loads(out)
    assert [d["header"]["member_id"] for d in doc] == [1, 2]
    assert doc[0]["state"] == "LEADER" and doc[0]["db_size_bytes"] == 3 << 20


def test_status_with_an_unreachable_endpoint(
    members: list[FakeMember], capsys: pytest.CaptureFixture[str]
) -> None:
    dead = dead_endpoint()
    code = main(["--endpoints", f"{members[0].address},{dead}", "--timeout", "1", "status"])
    out, err = capsys.readouterr()
    assert code == 2
    assert "UNREACHABLE" in out.splitlines()[2]
    assert err == f"kvctl: {dead}: connection refused\n"


def test_member_list(kvctl: Run) -> None:
    code, out, _ = kvctl("member", "list")
    assert code == 0
    assert [line.split() for line in out.splitlines()] == [
        ["ID", "PEER", "ADDRESS", "ROLE", "LEADER"],
        ["1", "peer1", "VOTER", "yes"],
        ["2", "peer2", "VOTER", "no"],
    ]
    code, out, _ = kvctl("member", "list", "-w", "json")
    assert json.loads(out)["members"][0] == {
        "id": 1, "peer_address": "peer1", "role": "VOTER", "leader": True,
    }  # fmt: skip


# -- errors -----------------------------------------------------------------------


def test_server_errors_are_one_line_on_stderr_with_exit_2(
    kvctl: Run, members: list[FakeMember]
) -> None:
    assert kvctl("put", "k" * 600, "v") == (
        2, "", "kvctl: key is 600 bytes; keys must be 1 to 511 bytes (LMDB's maximum key size)\n",
    )  # fmt: skip
    members[0].script = [Fail(grpc.StatusCode.RESOURCE_EXHAUSTED, "no space: map full")]
    assert kvctl("put", "k", "v") == (2, "", "kvctl: no space: map full\n")


def test_no_endpoint_answered(capsys: pytest.CaptureFixture[str]) -> None:
    a, b = dead_endpoint(), dead_endpoint()
    assert main(["--endpoints", f"{a},{b}", "--timeout", "0.5", "get", "k"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"kvctl: no endpoint answered: {a} (connection refused), {b} (connection refused)\n"
    )


def test_bad_timeout_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--timeout", "0", "get", "k"]) == 2
    assert capsys.readouterr().err == "kvctl: --timeout must be positive, got 0.0\n"


def test_member_changes_and_move_leader(kvctl: Run, members: list[FakeMember]) -> None:
    code, out, _ = kvctl("member", "add", "3", "127.0.0.1:7203")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "Member 3 added at 127.0.0.1:7203: caught up and promoted to voter"
    assert lines[-1].split() == ["3", "127.0.0.1:7203", "VOTER", "no"]
    code, out, _ = kvctl("member", "demote", "3", "-w", "json")
    doc = json.loads(out)
    assert doc["member"] == {
        "id": 3, "peer_address": "127.0.0.1:7203", "role": "STANDBY", "leader": False,
    }  # fmt: skip
    assert kvctl("member", "promote", "3")[1].startswith("Member 3 is a voter\n")
    code, out, _ = kvctl("member", "remove", "3", "-w", "json")
    assert code == 0 and json.loads(out)["member"] is None
    assert [m["id"] for m in json.loads(out)["members"]] == [1, 2]
    assert kvctl("move-leader", "2") == (0, "Leadership moved to member 2\n", "")
    assert [m for m, _ in members[0].calls] == [
        "MemberAdd", "MemberDemote", "MemberPromote", "MemberRemove", "TransferLeader",
    ]  # fmt: skip


def test_member_commands_check_their_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["member", "remove", "0"])
    assert "a member id must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["move-leader", "x"])
    assert "'x' is not a member id" in capsys.readouterr().err


def test_membership_changes_have_a_longer_default_timeout() -> None:
    parser = build_parser()
    assert parser.parse_args(["member", "add", "4", "h:1"]).default_timeout == 60.0
    assert parser.parse_args(["member", "add", "4", "h:1", "--timeout", "3"]).timeout == 3.0
    assert not hasattr(parser.parse_args(["get", "k"]), "default_timeout")
