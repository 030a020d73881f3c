from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf import descriptor as _descriptor
from typing import ClassVar as _ClassVar

DESCRIPTOR: _descriptor.FileDescriptor
COLLECTS_UNKNOWN_FIELDS_FIELD_NUMBER: _ClassVar[int]
collects_unknown_fields: _descriptor.FieldDescriptor
