"""Pure parts of the client: key/value coercion and the status-code mapping.

The mapping is what a linearizability checker relies on, so it is pinned
code by code, with gRPC's own messages for the transport cases (recorded from
grpcio: a server killed mid-call, a port where nothing listens).
"""

from __future__ import annotations

import grpc
import pytest

from kvstore.client import (
    Client,
    InvalidArgument,
    KVError,
    NoSpace,
    NotApplied,
    OutcomeUnknown,
    Timeout,
    Unavailable,
    to_bytes,
)
from kvstore.client_errors import classify, deadline_error, error_for, short_reason

C = grpc.StatusCode
REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:7992: "
    "Failed to connect to remote host: Connection refused"
)
SOCKET_CLOSED = "Stream removed (Socket closed)"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("key", b"key"),
        ("ключ", "ключ".encode()),
        (b"\x00\xff", b"\x00\xff"),
        (bytearray(b"ab"), b"ab"),
        (memoryview(b"cd"), b"cd"),
        ("", b""),
    ],
)
def test_to_bytes_accepts_text_and_bytes(data: object, expected: bytes) -> None:
    assert to_bytes(data) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [1, None, 2.5, ["a"]])
def test_to_bytes_refuses_other_types_naming_the_argument(data: object) -> None:
    with pytest.raises(TypeError, match="value must be str or bytes"):
        to_bytes(data, "value")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("code", "details", "retriable", "maybe_applied"),
    [
        # DESIGN 3.1: not applied, safe to retry elsewhere
        (C.UNAVAILABLE, "no leader: election in progress", True, False),
        (C.UNAVAILABLE, REFUSED, True, False),
        # a connection lost after sending proves nothing about the write
        (C.UNAVAILABLE, SOCKET_CLOSED, True, True),
        (C.UNAVAILABLE, "recvmsg:Connection reset by peer", True, True),
        # DESIGN 3.1: outcome unknown, retry with the same RequestId
        (C.DEADLINE_EXCEEDED, "Deadline Exceeded", True, True),
        (C.ABORTED, "outcome unknown: leadership lost", True, True),
        # refused outright: no retry, not applied
        (C.INVALID_ARGUMENT, "key is 600 bytes", False, False),
        (C.RESOURCE_EXHAUSTED, "no space", False, False),
        (C.UNIMPLEMENTED, "Method not found!", False, False),
        # no retry, and conservatively unknown: the server may have applied it
        (C.FAILED_PRECONDITION, "request 1/2 is older than the last one", False, True),
        (C.INTERNAL, "boom", False, True),
        (C.UNKNOWN, "Exception calling application", False, True),
    ],
)
def test_classify(code: C, details: str, retriable: bool, maybe_applied: bool) -> None:
    assert classify(code, details) == (retriable, maybe_applied)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (C.INVALID_ARGUMENT, InvalidArgument),
        (C.RESOURCE_EXHAUSTED, NoSpace),
        (C.UNAVAILABLE, Unavailable),
        (C.DEADLINE_EXCEEDED, Timeout),
        (C.UNIMPLEMENTED, NotApplied),
        (C.INTERNAL, KVError),
    ],
)
def test_error_for_maps_codes_to_classes(code: C, cls: type[KVError]) -> None:
    err = error_for(code, "the server's words", endpoint="h:1")
    assert type(err) is cls
    assert (err.code, err.message, err.endpoint) == (code, "the server's words", "h:1")
    assert str(err) == "the server's words"
    assert not err.outcome_unknown


def test_not_applied_errors_say_so() -> None:
    for cls in (InvalidArgument, NoSpace, Unavailable):
        assert issubclass(cls, NotApplied)
        assert cls("x").applied is False
    assert OutcomeUnknown("x").applied is None
    assert not issubclass(OutcomeUnknown, NotApplied)
    assert not issubclass(Timeout, NotApplied)


def test_outcome_unknown_wins_over_the_last_code() -> None:
    """After an attempt that may have applied, even NoSpace proves nothing."""
    err = error_for(C.RESOURCE_EXHAUSTED, "no space", endpoint="h:1", outcome_unknown=True)
    assert isinstance(err, OutcomeUnknown)
    assert err.outcome_unknown
    assert err.code == C.RESOURCE_EXHAUSTED
    assert "may have been applied" in err.message and "no space" in err.message


def test_short_reasons() -> None:
    assert short_reason(C.UNAVAILABLE, REFUSED) == "connection refused"
    assert short_reason(C.DEADLINE_EXCEEDED, "Deadline Exceeded") == "timed out"
    assert short_reason(C.UNAVAILABLE, SOCKET_CLOSED).startswith("connection lost")
    assert short_reason(C.UNAVAILABLE, "no leader") == "no leader"
    assert short_reason(C.INTERNAL, "") == "INTERNAL"


def test_deadline_error_messages_name_every_endpoint() -> None:
    refused = [("a:1", "connection refused"), ("b:2", "connection refused"), ("a:1", "timed out")]
    err = deadline_error(5.0, refused, C.UNAVAILABLE, False, None)
    assert isinstance(err, Unavailable)
    assert err.message == (
        "no endpoint answered: a:1 (connection refused; then timed out), b:2 (connection refused)"
    )
    no_leader = [("a:1", "no leader")]
    err = deadline_error(5.0, no_leader, C.UNAVAILABLE, False, None)
    assert err.message == "no endpoint could serve the request: a:1 (no leader)"
    err = deadline_error(2.0, [("a:1", "timed out")], C.DEADLINE_EXCEEDED, False, None)
    assert isinstance(err, Timeout)
    assert err.message == "no answer within 2 s: a:1 (timed out)"
    err = deadline_error(2.0, [("a:1", "timed out")], C.DEADLINE_EXCEEDED, True, None)
    assert isinstance(err, OutcomeUnknown)


def test_client_arguments() -> None:
    assert Client("a:1, b:2").endpoints == ("a:1", "b:2")
    assert Client(["a:1"], client_id=42).client_id == 42
    assert Client(["a:1"], timeout=3).attempt_timeout == 3
    assert Client(["a:1", "b:2"], timeout=3).attempt_timeout == 1.5
    assert 0 < Client(["a:1"]).client_id < 1 << 63
    with pytest.raises(ValueError, match="endpoint"):
        Client([])
    with pytest.raises(ValueError, match="timeout"):
        Client(["a:1"], timeout=0)
    with pytest.raises(ValueError, match="client_id"):
        Client(["a:1"], client_id=0)


def test_local_argument_errors_make_no_call() -> None:
    """Nothing listens on these addresses; the errors come before any attempt."""
    with Client(["127.0.0.1:1"]) as client:
        with pytest.raises(InvalidArgument, match="exactly one"):
            client.compare_and_swap("k", "v")
        with pytest.raises(InvalidArgument, match="exactly one"):
            client.compare_and_swap("k", "v", expected_value="a", expected_absent=True)
        with pytest.raises(InvalidArgument, match="not both"):
            client.range("p", start="a")
        with pytest.raises(InvalidArgument, match="limit"):
            client.range(limit=-1)
        with pytest.raises(TypeError):
            client.put("k", 5)  # type: ignore[arg-type]
