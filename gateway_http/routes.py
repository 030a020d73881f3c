"""The route table, built at start-up from the `google.api.http` options of services.

Nothing here knows a particular service: every method that carries a
`google.api.http` rule (and each of its `additional_bindings`) becomes a
`Route`. `discover_services()` imports every `*_pb2` module below a package
(by default the generated `aqueduct` package), so a new proto file with http
options appears on the HTTP door without any change to this code.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Generic, TypeVar

from google.api import annotations_pb2 as google_annotations
from google.api import http_pb2
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message

from gateway_http import path_template
from gateway_http.errors import ApiError
from gateway_http.path_template import PathTemplate

__all__ = ["Route", "RouteTable", "build_routes", "discover_services", "http_rules"]

DEFAULT_PACKAGE = "aqueduct"

T = TypeVar("T")


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
    """

    http_method: str
    template: PathTemplate
    body: str
    response_body: str
    grpc_path: str
    request_class: type[Message]
    response_class: type[Message]


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
            for rule in http_rules(method):
                verb, path = _verb_and_path(rule)
                try:
                    template = path_template.parse(path)
                except ValueError as exc:
                    raise ValueError(f"{method.full_name}: {exc}") from None
                routes.append(
                    Route(
                        http_method=verb,
                        template=template,
                        body=rule.body,
                        response_body=rule.response_body,
                        grpc_path=f"/{service.full_name}/{method.name}",
                        request_class=message_factory.GetMessageClass(method.input_type),
                        response_class=message_factory.GetMessageClass(method.output_type),
                    )
                )
    return routes


def _walk_modules(package: ModuleType) -> Iterable[ModuleType]:
    for info in pkgutil.walk_packages(package.__path__, prefix=package.__name__ + "."):
        if info.name.endswith("_pb2"):
            yield importlib.import_module(info.name)


def discover_services(
    packages: Iterable[str | ModuleType] = (DEFAULT_PACKAGE,),
) -> list[ServiceDescriptor]:
    """Every service with at least one http rule in the `*_pb2` modules below `packages`.

    Args:
        packages: Packages (names or modules) holding generated code.

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

    def match(self, http_method: str, raw_path: str) -> tuple[T, dict[str, str]]:
        """The value and bound path variables for a request.

        Args:
            http_method: The request's verb.
            raw_path: The request path, percent-encoded, without query string.

        Returns:
            `(value, variables)`.

        Raises:
            ApiError: 404 when no template matches the path, 405 (with `Allow`)
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
        where = f"({http_method} {raw_path[:200]})"
        if allowed:
            allow = ", ".join(sorted(allowed))
            raise ApiError(
                405, f"Method not allowed {where}. Allowed: {allow}.", headers={"Allow": allow}
            )
        raise ApiError(404, f"Invalid URL {where}.")
