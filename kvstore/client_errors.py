"""Errors of :mod:`kvstore.client`, and the mapping from gRPC status codes.

The hierarchy encodes the one fact a caller of a replicated store must know
about a failed write: was it applied? DESIGN 3.1 fixes what each status code
means, and the classes follow it:

``NotApplied`` (``Unavailable``, ``InvalidArgument``, ``NoSpace``)
    the operation certainly had no effect; retrying it as a new request is safe.
``OutcomeUnknown``
    a write that may or may not have been applied (a deadline passed after it
    may have entered the log, leadership was lost, a connection broke after
    the request was sent). A linearizability checker must treat it as
    "possibly applied, at any time after it was invoked".
``Timeout``
    a read that did not complete before its deadline (reads change nothing).

Every error carries the gRPC code (INVALID_ARGUMENT also when the client
itself refused bad arguments; ``None`` only if no attempt was made), the
server's message, and the endpoint that answered last.
"""

from __future__ import annotations

from typing import Any

import grpc

from kvstore.client_types import RequestId

__all__ = [
    "InvalidArgument",
    "KVError",
    "NoSpace",
    "NotApplied",
    "OutcomeUnknown",
    "RequestId",
    "Timeout",
    "Unavailable",
    "classify",
    "deadline_error",
    "error_for",
    "short_reason",
]

_C = grpc.StatusCode


class KVError(Exception):
    """Base of every error the client raises.

    ``failures`` lists ``(endpoint, reason)`` for each failed attempt, so a
    message can say what happened on every endpoint, not only the last.
    """

    #: False: certainly not applied. None: unknown, or not a write.
    applied: bool | None = None

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        endpoint: str | None = None,
        failures: tuple[tuple[str, str], ...] = (),
        request_id: RequestId | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.endpoint = endpoint
        self.failures = failures
        self.request_id = request_id

    @property
    def outcome_unknown(self) -> bool:
        """True when a write may have been applied (the harness's question)."""
        return isinstance(self, OutcomeUnknown)

    def __repr__(self) -> str:
        code = self.code.name if self.code is not None else None
        return f"{type(self).__name__}({self.message!r}, code={code}, endpoint={self.endpoint!r})"


class NotApplied(KVError):
    """The request certainly had no effect: safe to retry."""

    applied = False


class Unavailable(NotApplied):
    """No endpoint could serve the request (down, no leader, refused before the log)."""


class InvalidArgument(NotApplied):
    """The request can never succeed as given (key or value too long, bad options)."""


class NoSpace(NotApplied):
    """The cluster is out of disk space (RESOURCE_EXHAUSTED): writes are refused."""


class Timeout(KVError):
    """A read did not complete before its deadline."""


class OutcomeUnknown(KVError):
    """A write that may or may not have been applied.

    ``request_id`` is the id it was sent with; passing it again to the same
    method (``request_id=``) asks the server for the original answer, which
    resolves the outcome unless the server's session table has forgotten it.
    """


#: Codes that mean "try again, possibly elsewhere": the server could not
#: serve the request now, or the answer was lost on the way.
RETRIABLE = frozenset({_C.UNAVAILABLE, _C.DEADLINE_EXCEEDED, _C.ABORTED, _C.CANCELLED})

#: Codes with which a server refuses a request before it can enter the log.
_NOT_APPLIED = frozenset(
    {
        _C.INVALID_ARGUMENT,
        _C.RESOURCE_EXHAUSTED,
        _C.UNAVAILABLE,
        _C.UNIMPLEMENTED,
        _C.UNAUTHENTICATED,
        _C.PERMISSION_DENIED,
    }
)

#: gRPC's own messages when a connection broke *after* the request may have
#: been sent. Such an UNAVAILABLE comes from the transport, not from our
#: server's "refused before the log" (DESIGN 3.1), so it proves nothing about
#: whether a write was applied. Matched in lower case.
_TRANSPORT_LOSS = (
    "stream removed",
    "socket closed",
    "connection reset",
    "broken pipe",
    "goaway",
    "rst_stream",
    "keepalive",
    "endpoint closing",
    "connection aborted",
    "transport closed",
)


#: gRPC's prefix when no connection could be set up: the call was never sent
#: (a "Socket closed" after it is a handshake the server broke off, e.g. TLS).
_NEVER_CONNECTED = "failed to connect to all addresses"


def classify(code: grpc.StatusCode, details: str) -> tuple[bool, bool]:
    """Return ``(retriable, maybe_applied)`` for one failed attempt of a write.

    Conservative on purpose: calling an applied write "not applied" would make
    a linearizability checker report a violation that is the client's fault,
    while calling a failed write "unknown" only costs the checker some work.
    """
    retriable = code in RETRIABLE
    if code == _C.UNAVAILABLE:
        lowered = details.lower()
        if lowered.startswith(_NEVER_CONNECTED):
            return retriable, False
        return retriable, any(marker in lowered for marker in _TRANSPORT_LOSS)
    return retriable, code not in _NOT_APPLIED


def short_reason(
    code: grpc.StatusCode, details: str, *, tls: bool | None = None, client_cert: bool = False
) -> str:
    """A few words for an error message: "connection refused", the server's text...

    ``tls``/``client_cert``: how the caller connects, when it knows (None: it
    does not say), to tell what a server that hangs up while connecting wants.
    """
    lowered = details.lower()
    if "connection refused" in lowered:
        return "connection refused"
    if code == _C.DEADLINE_EXCEEDED:
        return "timed out"
    if "dns resolution failed" in lowered or "name resolution" in lowered:
        return "cannot resolve the address"
    reason = _tls_reason(lowered, tls, client_cert)
    if reason:
        return reason
    if code == _C.UNAVAILABLE and any(marker in lowered for marker in _TRANSPORT_LOSS):
        return f"connection lost ({details})"
    return details or code.name


def _tls_reason(lowered: str, tls: bool | None, client_cert: bool) -> str:
    """What a failed TLS (or TLS-refused) connection attempt means, in words."""
    if "handshake failed" in lowered:
        if "wrong_version_number" in lowered:
            return "TLS handshake failed: the server does not speak TLS (plaintext port?)"
        if "certificate_verify_failed" in lowered:
            detail = lowered.rsplit("certificate_verify_failed:", 1)[-1].split(":")[0].strip()
            return (
                "TLS handshake failed: the server's certificate is not signed by a trusted CA "
                f"({detail or 'verify failed'}; check the CA file)"
            )
        return "TLS handshake failed: " + lowered.rsplit("handshake failed", 1)[-1].strip(" :")
    if "hostname verification" in lowered:
        return "TLS: the server's certificate does not name the address dialled"
    if lowered.startswith(_NEVER_CONNECTED) and "socket closed" in lowered:
        # The server refused the handshake; TLS 1.3 does not tell the client why.
        closed = "the server closed the connection while it was being set up: "
        if tls is None:
            return closed + "it may require TLS, or a client certificate signed by a CA it trusts"
        if not tls:
            return closed + "it may require TLS (this client speaks plaintext)"
        if not client_cert:
            return closed + "it may require a client certificate (this client has none)"
        return closed + "it refused this client's certificate (not signed by a CA it trusts?)"
    return ""


def error_for(
    code: grpc.StatusCode,
    message: str,
    *,
    endpoint: str | None,
    failures: tuple[tuple[str, str], ...] = (),
    request_id: RequestId | None = None,
    outcome_unknown: bool = False,
) -> KVError:
    """The exception for a final failure with ``code`` (no more retries)."""
    cls: type[KVError]
    if outcome_unknown:
        cls, message = (
            OutcomeUnknown,
            f"outcome unknown, the write may have been applied: {message}",
        )
    elif code == _C.INVALID_ARGUMENT:
        cls = InvalidArgument
    elif code == _C.RESOURCE_EXHAUSTED:
        cls = NoSpace
    elif code == _C.UNAVAILABLE:
        cls = Unavailable
    elif code == _C.DEADLINE_EXCEEDED:
        cls = Timeout
    elif code in _NOT_APPLIED:
        cls = NotApplied
    else:
        cls = KVError
    return cls(message, code=code, endpoint=endpoint, failures=failures, request_id=request_id)


_CONNECTION_REASONS = ("connection refused", "timed out", "cannot resolve the address")


def deadline_error(
    timeout: float,
    failures: list[tuple[str, str]],
    last_code: grpc.StatusCode | None,
    outcome_unknown: bool,
    request_id: RequestId | None,
) -> KVError:
    """The exception for a call whose retries ran out of time.

    The message names every endpoint with its last failure, because "no
    answer" alone does not tell a refused connection from a missing leader.
    """
    # Per endpoint, each distinct reason once, in order: the one that made the
    # outcome unknown is often not the last ("leadership lost; then no leader").
    reasons: dict[str, list[str]] = {}
    for endpoint, reason in failures:
        seen = reasons.setdefault(endpoint, [])
        if reason not in seen:
            seen.append(reason)
    summary = ", ".join(f"{ep} ({'; then '.join(rs)})" for ep, rs in reasons.items())
    kwargs: dict[str, Any] = {
        "code": last_code,
        "endpoint": failures[-1][0] if failures else None,
        "failures": tuple(failures),
        "request_id": request_id,
    }
    if outcome_unknown:
        return OutcomeUnknown(
            f"outcome unknown, the write may have been applied: no answer within "
            f"{timeout:g} s: {summary}",
            **kwargs,
        )
    if last_code == grpc.StatusCode.UNAVAILABLE:
        if all(r in _CONNECTION_REASONS for rs in reasons.values() for r in rs):
            return Unavailable(f"no endpoint answered: {summary}", **kwargs)
        return Unavailable(f"no endpoint could serve the request: {summary}", **kwargs)
    return Timeout(f"no answer within {timeout:g} s: {summary or 'no attempt'}", **kwargs)
