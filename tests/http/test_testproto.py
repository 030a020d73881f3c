"""Test-only proto services, built as a descriptor at import time.

`TestService` exercises what the aqueduct protos do not: path variables
(dotted, with `=` segments), custom verbs, `body: "field"`, `response_body`,
query parameters, enums, maps, doubles, bytes, a message without an
unknown-field collector and a method without an http rule. `FormService`
takes `multipart/form-data` bodies: every scalar type, repeated fields, bytes,
file messages declared with `(gateway_http.api.v1.upload)`, an unknown-field
collector, and each kind of `body`. Other test modules of the door import
them; the tests here check the descriptor itself.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.api import annotations_pb2 as google_annotations
from google.protobuf import (
    descriptor_pb2,
    descriptor_pool,
    message_factory,
    struct_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway_http.api.v1 import annotations_pb2

PACKAGE = "gatewayhttp.test.v1"
FILE_NAME = "gatewayhttp/test/v1/test.proto"

_F = descriptor_pb2.FieldDescriptorProto
# Untyped: see gateway_http.marshal.
COLLECTS_UNKNOWN_FIELDS: Any = annotations_pb2.collects_unknown_fields
UPLOAD: Any = annotations_pb2.upload


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_: int,
    *,
    type_name: str = "",
    repeated: bool = False,
    optional: bool = False,
) -> descriptor_pb2.FieldDescriptorProto:
    field = msg.field.add(name=name, number=number, type=type_)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name
    if optional:
        field.proto3_optional = True
        field.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name=f"_{name}")
    return field


def _method(
    service: descriptor_pb2.ServiceDescriptorProto,
    name: str,
    request: str,
    response: str,
    **rule: str,
) -> descriptor_pb2.MethodDescriptorProto:
    method = service.method.add(
        name=name, input_type=f".{PACKAGE}.{request}", output_type=f".{PACKAGE}.{response}"
    )
    if rule:
        http = method.options.Extensions[google_annotations.http]
        for key, value in rule.items():
            setattr(http, key, value)
    return method


def _build() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(
        name=FILE_NAME,
        package=PACKAGE,
        syntax="proto3",
        dependency=[
            "google/api/annotations.proto",
            "google/protobuf/struct.proto",
            "google/protobuf/wrappers.proto",
            "gateway_http/api/v1/annotations.proto",
        ],
    )
    color = fdp.enum_type.add(name="Color")
    for i, n in enumerate(["COLOR_UNSPECIFIED", "COLOR_RED", "COLOR_BLUE"]):
        color.value.add(name=n, number=i)

    inner = fdp.message_type.add(name="Inner")
    _field(inner, "label", 1, _F.TYPE_STRING)
    _field(inner, "size", 2, _F.TYPE_INT64)

    req = fdp.message_type.add(name="EchoRequest")
    _field(req, "name", 1, _F.TYPE_STRING)
    _field(req, "big", 2, _F.TYPE_INT64)
    _field(req, "count", 3, _F.TYPE_INT32, optional=True)
    _field(req, "tags", 4, _F.TYPE_STRING, repeated=True)
    _field(req, "inner", 5, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Inner")
    _field(req, "blob", 6, _F.TYPE_BYTES)
    _field(req, "color", 7, _F.TYPE_ENUM, type_name=f".{PACKAGE}.Color")
    _field(req, "ratio", 8, _F.TYPE_DOUBLE)
    _field(req, "flag", 9, _F.TYPE_BOOL, optional=True)
    entry = req.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_INT64)
    _field(
        req,
        "counts",
        10,
        _F.TYPE_MESSAGE,
        type_name=f".{PACKAGE}.EchoRequest.CountsEntry",
        repeated=True,
    )
    _field(req, "scale", 11, _F.TYPE_FLOAT)
    _field(req, "ubig", 12, _F.TYPE_UINT64)

    resp = fdp.message_type.add(name="EchoResponse")
    _field(resp, "echo", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.EchoRequest")
    _field(resp, "items", 2, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Inner", repeated=True)

    service = fdp.service.add(name="TestService")
    echo = _method(
        service, "Echo", "EchoRequest", "EchoResponse", post="/test/v1/echo/{name}", body="*"
    )
    echo.options.Extensions[google_annotations.http].additional_bindings.add(
        get="/test/v1/{name=things/*}/echo"
    )
    _method(
        service,
        "Peek",
        "EchoRequest",
        "EchoResponse",
        get="/test/v1/inner/{inner.label}:peek",
        response_body="items",
    )
    _method(
        service, "PutInner", "EchoRequest", "EchoResponse", put="/test/v1/put/{name}", body="inner"
    )
    _method(service, "NoHttp", "EchoRequest", "EchoResponse")
    _add_forms(fdp)
    return fdp


def _add_forms(fdp: descriptor_pb2.FileDescriptorProto) -> None:
    """FormService: what a multipart/form-data body can set."""
    # A file with all it can say, and one that keeps its contents only.
    file = fdp.message_type.add(name="File")
    file.options.Extensions[UPLOAD].data_field = "data"
    file.options.Extensions[UPLOAD].filename_field = "filename"
    file.options.Extensions[UPLOAD].content_type_field = "content_type"
    _field(file, "data", 1, _F.TYPE_BYTES)
    _field(file, "filename", 2, _F.TYPE_STRING)
    _field(file, "content_type", 3, _F.TYPE_STRING, optional=True)
    _field(file, "note", 4, _F.TYPE_STRING)  # not the upload's: left unset by a form
    contents = fdp.message_type.add(name="Contents")
    contents.options.Extensions[UPLOAD].data_field = "content"
    _field(contents, "content", 1, _F.TYPE_BYTES)

    form = fdp.message_type.add(name="FormRequest")
    scalars = [
        ("name", _F.TYPE_STRING),
        ("text", _F.TYPE_STRING),
        ("i32", _F.TYPE_INT32),
        ("i64", _F.TYPE_INT64),
        ("u32", _F.TYPE_UINT32),
        ("u64", _F.TYPE_UINT64),
        ("s32", _F.TYPE_SINT32),
        ("s64", _F.TYPE_SINT64),
        ("fx32", _F.TYPE_FIXED32),
        ("fx64", _F.TYPE_FIXED64),
        ("sfx32", _F.TYPE_SFIXED32),
        ("sfx64", _F.TYPE_SFIXED64),
        ("f32", _F.TYPE_FLOAT),
        ("f64", _F.TYPE_DOUBLE),
        ("flag", _F.TYPE_BOOL),
        ("blob", _F.TYPE_BYTES),
    ]
    for number, (name, type_) in enumerate(scalars, start=1):
        _field(form, name, number, type_)
    _field(form, "color", 17, _F.TYPE_ENUM, type_name=f".{PACKAGE}.Color")
    _field(form, "maybe", 18, _F.TYPE_INT32, optional=True)
    _field(form, "stream", 19, _F.TYPE_BOOL, optional=True)
    _field(form, "tags", 20, _F.TYPE_STRING, repeated=True)
    _field(form, "nums", 21, _F.TYPE_INT64, repeated=True)
    _field(form, "blobs", 22, _F.TYPE_BYTES, repeated=True)
    _field(form, "colors", 23, _F.TYPE_ENUM, type_name=f".{PACKAGE}.Color", repeated=True)
    _field(form, "file", 24, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.File")
    _field(form, "files", 25, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.File", repeated=True)
    _field(form, "contents", 26, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Contents")
    _field(form, "inner", 27, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Inner")
    entry = form.nested_type.add(name="CountsEntry")
    entry.options.map_entry = True
    _field(entry, "key", 1, _F.TYPE_STRING)
    _field(entry, "value", 2, _F.TYPE_INT64)
    _field(
        form,
        "counts",
        28,
        _F.TYPE_MESSAGE,
        type_name=f".{PACKAGE}.FormRequest.CountsEntry",
        repeated=True,
    )
    _field(form, "wrapped", 29, _F.TYPE_MESSAGE, type_name=".google.protobuf.Int32Value")
    _field(
        form,
        "wrapped_list",
        30,
        _F.TYPE_MESSAGE,
        type_name=".google.protobuf.StringValue",
        repeated=True,
    )

    open_form = fdp.message_type.add(name="OpenFormRequest")
    _field(open_form, "prompt", 1, _F.TYPE_STRING)
    _field(open_form, "n", 2, _F.TYPE_INT32, optional=True)
    _field(open_form, "image", 3, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.File", repeated=True)
    extra = _field(open_form, "extra", 4, _F.TYPE_MESSAGE, type_name=".google.protobuf.Struct")
    extra.options.Extensions[COLLECTS_UNKNOWN_FIELDS] = True
    _field(open_form, "mask", 5, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.File")
    _field(open_form, "stream", 6, _F.TYPE_BOOL, optional=True)

    tree = fdp.message_type.add(name="Tree")  # recursive: as deep as a form's names go
    _field(tree, "child", 1, _F.TYPE_MESSAGE, type_name=f".{PACKAGE}.Tree")
    _field(tree, "name", 2, _F.TYPE_STRING)

    service = fdp.service.add(name="FormService")
    _method(service, "Submit", "FormRequest", "EchoResponse", post="/forms/v1/{name}", body="*")
    _method(
        service,
        "SubmitInner",
        "FormRequest",
        "EchoResponse",
        put="/forms/v1/{name}/inner",
        body="inner",
    )
    _method(
        service,
        "SubmitFile",
        "FormRequest",
        "EchoResponse",
        put="/forms/v1/{name}/file",
        body="file",
    )
    _method(
        service,
        "SubmitTags",
        "FormRequest",
        "EchoResponse",
        put="/forms/v1/{name}/tags",
        body="tags",
    )
    open_ = _method(
        service, "Open", "OpenFormRequest", "EchoResponse", post="/forms/v1:open", body="*"
    )
    _method(service, "Grow", "Tree", "EchoResponse", post="/forms/v1:grow", body="*")
    # Where the OpenAI SDK sends `images.edit` when its base URL is `/sdk/v1`:
    # the tests check the SDK's own multipart encoding against the door.
    open_.options.Extensions[google_annotations.http].additional_bindings.add(
        post="/sdk/v1/images/edits", body="*"
    )


FILE_PROTO = _build()
_pool = descriptor_pool.Default()
# The dependencies, in the pool before the file that imports them.
assert struct_pb2.DESCRIPTOR.name and wrappers_pb2.DESCRIPTOR.name
try:
    FILE = _pool.FindFileByName(FILE_NAME)
except KeyError:
    FILE = _pool.AddSerializedFile(FILE_PROTO.SerializeToString())

SERVICE: ServiceDescriptor = FILE.services_by_name["TestService"]
EchoRequest: type[Message] = message_factory.GetMessageClass(
    FILE.message_types_by_name["EchoRequest"]
)
EchoResponse: type[Message] = message_factory.GetMessageClass(
    FILE.message_types_by_name["EchoResponse"]
)
Inner: type[Message] = message_factory.GetMessageClass(FILE.message_types_by_name["Inner"])
FORM_SERVICE: ServiceDescriptor = FILE.services_by_name["FormService"]
FormRequest: type[Message] = message_factory.GetMessageClass(
    FILE.message_types_by_name["FormRequest"]
)
OpenFormRequest: type[Message] = message_factory.GetMessageClass(
    FILE.message_types_by_name["OpenFormRequest"]
)
File: type[Message] = message_factory.GetMessageClass(FILE.message_types_by_name["File"])


def generic_handler(
    seen: list[tuple[str, Message, dict[str, str]]],
) -> grpc.GenericRpcHandler:
    """A gRPC handler for TestService: echoes the request, records it in `seen`."""

    def make(method_name: str) -> grpc.RpcMethodHandler:
        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
            seen.append((method_name, request, metadata))
            return EchoResponse(echo=request, items=[request.inner, Inner(label="second")])

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=EchoRequest.FromString,
            response_serializer=EchoResponse.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        SERVICE.full_name, {m.name: make(m.name) for m in SERVICE.methods}
    )


def form_handler(seen: list[tuple[str, Message]]) -> grpc.GenericRpcHandler:
    """A gRPC handler for FormService: records each request as the core parsed it."""

    def make(method: MethodDescriptor) -> grpc.RpcMethodHandler:
        request_class = message_factory.GetMessageClass(method.input_type)

        async def handle(request: Message, context: grpc.aio.ServicerContext) -> Message:
            seen.append((method.name, request))
            return EchoResponse()

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=request_class.FromString,
            response_serializer=EchoResponse.SerializeToString,
        )

    return grpc.method_handlers_generic_handler(
        FORM_SERVICE.full_name, {m.name: make(m) for m in FORM_SERVICE.methods}
    )


def test_descriptor_has_the_expected_shape() -> None:
    assert [m.name for m in SERVICE.methods] == ["Echo", "Peek", "PutInner", "NoHttp"]
    fields = EchoRequest.DESCRIPTOR.fields_by_name
    assert fields["count"].has_presence
    assert not fields["big"].has_presence
    assert fields["counts"].message_type.GetOptions().map_entry


def test_http_option_is_readable_from_the_method_options() -> None:
    rule = SERVICE.methods_by_name["Echo"].GetOptions().Extensions[google_annotations.http]
    assert rule.post == "/test/v1/echo/{name}"
    assert rule.additional_bindings[0].get == "/test/v1/{name=things/*}/echo"


def test_the_form_service_declares_its_files() -> None:
    options = File.DESCRIPTOR.GetOptions().Extensions[UPLOAD]
    assert (options.data_field, options.filename_field, options.content_type_field) == (
        "data",
        "filename",
        "content_type",
    )
    extra = OpenFormRequest.DESCRIPTOR.fields_by_name["extra"]
    assert extra.GetOptions().Extensions[COLLECTS_UNKNOWN_FIELDS]
    assert [m.name for m in FORM_SERVICE.methods] == [
        "Submit",
        "SubmitInner",
        "SubmitFile",
        "SubmitTags",
        "Open",
        "Grow",
    ]
