# Generated from protos/ by scripts/gen_proto.py. Do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Payload(_message.Message):
    __slots__ = ("codec", "data", "blobs", "has_markers")
    CODEC_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BLOBS_FIELD_NUMBER: _ClassVar[int]
    HAS_MARKERS_FIELD_NUMBER: _ClassVar[int]
    codec: str
    data: bytes
    blobs: _containers.RepeatedScalarFieldContainer[bytes]
    has_markers: bool
    def __init__(self, codec: _Optional[str] = ..., data: _Optional[bytes] = ..., blobs: _Optional[_Iterable[bytes]] = ..., has_markers: _Optional[bool] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ("kind", "type", "message", "traceback")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[ErrorInfo.Kind]
        REMOTE: _ClassVar[ErrorInfo.Kind]
        TOOL_NOT_FOUND: _ClassVar[ErrorInfo.Kind]
        INVALID_ARGUMENTS: _ClassVar[ErrorInfo.Kind]
        PAYLOAD_TOO_LARGE: _ClassVar[ErrorInfo.Kind]
        CANCELLED: _ClassVar[ErrorInfo.Kind]
        DEADLINE_EXCEEDED: _ClassVar[ErrorInfo.Kind]
        UNAVAILABLE: _ClassVar[ErrorInfo.Kind]
        CODEC: _ClassVar[ErrorInfo.Kind]
        NOT_STARTED: _ClassVar[ErrorInfo.Kind]
    KIND_UNSPECIFIED: ErrorInfo.Kind
    REMOTE: ErrorInfo.Kind
    TOOL_NOT_FOUND: ErrorInfo.Kind
    INVALID_ARGUMENTS: ErrorInfo.Kind
    PAYLOAD_TOO_LARGE: ErrorInfo.Kind
    CANCELLED: ErrorInfo.Kind
    DEADLINE_EXCEEDED: ErrorInfo.Kind
    UNAVAILABLE: ErrorInfo.Kind
    CODEC: ErrorInfo.Kind
    NOT_STARTED: ErrorInfo.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TRACEBACK_FIELD_NUMBER: _ClassVar[int]
    kind: ErrorInfo.Kind
    type: str
    message: str
    traceback: str
    def __init__(self, kind: _Optional[_Union[ErrorInfo.Kind, str]] = ..., type: _Optional[str] = ..., message: _Optional[str] = ..., traceback: _Optional[str] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("request_id", "tool", "args", "session_id", "timeout", "session_metadata")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    SESSION_METADATA_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    tool: str
    args: Payload
    session_id: str
    timeout: float
    session_metadata: bytes
    def __init__(self, request_id: _Optional[int] = ..., tool: _Optional[str] = ..., args: _Optional[_Union[Payload, _Mapping]] = ..., session_id: _Optional[str] = ..., timeout: _Optional[float] = ..., session_metadata: _Optional[bytes] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("request_id", "result", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    result: Payload
    error: ErrorInfo
    def __init__(self, request_id: _Optional[int] = ..., result: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[_Union[ErrorInfo, _Mapping]] = ...) -> None: ...

class StreamChunk(_message.Message):
    __slots__ = ("request_id", "chunk", "error", "end")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    request_id: int
    chunk: Payload
    error: ErrorInfo
    end: bool
    def __init__(self, request_id: _Optional[int] = ..., chunk: _Optional[_Union[Payload, _Mapping]] = ..., error: _Optional[_Union[ErrorInfo, _Mapping]] = ..., end: _Optional[bool] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ParameterSpec(_message.Message):
    __slots__ = ("name", "annotation", "required", "default")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ANNOTATION_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    name: str
    annotation: str
    required: bool
    default: str
    def __init__(self, name: _Optional[str] = ..., annotation: _Optional[str] = ..., required: _Optional[bool] = ..., default: _Optional[str] = ...) -> None: ...

class ToolSpec(_message.Message):
    __slots__ = ("name", "doc", "parameters", "streaming", "returns")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DOC_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    STREAMING_FIELD_NUMBER: _ClassVar[int]
    RETURNS_FIELD_NUMBER: _ClassVar[int]
    name: str
    doc: str
    parameters: _containers.RepeatedCompositeFieldContainer[ParameterSpec]
    streaming: bool
    returns: str
    def __init__(self, name: _Optional[str] = ..., doc: _Optional[str] = ..., parameters: _Optional[_Iterable[_Union[ParameterSpec, _Mapping]]] = ..., streaming: _Optional[bool] = ..., returns: _Optional[str] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("adapter", "protocol_version", "worker_id", "tools", "max_concurrency")
    ADAPTER_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENCY_FIELD_NUMBER: _ClassVar[int]
    adapter: str
    protocol_version: int
    worker_id: str
    tools: _containers.RepeatedCompositeFieldContainer[ToolSpec]
    max_concurrency: int
    def __init__(self, adapter: _Optional[str] = ..., protocol_version: _Optional[int] = ..., worker_id: _Optional[str] = ..., tools: _Optional[_Iterable[_Union[ToolSpec, _Mapping]]] = ..., max_concurrency: _Optional[int] = ...) -> None: ...

class ClientFrame(_message.Message):
    __slots__ = ("execute", "stream", "cancel", "end_sessions", "started_page", "withdraw")
    EXECUTE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    END_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    STARTED_PAGE_FIELD_NUMBER: _ClassVar[int]
    WITHDRAW_FIELD_NUMBER: _ClassVar[int]
    execute: _containers.RepeatedCompositeFieldContainer[ExecuteRequest]
    stream: _containers.RepeatedCompositeFieldContainer[ExecuteRequest]
    cancel: _containers.RepeatedScalarFieldContainer[int]
    end_sessions: _containers.RepeatedScalarFieldContainer[str]
    started_page: str
    withdraw: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, execute: _Optional[_Iterable[_Union[ExecuteRequest, _Mapping]]] = ..., stream: _Optional[_Iterable[_Union[ExecuteRequest, _Mapping]]] = ..., cancel: _Optional[_Iterable[int]] = ..., end_sessions: _Optional[_Iterable[str]] = ..., started_page: _Optional[str] = ..., withdraw: _Optional[_Iterable[int]] = ...) -> None: ...

class ServerFrame(_message.Message):
    __slots__ = ("responses", "chunks")
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ExecuteResponse]
    chunks: _containers.RepeatedCompositeFieldContainer[StreamChunk]
    def __init__(self, responses: _Optional[_Iterable[_Union[ExecuteResponse, _Mapping]]] = ..., chunks: _Optional[_Iterable[_Union[StreamChunk, _Mapping]]] = ...) -> None: ...
