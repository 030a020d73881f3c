from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
COLLECTS_UNKNOWN_FIELDS_FIELD_NUMBER: _ClassVar[int]
collects_unknown_fields: _descriptor.FieldDescriptor
STREAMING_TWIN_FIELD_NUMBER: _ClassVar[int]
streaming_twin: _descriptor.FieldDescriptor
UPLOAD_TWIN_FIELD_NUMBER: _ClassVar[int]
upload_twin: _descriptor.FieldDescriptor
UPLOAD_FIELD_NUMBER: _ClassVar[int]
upload: _descriptor.FieldDescriptor

class StreamingTwin(_message.Message):
    __slots__ = ("method", "selector_field", "request_field", "event_field")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SELECTOR_FIELD_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_FIELD_NUMBER: _ClassVar[int]
    method: str
    selector_field: str
    request_field: str
    event_field: str
    def __init__(self, method: _Optional[str] = ..., selector_field: _Optional[str] = ..., request_field: _Optional[str] = ..., event_field: _Optional[str] = ...) -> None: ...

class UploadTwin(_message.Message):
    __slots__ = ("method",)
    METHOD_FIELD_NUMBER: _ClassVar[int]
    method: str
    def __init__(self, method: _Optional[str] = ...) -> None: ...

class UploadChunk(_message.Message):
    __slots__ = ("field", "index", "data", "begins")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BEGINS_FIELD_NUMBER: _ClassVar[int]
    field: str
    index: int
    data: bytes
    begins: bool
    def __init__(self, field: _Optional[str] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ..., begins: _Optional[bool] = ...) -> None: ...

class Upload(_message.Message):
    __slots__ = ("data_field", "filename_field", "content_type_field")
    DATA_FIELD_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_FIELD_NUMBER: _ClassVar[int]
    data_field: str
    filename_field: str
    content_type_field: str
    def __init__(self, data_field: _Optional[str] = ..., filename_field: _Optional[str] = ..., content_type_field: _Optional[str] = ...) -> None: ...
