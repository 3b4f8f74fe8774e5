"""The state machine's command format: client writes as protobuf log entries."""

from kvstore.fsm.codec import ProtobufCodec, command_from_request, operation_from_request

__all__ = ["ProtobufCodec", "command_from_request", "operation_from_request"]
