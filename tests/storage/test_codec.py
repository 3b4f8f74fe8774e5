"""Encodings: the command codec boundary and the stored results."""

from __future__ import annotations

import pytest

from kvstore.storage import (
    BinaryCodec,
    CasResult,
    CompareAndSwap,
    Delete,
    DeleteResult,
    InvalidArgument,
    KeyValue,
    Operation,
    Put,
    PutResult,
    Rejected,
    RequestId,
    Result,
)
from kvstore.storage.records import decode_result, encode_result

OPS: list[Operation] = [
    Put(b"k", b"v"),
    Put(b"k", b"", prev_kv=True, request_id=RequestId(1, 2)),
    Delete(b"\x00\xff", prev_kv=True),
    Delete(b"k", request_id=RequestId(2**64 - 1, 5)),
    CompareAndSwap(b"k", b"n", expected_value=b""),
    CompareAndSwap(b"k", b"n", expected_absent=True, request_id=RequestId(3, 4)),
    CompareAndSwap(b"k", b"n", expected_mod_revision=99),
]

KV = KeyValue(b"key", b"value", 3, 9, 4)
RESULTS: list[Result] = [
    PutResult(1),
    PutResult(2, KV),
    DeleteResult(3, False),
    DeleteResult(4, True, KV),
    CasResult(5, False, None),
    CasResult(6, True, KV),
    Rejected(7, "INVALID_ARGUMENT", "key is 600 bytes; keys must be 1 to 511 bytes"),
]


@pytest.mark.parametrize("op", OPS)
def test_binary_codec_round_trip(op: Operation) -> None:
    codec = BinaryCodec()
    assert codec.decode(codec.encode(op)) == op


def test_binary_codec_rejects_garbage() -> None:
    with pytest.raises(InvalidArgument):
        BinaryCodec().decode(b"\x09" + b"\x00" * 17)
    with pytest.raises(InvalidArgument):
        BinaryCodec().decode(BinaryCodec().encode(Put(b"k", b"value"))[:-2])


@pytest.mark.parametrize("result", RESULTS)
def test_result_encoding_round_trip(result: Result) -> None:
    assert decode_result(encode_result(result)) == result
