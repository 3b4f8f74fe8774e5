"""Configuration: encoding round trip and refusal of garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftcore import Configuration, Malformed, Role, Server
from tests.raftcore.harness import configuration

addresses = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@st.composite
def configurations(draw: st.DrawFn) -> Configuration:
    ids = draw(st.lists(st.integers(1, 2**64 - 1), unique=True, max_size=12))
    return Configuration(Server(i, draw(addresses), draw(st.sampled_from(list(Role)))) for i in ids)


@given(configurations())
def test_encode_decode_round_trip(conf: Configuration) -> None:
    decoded = Configuration.decode(conf.encode())

    assert decoded == conf
    assert [s.id for s in decoded.servers] == [s.id for s in conf.servers]
    assert decoded.voters == conf.voters


@given(st.binary(max_size=64))
def test_decode_of_any_bytes_is_a_configuration_or_malformed(data: bytes) -> None:
    try:
        conf = Configuration.decode(data)
    except Malformed:
        return
    assert conf.encode() == data


def encoded_with(**changes: int) -> bytes:
    """The encoding of a one-server configuration, with one field forged."""
    version = changes.get("version", 1)
    count = changes.get("count", 1)
    server_id = changes.get("server_id", 1)
    role = changes.get("role", 1)
    return (
        version.to_bytes(1, "big")
        + count.to_bytes(4, "big")
        + server_id.to_bytes(8, "big")
        + role.to_bytes(1, "big")
        + (2).to_bytes(2, "big")
        + b"s1"
    )


GARBAGE = [
    pytest.param(b"", id="empty"),
    pytest.param(b"\x01\x00", id="short-header"),
    pytest.param(encoded_with(version=2), id="unknown-version"),
    pytest.param(encoded_with(count=2), id="missing-server"),
    pytest.param(encoded_with(role=7), id="unknown-role"),
    pytest.param(encoded_with(server_id=0), id="zero-id"),
    pytest.param(encoded_with()[:-1], id="truncated-address"),
    pytest.param(encoded_with() + b"\x00", id="trailing-bytes"),
    pytest.param(encoded_with()[:-2] + b"\xff\xfe", id="address-not-utf8"),
    pytest.param(configuration(2).encode().replace(b"\x00\x02\x01", b"\x00\x01\x01"), id="dup-id"),
]


@pytest.mark.parametrize("data", GARBAGE)
def test_decode_of_garbage_raises_malformed(data: bytes) -> None:
    with pytest.raises(Malformed) as error:
        Configuration.decode(data)
    assert error.value.code == "RAFT_MALFORMED"


def test_well_formed_encoding_decodes() -> None:
    assert Configuration.decode(encoded_with()) == Configuration([Server(1, "s1", Role.VOTER)])


def test_lookups() -> None:
    conf = configuration(3, {3: Role.STANDBY})

    assert conf.get(2) == Server(2, "s2", Role.VOTER)
    assert conf.get(9) is None
    assert [s.id for s in conf.voters] == [1, 2]
    assert len(conf) == 3
    assert len(Configuration()) == 0
