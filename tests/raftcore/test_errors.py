"""Errors carry C-Raft's names; a failed step changes nothing."""

from __future__ import annotations

import pytest

from raftcore import (
    BadId,
    CantChange,
    Invalid,
    Malformed,
    NoSpace,
    NotFound,
    NotLeader,
    RaftError,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (NotLeader, "RAFT_NOTLEADER"),
        (NoSpace, "RAFT_NOSPACE"),
        (CantChange, "RAFT_CANTCHANGE"),
        (BadId, "RAFT_BADID"),
        (NotFound, "RAFT_NOTFOUND"),
        (Malformed, "RAFT_MALFORMED"),
        (Invalid, "RAFT_INVALID"),
    ],
)
def test_errors_are_raft_errors_with_the_c_name(error: type[RaftError], code: str) -> None:
    assert issubclass(error, RaftError)
    assert error.code == code
    assert error("detail").code == code
    with pytest.raises(RaftError):
        raise error("detail")
