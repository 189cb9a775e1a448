# Generated from protos/ by scripts/gen_proto.py. Do not edit.
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BridgeVariable(_message.Message):
    __slots__ = ("name", "spec_json", "value_json", "data", "version", "uid", "source", "updated_at")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPEC_JSON_FIELD_NUMBER: _ClassVar[int]
    VALUE_JSON_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    name: str
    spec_json: str
    value_json: str
    data: bytes
    version: int
    uid: str
    source: str
    updated_at: float
    def __init__(self, name: _Optional[str] = ..., spec_json: _Optional[str] = ..., value_json: _Optional[str] = ..., data: _Optional[bytes] = ..., version: _Optional[int] = ..., uid: _Optional[str] = ..., source: _Optional[str] = ..., updated_at: _Optional[float] = ...) -> None: ...

class BridgeFailure(_message.Message):
    __slots__ = ("kind", "message", "variable", "constraint", "error_type")
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        KIND_UNSPECIFIED: _ClassVar[BridgeFailure.Kind]
        SESSION_NOT_FOUND: _ClassVar[BridgeFailure.Kind]
        VARIABLE_NOT_FOUND: _ClassVar[BridgeFailure.Kind]
        VARIABLE_EXISTS: _ClassVar[BridgeFailure.Kind]
        VALIDATION: _ClassVar[BridgeFailure.Kind]
        BAD_REQUEST: _ClassVar[BridgeFailure.Kind]
        HOST_TOOL_NOT_FOUND: _ClassVar[BridgeFailure.Kind]
        HOST_TOOL_FAILED: _ClassVar[BridgeFailure.Kind]
        BACKEND: _ClassVar[BridgeFailure.Kind]
        WATCH_ENDED: _ClassVar[BridgeFailure.Kind]
    KIND_UNSPECIFIED: BridgeFailure.Kind
    SESSION_NOT_FOUND: BridgeFailure.Kind
    VARIABLE_NOT_FOUND: BridgeFailure.Kind
    VARIABLE_EXISTS: BridgeFailure.Kind
    VALIDATION: BridgeFailure.Kind
    BAD_REQUEST: BridgeFailure.Kind
    HOST_TOOL_NOT_FOUND: BridgeFailure.Kind
    HOST_TOOL_FAILED: BridgeFailure.Kind
    BACKEND: BridgeFailure.Kind
    WATCH_ENDED: BridgeFailure.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINT_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    kind: BridgeFailure.Kind
    message: str
    variable: str
    constraint: str
    error_type: str
    def __init__(self, kind: _Optional[_Union[BridgeFailure.Kind, str]] = ..., message: _Optional[str] = ..., variable: _Optional[str] = ..., constraint: _Optional[str] = ..., error_type: _Optional[str] = ...) -> None: ...

class RegisterVariableRequest(_message.Message):
    __slots__ = ("session_id", "variable")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    variable: BridgeVariable
    def __init__(self, session_id: _Optional[str] = ..., variable: _Optional[_Union[BridgeVariable, _Mapping]] = ...) -> None: ...

class RegisterVariableReply(_message.Message):
    __slots__ = ("variable", "failure")
    VARIABLE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    variable: BridgeVariable
    failure: BridgeFailure
    def __init__(self, variable: _Optional[_Union[BridgeVariable, _Mapping]] = ..., failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class GetVariablesRequest(_message.Message):
    __slots__ = ("session_id", "names", "all")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    ALL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    all: bool
    def __init__(self, session_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ..., all: _Optional[bool] = ...) -> None: ...

class GetVariablesReply(_message.Message):
    __slots__ = ("variables", "failure")
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[BridgeVariable]
    failure: BridgeFailure
    def __init__(self, variables: _Optional[_Iterable[_Union[BridgeVariable, _Mapping]]] = ..., failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class SetVariablesRequest(_message.Message):
    __slots__ = ("session_id", "values")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    values: _containers.RepeatedCompositeFieldContainer[BridgeVariable]
    def __init__(self, session_id: _Optional[str] = ..., values: _Optional[_Iterable[_Union[BridgeVariable, _Mapping]]] = ...) -> None: ...

class SetVariablesReply(_message.Message):
    __slots__ = ("variables", "conflict", "failure")
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    CONFLICT_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    variables: _containers.RepeatedCompositeFieldContainer[BridgeVariable]
    conflict: bool
    failure: BridgeFailure
    def __init__(self, variables: _Optional[_Iterable[_Union[BridgeVariable, _Mapping]]] = ..., conflict: _Optional[bool] = ..., failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class DeleteVariableRequest(_message.Message):
    __slots__ = ("session_id", "name")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class DeleteVariableReply(_message.Message):
    __slots__ = ("failure",)
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    failure: BridgeFailure
    def __init__(self, failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class WatchVariablesRequest(_message.Message):
    __slots__ = ("session_id", "names")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, session_id: _Optional[str] = ..., names: _Optional[_Iterable[str]] = ...) -> None: ...

class VariableChangeEvent(_message.Message):
    __slots__ = ("started", "name", "old", "new", "source", "failure")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    OLD_FIELD_NUMBER: _ClassVar[int]
    NEW_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    started: bool
    name: str
    old: BridgeVariable
    new: BridgeVariable
    source: str
    failure: BridgeFailure
    def __init__(self, started: _Optional[bool] = ..., name: _Optional[str] = ..., old: _Optional[_Union[BridgeVariable, _Mapping]] = ..., new: _Optional[_Union[BridgeVariable, _Mapping]] = ..., source: _Optional[str] = ..., failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class CallHostToolRequest(_message.Message):
    __slots__ = ("session_id", "name", "args_json")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    name: str
    args_json: bytes
    def __init__(self, session_id: _Optional[str] = ..., name: _Optional[str] = ..., args_json: _Optional[bytes] = ...) -> None: ...

class CallHostToolReply(_message.Message):
    __slots__ = ("result_json", "failure")
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    result_json: bytes
    failure: BridgeFailure
    def __init__(self, result_json: _Optional[bytes] = ..., failure: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...

class BridgeHello(_message.Message):
    __slots__ = ("worker_id", "token")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    token: str
    def __init__(self, worker_id: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class BridgeCancel(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BridgeRequest(_message.Message):
    __slots__ = ("id", "hello", "register_variable", "get_variables", "set_variables", "delete_variable", "call_host_tool", "cancel")
    ID_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    REGISTER_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    SET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    DELETE_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    CALL_HOST_TOOL_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    id: int
    hello: BridgeHello
    register_variable: RegisterVariableRequest
    get_variables: GetVariablesRequest
    set_variables: SetVariablesRequest
    delete_variable: DeleteVariableRequest
    call_host_tool: CallHostToolRequest
    cancel: BridgeCancel
    def __init__(self, id: _Optional[int] = ..., hello: _Optional[_Union[BridgeHello, _Mapping]] = ..., register_variable: _Optional[_Union[RegisterVariableRequest, _Mapping]] = ..., get_variables: _Optional[_Union[GetVariablesRequest, _Mapping]] = ..., set_variables: _Optional[_Union[SetVariablesRequest, _Mapping]] = ..., delete_variable: _Optional[_Union[DeleteVariableRequest, _Mapping]] = ..., call_host_tool: _Optional[_Union[CallHostToolRequest, _Mapping]] = ..., cancel: _Optional[_Union[BridgeCancel, _Mapping]] = ...) -> None: ...

class BridgeReply(_message.Message):
    __slots__ = ("id", "register_variable", "get_variables", "set_variables", "delete_variable", "call_host_tool", "refused")
    ID_FIELD_NUMBER: _ClassVar[int]
    REGISTER_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    GET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    SET_VARIABLES_FIELD_NUMBER: _ClassVar[int]
    DELETE_VARIABLE_FIELD_NUMBER: _ClassVar[int]
    CALL_HOST_TOOL_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    id: int
    register_variable: RegisterVariableReply
    get_variables: GetVariablesReply
    set_variables: SetVariablesReply
    delete_variable: DeleteVariableReply
    call_host_tool: CallHostToolReply
    refused: BridgeFailure
    def __init__(self, id: _Optional[int] = ..., register_variable: _Optional[_Union[RegisterVariableReply, _Mapping]] = ..., get_variables: _Optional[_Union[GetVariablesReply, _Mapping]] = ..., set_variables: _Optional[_Union[SetVariablesReply, _Mapping]] = ..., delete_variable: _Optional[_Union[DeleteVariableReply, _Mapping]] = ..., call_host_tool: _Optional[_Union[CallHostToolReply, _Mapping]] = ..., refused: _Optional[_Union[BridgeFailure, _Mapping]] = ...) -> None: ...
