"""COMMAND entries carry a ``Command`` protobuf wrapping the client's request.

The API serializes the request it received once, into the entry; every
replica decodes it into a storage ``Operation`` when applying. Keeping the
request as sent (rather than a private format) lets tools read the log.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from kvstore.raft.v1 import command_pb2
from kvstore.storage import CompareAndSwap, Delete, InvalidArgument, Operation, Put, RequestId
from kvstore.v1 import kv_pb2

WriteRequest = kv_pb2.PutRequest | kv_pb2.DeleteRequest | kv_pb2.CompareAndSwapRequest


def command_from_request(request: WriteRequest) -> bytes:
    """The entry data for a client write."""
    if isinstance(request, kv_pb2.PutRequest):
        return command_pb2.Command(put=request).SerializeToString()
    if isinstance(request, kv_pb2.DeleteRequest):
        return command_pb2.Command(delete=request).SerializeToString()
    return command_pb2.Command(compare_and_swap=request).SerializeToString()


def _request_id(message: kv_pb2.RequestId, present: bool) -> RequestId | None:
    return RequestId(message.client_id, message.sequence) if present else None


def operation_from_request(request: WriteRequest) -> Operation:
    """The storage operation a client write stands for."""
    if isinstance(request, kv_pb2.PutRequest):
        return Put(
            request.key,
            request.value,
            prev_kv=request.prev_kv,
            request_id=_request_id(request.request_id, request.HasField("request_id")),
        )
    if isinstance(request, kv_pb2.DeleteRequest):
        return Delete(
            request.key,
            prev_kv=request.prev_kv,
            request_id=_request_id(request.request_id, request.HasField("request_id")),
        )
    which = request.WhichOneof("expected")
    return CompareAndSwap(
        request.key,
        request.new_value,
        expected_value=request.value if which == "value" else None,
        expected_absent=request.absent if which == "absent" else False,
        expected_mod_revision=request.mod_revision if which == "mod_revision" else 0,
        request_id=_request_id(request.request_id, request.HasField("request_id")),
    )


class ProtobufCodec:
    """``CommandCodec`` over ``Command`` protobufs."""

    def encode(self, op: Operation) -> bytes:
        rid = (
            kv_pb2.RequestId(client_id=op.request_id.client_id, sequence=op.request_id.sequence)
            if op.request_id
            else None
        )
        if isinstance(op, Put):
            return command_from_request(
                kv_pb2.PutRequest(key=op.key, value=op.value, prev_kv=op.prev_kv, request_id=rid)
            )
        if isinstance(op, Delete):
            return command_from_request(
                kv_pb2.DeleteRequest(key=op.key, prev_kv=op.prev_kv, request_id=rid)
            )
        cas = kv_pb2.CompareAndSwapRequest(key=op.key, new_value=op.new_value, request_id=rid)
        if op.expected_value is not None:
            cas.value = op.expected_value
        elif op.expected_absent:
            cas.absent = True
        else:
            cas.mod_revision = op.expected_mod_revision
        return command_from_request(cas)

    def decode(self, data: bytes) -> Operation:
        try:
            command = command_pb2.Command.FromString(data)
        except DecodeError as exc:
            raise InvalidArgument(f"command is malformed: {exc}") from exc
        which = command.WhichOneof("op")
        if which == "put":
            return operation_from_request(command.put)
        if which == "delete":
            return operation_from_request(command.delete)
        if which == "compare_and_swap":
            return operation_from_request(command.compare_and_swap)
        raise InvalidArgument("command has no operation")
