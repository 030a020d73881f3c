"""A test-only proto service, built as a descriptor at import time.

It exercises what the aqueduct protos do not: path variables (dotted, with
`=` segments), custom verbs, `body: "field"`, `response_body`, query
parameters, enums, maps, doubles, bytes, a message without an unknown-field
collector and a method without an http rule. Other `test modules of the door import
it; the tests here check the descriptor itself.
"""

from __future__ import annotations

import grpc
from google.api import annotations_pb2 as google_annotations
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message

PACKAGE = "gatewayhttp.test.v1"
FILE_NAME = "gatewayhttp/test/v1/test.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _field(
    msg: descriptor_pb2.DescriptorProto,
    name: str,
    number: int,
    type_: int,
    *,
    type_name: str = "",
    repeated: bool = False,
    optional: bool = False,
) -> None:
    field = msg.field.add(name=name, number=number, type=type_)
    field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if type_name:
        field.type_name = type_name
    if optional:
        field.proto3_optional = True
        field.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name=f"_{name}")


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
        dependency=["google/api/annotations.proto"],
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
    return fdp


FILE_PROTO = _build()
_pool = descriptor_pool.Default()
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
