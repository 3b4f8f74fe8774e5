from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Entry(_message.Message):
    __slots__ = ("term", "type", "data")
    TERM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    term: int
    type: int
    data: bytes
    def __init__(self, term: _Optional[int] = ..., type: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class AppendEntries(_message.Message):
    __slots__ = ("term", "prev_log_index", "prev_log_term", "leader_commit", "entries", "context")
    TERM_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    PREV_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    term: int
    prev_log_index: int
    prev_log_term: int
    leader_commit: int
    entries: _containers.RepeatedCompositeFieldContainer[Entry]
    context: int
    def __init__(self, term: _Optional[int] = ..., prev_log_index: _Optional[int] = ..., prev_log_term: _Optional[int] = ..., leader_commit: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[Entry, _Mapping]]] = ..., context: _Optional[int] = ...) -> None: ...

class AppendEntriesResult(_message.Message):
    __slots__ = ("term", "rejected", "last_log_index", "features", "capacity", "context")
    TERM_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    term: int
    rejected: int
    last_log_index: int
    features: int
    capacity: int
    context: int
    def __init__(self, term: _Optional[int] = ..., rejected: _Optional[int] = ..., last_log_index: _Optional[int] = ..., features: _Optional[int] = ..., capacity: _Optional[int] = ..., context: _Optional[int] = ...) -> None: ...

class RequestVote(_message.Message):
    __slots__ = ("term", "candidate_id", "last_log_index", "last_log_term", "disrupt_leader", "pre_vote")
    TERM_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    DISRUPT_LEADER_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    term: int
    candidate_id: int
    last_log_index: int
    last_log_term: int
    disrupt_leader: bool
    pre_vote: bool
    def __init__(self, term: _Optional[int] = ..., candidate_id: _Optional[int] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ..., disrupt_leader: _Optional[bool] = ..., pre_vote: _Optional[bool] = ...) -> None: ...

class RequestVoteResult(_message.Message):
    __slots__ = ("term", "vote_granted", "pre_vote", "features", "capacity")
    TERM_FIELD_NUMBER: _ClassVar[int]
    VOTE_GRANTED_FIELD_NUMBER: _ClassVar[int]
    PRE_VOTE_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    term: int
    vote_granted: bool
    pre_vote: bool
    features: int
    capacity: int
    def __init__(self, term: _Optional[int] = ..., vote_granted: _Optional[bool] = ..., pre_vote: _Optional[bool] = ..., features: _Optional[int] = ..., capacity: _Optional[int] = ...) -> None: ...

class InstallSnapshot(_message.Message):
    __slots__ = ("term", "last_index", "last_term", "conf", "conf_index")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_TERM_FIELD_NUMBER: _ClassVar[int]
    CONF_FIELD_NUMBER: _ClassVar[int]
    CONF_INDEX_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_index: int
    last_term: int
    conf: bytes
    conf_index: int
    def __init__(self, term: _Optional[int] = ..., last_index: _Optional[int] = ..., last_term: _Optional[int] = ..., conf: _Optional[bytes] = ..., conf_index: _Optional[int] = ...) -> None: ...

class TimeoutNow(_message.Message):
    __slots__ = ("term", "last_log_index", "last_log_term")
    TERM_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_INDEX_FIELD_NUMBER: _ClassVar[int]
    LAST_LOG_TERM_FIELD_NUMBER: _ClassVar[int]
    term: int
    last_log_index: int
    last_log_term: int
    def __init__(self, term: _Optional[int] = ..., last_log_index: _Optional[int] = ..., last_log_term: _Optional[int] = ...) -> None: ...

class RaftMessage(_message.Message):
    __slots__ = ("append_entries", "append_entries_result", "request_vote", "request_vote_result", "install_snapshot", "timeout_now")
    APPEND_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    APPEND_ENTRIES_RESULT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_VOTE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_VOTE_RESULT_FIELD_NUMBER: _ClassVar[int]
    INSTALL_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_NOW_FIELD_NUMBER: _ClassVar[int]
    append_entries: AppendEntries
    append_entries_result: AppendEntriesResult
    request_vote: RequestVote
    request_vote_result: RequestVoteResult
    install_snapshot: InstallSnapshot
    timeout_now: TimeoutNow
    def __init__(self, append_entries: _Optional[_Union[AppendEntries, _Mapping]] = ..., append_entries_result: _Optional[_Union[AppendEntriesResult, _Mapping]] = ..., request_vote: _Optional[_Union[RequestVote, _Mapping]] = ..., request_vote_result: _Optional[_Union[RequestVoteResult, _Mapping]] = ..., install_snapshot: _Optional[_Union[InstallSnapshot, _Mapping]] = ..., timeout_now: _Optional[_Union[TimeoutNow, _Mapping]] = ...) -> None: ...

class MessageBatch(_message.Message):
    __slots__ = ("cluster_id", "from_id", "from_address", "to_id", "messages")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    from_address: str
    to_id: int
    messages: _containers.RepeatedCompositeFieldContainer[RaftMessage]
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., from_address: _Optional[str] = ..., to_id: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[RaftMessage, _Mapping]]] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: int
    def __init__(self, batches: _Optional[int] = ...) -> None: ...

class SnapshotChunk(_message.Message):
    __slots__ = ("cluster_id", "from_id", "from_address", "to_id", "header", "offset", "data", "last")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_ADDRESS_FIELD_NUMBER: _ClassVar[int]
    TO_ID_FIELD_NUMBER: _ClassVar[int]
    HEADER_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    from_id: int
    from_address: str
    to_id: int
    header: InstallSnapshot
    offset: int
    data: bytes
    last: bool
    def __init__(self, cluster_id: _Optional[int] = ..., from_id: _Optional[int] = ..., from_address: _Optional[str] = ..., to_id: _Optional[int] = ..., header: _Optional[_Union[InstallSnapshot, _Mapping]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class SnapshotAck(_message.Message):
    __slots__ = ("installed", "error")
    INSTALLED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    installed: bool
    error: str
    def __init__(self, installed: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class ForwardRequest(_message.Message):
    __slots__ = ("id", "method", "request", "timeout_seconds")
    ID_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    id: int
    method: str
    request: bytes
    timeout_seconds: float
    def __init__(self, id: _Optional[int] = ..., method: _Optional[str] = ..., request: _Optional[bytes] = ..., timeout_seconds: _Optional[float] = ...) -> None: ...

class ForwardResponse(_message.Message):
    __slots__ = ("id", "response", "code", "message")
    ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    id: int
    response: bytes
    code: int
    message: str
    def __init__(self, id: _Optional[int] = ..., response: _Optional[bytes] = ..., code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ForwardBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ForwardRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ForwardRequest, _Mapping]]] = ...) -> None: ...

class ForwardAnswers(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ForwardResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ForwardResponse, _Mapping]]] = ...) -> None: ...
