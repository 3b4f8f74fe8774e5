"""Errors raised by ``Raft.step``.

Each carries the C-Raft name as ``code`` so that logs and clients can match on
one vocabulary. A step that raises has changed nothing.
"""


class RaftError(Exception):
    """Base class: a request raftcore refused."""

    code = "RAFT_ERROR"


class NotLeader(RaftError):
    """SUBMIT, CATCH_UP or TRANSFER on a server that is not (or no longer) leading."""

    code = "RAFT_NOTLEADER"


class NoSpace(RaftError):
    """A majority of voters report less disk capacity than ``capacity_threshold``."""

    code = "RAFT_NOSPACE"


class CantChange(RaftError):
    """A configuration change while another one is still uncommitted."""

    code = "RAFT_CANTCHANGE"


class BadId(RaftError):
    """A server id that is unknown, is this server, or has the wrong role."""

    code = "RAFT_BADID"


class NotFound(RaftError):
    """A server that is not in the configuration."""

    code = "RAFT_NOTFOUND"


class Malformed(RaftError):
    """Bytes or a message that cannot be decoded or make no sense."""

    code = "RAFT_MALFORMED"


class Invalid(RaftError):
    """An event or argument that is not valid in the current state."""

    code = "RAFT_INVALID"
