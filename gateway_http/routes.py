"""The route table, built at start-up from the `google.api.http` options of services.

Nothing here knows a particular service: every method that carries a
`google.api.http` rule (and each of its `additional_bindings`) becomes a
`Route`. `discover_services()` imports every `*_pb2` module below the packages
it is given, so a new proto file with http options appears on the HTTP door
without any change to this code.

Two more facts come from the descriptors, and fix each route's response mode
(see `gateway_http.endpoints`): whether it answers with a `google.api.HttpBody`
(raw bytes with their content type), and whether its method has a
server-streaming twin (`gateway_http.api.v1.streaming_twin`, the door's own
option) that serves the request, as Server-Sent Events, when a flag field is
true. A third, the upload twin (`gateway_http.api.v1.upload_twin`), is a
bidirectional-streaming method that form bodies are streamed to, file parts
as they arrive.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar, cast

from google.api import annotations_pb2 as google_annotations
from google.api import http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import (
    Descriptor,
    FieldDescriptor,
    MethodDescriptor,
    ServiceDescriptor,
)
from google.protobuf.message import Message

from gateway_http import path_template
from gateway_http.api.v1 import annotations_pb2
from gateway_http.errors import Reason, door_error
from gateway_http.path_template import PathTemplate

__all__ = [
    "HTTP_BODY",
    "Route",
    "RouteTable",
    "StreamTwin",
    "UploadTwin",
    "build_routes",
    "discover_services",
    "http_rules",
]

HTTP_BODY = "google.api.HttpBody"

# protoc's .pyi types an extension as a plain FieldDescriptor, which
# types-protobuf's `HasExtension`/`Extensions[...]` refuse: used untyped.
_STREAMING_TWIN: Any = annotations_pb2.streaming_twin
_UPLOAD_TWIN: Any = annotations_pb2.upload_twin
_UPLOAD_CHUNK = annotations_pb2.UploadChunk.DESCRIPTOR.full_name

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamTwin:
    """The server-streaming method that serves a route's request when a flag is set.

    Attributes:
        grpc_path: The twin's full gRPC method path.
        selector_field: The bool field of the route's request that selects the twin.
        request_field: The field of the twin's request that takes the route's request.
        event_field: The string field of each streamed message naming its SSE
            event, or `""` for unnamed events.
        request_class: The twin's request message class.
        response_class: The twin's (streamed) response message class.
    """

    grpc_path: str
    selector_field: str
    request_field: str
    event_field: str
    request_class: type[Message]
    response_class: type[Message]

    @property
    def request_field_number(self) -> int:
        """The number of `request_field` in the twin's request message."""
        descriptor = cast(Descriptor, self.request_class.DESCRIPTOR)
        return descriptor.fields_by_name[self.request_field].number


@dataclass(frozen=True, slots=True)
class UploadTwin:
    """The bidirectional-streaming method that a route's form bodies are streamed to.

    Attributes:
        grpc_path: The twin's full gRPC method path.
        chunk_field_number: The twin's request field of type UploadChunk.
        request_field_number: The twin's request field of the route's request type.
        response_field: The twin's response field of the route's response type.
        event_field: The twin's response field of the streaming twin's response
            type; `""` when the route has no streaming twin.
        response_class: The twin's response message class.
    """

    grpc_path: str
    chunk_field_number: int
    request_field_number: int
    response_field: str
    event_field: str
    response_class: type[Message]


@dataclass(frozen=True, slots=True)
class Route:
    """One HTTP binding of one gRPC method.

    Attributes:
        http_method: Upper-case HTTP verb (`GET`, `POST`, or a custom kind).
        template: The compiled path template.
        body: HttpRule `body`: `"*"`, a field name, or `""` (no body).
        response_body: HttpRule `response_body`, or `""` (whole message).
        grpc_path: The full gRPC method path, `/pkg.Service/Method`.
        request_class: The request message class.
        response_class: The response message class.
        http_body: The HTTP body is the `google.api.HttpBody` of the response
            (or of its `response_body` field): raw bytes and their content type.
        twin: The streaming twin, when the method declares one.
        upload: The upload twin, when the method declares one.
    """

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    grpc_path: str
    request_class: type[Message]
    response_class: type[Message]
    http_body: bool = False
    twin: StreamTwin | None = None
    upload: UploadTwin | None = None


def http_rules(method: MethodDescriptor) -> list[http_pb2.HttpRule]:
    """The method's `google.api.http` rule followed by its additional bindings.

    Args:
        method: A method descriptor.

    Returns:
        The rules (empty when the method has no http option).
    """
    options = method.GetOptions()
    if not options.HasExtension(google_annotations.http):
        return []
    rule = options.Extensions[google_annotations.http]
    return [rule, *rule.additional_bindings]


def _verb_and_path(rule: http_pb2.HttpRule) -> tuple[str, str]:
    kind = rule.WhichOneof("pattern")
    if kind is None:
        raise ValueError("HttpRule without a pattern")
    if kind == "custom":
        return rule.custom.kind.upper(), rule.custom.path
    return kind.upper(), getattr(rule, kind)


def build_routes(services: Iterable[ServiceDescriptor]) -> list[Route]:
    """One `Route` per HTTP binding of every method of `services`.

    Args:
        services: Service descriptors (from any descriptor pool).

    Returns:
        The routes, in declaration order.

    Raises:
        ValueError: A rule is malformed (bad template, no pattern).
    """
    routes: list[Route] = []
    for service in services:
        for method in service.methods:
            twin = _stream_twin(service, method)
            upload = _upload_twin(service, method, twin)
            for rule in http_rules(method):
                verb, path = _verb_and_path(rule)
                try:
                    template = path_template.parse(path)
                except ValueError as exc:
                    raise ValueError(f"{method.full_name}: {exc}") from None
                http_body = _is_http_body(method, rule.response_body)
                if upload is not None and http_body:
                    raise ValueError(
                        f"{method.full_name}: upload_twin: a rule answering with raw bytes "
                        "cannot have one"
                    )
                routes.append(
                    Route(
                        http_method=verb,
                        template=template,
                        body=rule.body,
                        response_body=rule.response_body,
                        grpc_path=f"/{service.full_name}/{method.name}",
                        request_class=message_factory.GetMessageClass(method.input_type),
                        response_class=message_factory.GetMessageClass(method.output_type),
                        http_body=http_body,
                        twin=twin,
                        upload=upload,
                    )
                )
    return routes


def _is_http_body(method: MethodDescriptor, response_body: str) -> bool:
    output = method.output_type
    if response_body:
        fd = output.fields_by_name.get(response_body)
        if fd is None or fd.message_type is None:
            return False
        output = fd.message_type
    return bool(output.full_name == HTTP_BODY)


def _stream_twin(service: ServiceDescriptor, method: MethodDescriptor) -> StreamTwin | None:
    """The method's checked streaming twin, or None.

    Raises:
        ValueError: The option names a method or fields that do not fit.
    """
    options = method.GetOptions()
    if not options.HasExtension(_STREAMING_TWIN):
        return None
    spec = options.Extensions[_STREAMING_TWIN]
    where = f"{method.full_name}: streaming_twin"
    twin = service.methods_by_name.get(spec.method)
    if twin is None or not twin.server_streaming or twin.client_streaming:
        raise ValueError(f"{where}: {spec.method!r} is not a server-streaming method")
    selector = method.input_type.fields_by_name.get(spec.selector_field)
    if selector is None or selector.type != FieldDescriptor.TYPE_BOOL or selector.is_repeated:
        raise ValueError(f"{where}: {spec.selector_field!r} is not a bool field of the request")
    holder = twin.input_type.fields_by_name.get(spec.request_field)
    if (
        holder is None
        or holder.message_type is None
        or holder.message_type.full_name != method.input_type.full_name
        or holder.is_repeated
    ):
        raise ValueError(
            f"{where}: {spec.request_field!r} is not a {method.input_type.full_name} field "
            f"of {twin.input_type.full_name}"
        )
    if spec.event_field:
        named = twin.output_type.fields_by_name.get(spec.event_field)
        if named is None or named.type != FieldDescriptor.TYPE_STRING or named.is_repeated:
            raise ValueError(f"{where}: {spec.event_field!r} is not a string field of the events")
    return StreamTwin(
        grpc_path=f"/{service.full_name}/{twin.name}",
        selector_field=spec.selector_field,
        request_field=spec.request_field,
        event_field=spec.event_field,
        request_class=message_factory.GetMessageClass(twin.input_type),
        response_class=message_factory.GetMessageClass(twin.output_type),
    )


def _upload_twin(
    service: ServiceDescriptor, method: MethodDescriptor, twin: StreamTwin | None
) -> UploadTwin | None:
    """The method's checked upload twin, or None.

    Raises:
        ValueError: The option names a method or messages that do not fit.
    """
    options = method.GetOptions()
    if not options.HasExtension(_UPLOAD_TWIN):
        return None
    spec = options.Extensions[_UPLOAD_TWIN]
    where = f"{method.full_name}: upload_twin"
    upload = service.methods_by_name.get(spec.method)
    if upload is None or not (upload.client_streaming and upload.server_streaming):
        raise ValueError(f"{where}: {spec.method!r} is not a bidirectional-streaming method")
    chunk = _field_of_type(upload.input_type, _UPLOAD_CHUNK, where)
    request = _field_of_type(upload.input_type, method.input_type.full_name, where)
    response = _field_of_type(upload.output_type, method.output_type.full_name, where)
    event = None
    if twin is not None:
        events = cast(Descriptor, twin.response_class.DESCRIPTOR).full_name
        event = _field_of_type(upload.output_type, events, where)
    return UploadTwin(
        grpc_path=f"/{service.full_name}/{upload.name}",
        chunk_field_number=chunk.number,
        request_field_number=request.number,
        response_field=response.name,
        event_field="" if event is None else event.name,
        response_class=message_factory.GetMessageClass(upload.output_type),
    )


def _field_of_type(message: Descriptor, type_name: str, where: str) -> FieldDescriptor:
    """The one singular field of `message` whose type is `type_name`.

    Raises:
        ValueError: It has none, or more than one.
    """
    found = [
        fd
        for fd in message.fields
        if fd.message_type is not None
        and fd.message_type.full_name == type_name
        and not fd.is_repeated
    ]
    if len(found) != 1:
        raise ValueError(f"{where}: {message.full_name} needs exactly one {type_name} field")
    return found[0]


def _walk_modules(package: ModuleType) -> Iterable[ModuleType]:
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def discover_services(packages: Iterable[str | ModuleType]) -> list[ServiceDescriptor]:
    """Every service with at least one http rule in the `*_pb2` modules below `packages`.

    Args:
        packages: Packages (names or modules) holding generated code, e.g.
            the product's generated package.

    Returns:
        The service descriptors, sorted by full name (deterministic routing).
    """
    found: dict[str, ServiceDescriptor] = {}
    for package in packages:
        root = importlib.import_module(package) if isinstance(package, str) else package
        for module in _walk_modules(root):
            file_descriptor = getattr(module, "DESCRIPTOR", None)
            if file_descriptor is None:
                continue
            for service in file_descriptor.services_by_name.values():
                if any(http_rules(m) for m in service.methods):
                    found[service.full_name] = service
    return [found[name] for name in sorted(found)]


class RouteTable(Generic[T]):
    """Finds the entry for a request: a dict lookup for literal paths, then templates.

    Each route carries a value (what the caller dispatches to; the route itself
    when built with `RouteTable.of`). Templates with a custom verb are tried
    before the others, so that `/v1/{name}:cancel` wins over `/v1/{name}` for
    `/v1/x:cancel`; otherwise templates are tried in declaration order.
    """

    __slots__ = ("_literal", "_patterned")

    def __init__(self, entries: Iterable[tuple[Route, T]]) -> None:
        """Indexes `(route, value)` pairs.

        Raises:
            ValueError: Two routes bind the same verb to the same template.
        """
        self._literal: dict[str, dict[str, T]] = {}
        by_template: dict[str, tuple[PathTemplate, dict[str, T]]] = {}
        seen: dict[tuple[str, str], Route] = {}
        for route, value in entries:
            template = route.template
            key = (route.http_method, template.template)
            if key in seen:
                raise ValueError(
                    f"{route.http_method} {template.template} is bound twice "
                    f"({seen[key].grpc_path} and {route.grpc_path})"
                )
            seen[key] = route
            if template.literal_path is not None:
                methods = self._literal.setdefault(template.literal_path, {})
            else:
                methods = by_template.setdefault(template.template, (template, {}))[1]
            methods[route.http_method] = value
        entries_ = list(by_template.values())
        self._patterned = [e for e in entries_ if e[0].verb] + [
            e for e in entries_ if not e[0].verb
        ]

    @staticmethod
    def of(routes: Iterable[Route]) -> RouteTable[Route]:
        """A table whose values are the routes themselves."""
        return RouteTable((route, route) for route in routes)

    def values(self) -> list[T]:
        """Every value, literal paths first."""
        out = [v for methods in self._literal.values() for v in methods.values()]
        out.extend(v for _, methods in self._patterned for v in methods.values())
        return out

    def methods_at(self, raw_path: str) -> dict[str, T]:
        """Every verb the path takes and its value (empty when no route matches the path)."""
        found: dict[str, T] = {}
        for verb, value in self._literal.get(raw_path, {}).items():
            found.setdefault(verb, value)
        for template, methods in self._patterned:
            if template.match(raw_path) is not None:
                for verb, value in methods.items():
                    found.setdefault(verb, value)
        return found

    def match(self, http_method: str, raw_path: str) -> tuple[T, dict[str, str]]:
        """The value and bound path variables for a request.

        Args:
            http_method: The request's verb.
            raw_path: The request path, percent-encoded, without query string.

        Returns:
            `(value, variables)`.

        Raises:
            HttpError: 404 when no template matches the path, 405 (with `Allow`)
                when some do but not for this verb.
        """
        allowed: set[str] = set()
        methods = self._literal.get(raw_path)
        if methods is not None:
            value = methods.get(http_method)
            if value is not None:
                return value, {}
            allowed.update(methods)
        for template, methods in self._patterned:
            bound = template.match(raw_path)
            if bound is None:
                continue
            value = methods.get(http_method)
            if value is not None:
                return value, bound
            allowed.update(methods)
        path = raw_path[:200]
        if allowed:
            allow = ", ".join(sorted(allowed))
            raise door_error(
                Reason.METHOD_NOT_ALLOWED,
                headers={"Allow": allow},
                method=http_method,
                path=path,
                allowed=allow,
            )
        raise door_error(Reason.NO_ROUTE, method=http_method, path=path)
