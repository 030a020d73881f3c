"""Route table tests: built from descriptors, discovered from generated modules."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from google.api import annotations_pb2 as google_annotations
from google.protobuf import descriptor_pb2, descriptor_pool, empty_pb2

from aqueduct.images.v1 import images_pb2
from gateway_http.dialect import OPENAI
from gateway_http.errors import HttpError, Reason
from gateway_http.routes import Route, RouteTable, build_routes, discover_services
from tests.http import test_testproto as tp

IMAGES = images_pb2.DESCRIPTOR.services_by_name["ImageService"]


def test_discovery_finds_the_image_service() -> None:
    services = discover_services(["aqueduct"])
    assert IMAGES.full_name in [s.full_name for s in services]


def test_routes_of_the_image_service() -> None:
    routes = {(r.http_method, r.template.template): r for r in build_routes([IMAGES])}
    assert set(routes) == {
        ("POST", "/v1/images/generations"),
        ("POST", "/images/generations"),
        ("POST", "/v1/images/edits"),
        ("POST", "/images/edits"),
        ("GET", "/v1/models"),
        ("GET", "/models"),
        ("GET", "/v1/models/{model}"),
        ("GET", "/models/{model}"),
        ("GET", "/v1/images/files/{name}"),
    }  # the streaming methods have no rule of their own: each is its unary method's twin
    gen = routes["POST", "/v1/images/generations"]
    assert gen.grpc_path == "/aqueduct.images.v1.ImageService/GenerateImages"
    assert gen.body == "*"
    assert gen.request_class is images_pb2.GenerateImagesRequest
    assert gen.response_class is images_pb2.GenerateImagesResponse
    assert not gen.http_body
    assert gen.twin is not None and routes["POST", "/images/generations"].twin == gen.twin
    assert gen.twin.grpc_path == "/aqueduct.images.v1.ImageService/StreamGenerateImages"
    assert (gen.twin.selector_field, gen.twin.request_field, gen.twin.event_field) == (
        "stream",
        "request",
        "type",
    )
    assert gen.twin.request_class is images_pb2.StreamGenerateImagesRequest
    assert gen.twin.response_class is images_pb2.StreamGenerateImagesResponse
    models = routes["GET", "/models"]
    assert models.body == ""
    assert models.grpc_path == "/aqueduct.images.v1.ImageService/ListModels"
    assert models.twin is None and not models.http_body
    files = routes["GET", "/v1/images/files/{name}"]
    assert files.http_body and files.response_body == "file" and files.twin is None


def test_routes_from_a_descriptor_built_at_runtime() -> None:
    routes = build_routes([tp.SERVICE])
    summary = [(r.http_method, r.template.template, r.grpc_path.rsplit("/", 1)[1]) for r in routes]
    assert summary == [
        ("POST", "/test/v1/echo/{name}", "Echo"),
        ("GET", "/test/v1/{name=things/*}/echo", "Echo"),
        ("GET", "/test/v1/inner/{inner.label}:peek", "Peek"),
        ("PUT", "/test/v1/put/{name}", "PutInner"),
    ]  # NoHttp has no rule, so no route
    peek = routes[2]
    assert peek.response_body == "items"
    assert peek.template.variables == ("inner.label",)
    assert routes[3].body == "inner"
    assert routes[0].request_class.DESCRIPTOR.full_name == "gatewayhttp.test.v1.EchoRequest"


def _ping_file(name: str, package: str) -> descriptor_pb2.FileDescriptorProto:
    """A file with one `Ping(Empty) returns (Empty)` method and no rule yet."""
    assert empty_pb2.Empty.DESCRIPTOR.file.name == "google/protobuf/empty.proto"  # loaded
    fdp = descriptor_pb2.FileDescriptorProto(
        name=name,
        package=package,
        syntax="proto3",
        dependency=["google/api/annotations.proto", "google/protobuf/empty.proto"],
    )
    fdp.service.add(name="PingService").method.add(
        name="Ping", input_type=".google.protobuf.Empty", output_type=".google.protobuf.Empty"
    )
    return fdp


def test_custom_verb_rule() -> None:
    fdp = _ping_file("gatewayhttp/test/v1/custom.proto", "gatewayhttp.custom.v1")
    rule = fdp.service[0].method[0].options.Extensions[google_annotations.http]
    rule.custom.kind = "search"
    rule.custom.path = "/custom/v1/things"
    file = descriptor_pool.Default().AddSerializedFile(fdp.SerializeToString())
    (route,) = build_routes([file.services_by_name["PingService"]])
    assert (route.http_method, route.template.template) == ("SEARCH", "/custom/v1/things")
    assert route.grpc_path == "/gatewayhttp.custom.v1.PingService/Ping"


def _table() -> RouteTable[Route]:
    return RouteTable.of([*build_routes([IMAGES]), *build_routes([tp.SERVICE])])


def test_match_literal_and_templated() -> None:
    table = _table()
    route, bound = table.match("POST", "/images/generations")
    assert route.grpc_path.endswith("/GenerateImages")
    assert bound == {}
    route, bound = table.match("GET", "/test/v1/things/t%201/echo")
    assert route.grpc_path.endswith("/Echo")
    assert bound == {"name": "things/t 1"}
    route, bound = table.match("GET", "/test/v1/inner/abc:peek")
    assert route.grpc_path.endswith("/Peek")
    assert bound == {"inner.label": "abc"}


def test_unknown_path_is_404() -> None:
    with pytest.raises(HttpError) as info:
        _table().match("GET", "/v1/nothing")
    assert (info.value.http_status, info.value.reason) == (404, Reason.NO_ROUTE)
    assert "GET /v1/nothing" in OPENAI.describe(info.value).message


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/images/generations", "POST"),
        ("DELETE", "/v1/models", "GET"),
        ("GET", "/test/v1/echo/x", "POST"),
        ("POST", "/test/v1/put/x", "PUT"),
    ],
)
def test_wrong_method_is_405_with_allow(method: str, path: str, allow: str) -> None:
    with pytest.raises(HttpError) as info:
        _table().match(method, path)
    assert (info.value.http_status, info.value.reason) == (405, Reason.METHOD_NOT_ALLOWED)
    assert info.value.headers == {"Allow": allow}


def test_duplicate_binding_is_rejected() -> None:
    routes = build_routes([IMAGES])
    with pytest.raises(ValueError, match="bound twice"):
        RouteTable.of([*routes, routes[0]])


def test_a_new_generated_module_appears_without_code_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `*_pb2` module with an http rule, dropped into a package, is routed."""
    fdp = _ping_file("newpkg/v1/new.proto", "newpkg.v1")
    fdp.service[0].method[0].options.Extensions[google_annotations.http].get = "/v9/ping"
    package = tmp_path / "newpkg_gen" / "v1"
    package.mkdir(parents=True)
    (tmp_path / "newpkg_gen" / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "new_pb2.py").write_text(
        textwrap.dedent(
            f"""
            from google.api import annotations_pb2
            from google.protobuf import descriptor_pool, empty_pb2
            DESCRIPTOR = descriptor_pool.Default().AddSerializedFile({fdp.SerializeToString()!r})
            """
        )
    )
    (package / "helpers.py").write_text("raise AssertionError('only *_pb2 modules are imported')")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        services = discover_services(["newpkg_gen"])
        assert [s.full_name for s in services] == ["newpkg.v1.PingService"]
        (route,) = build_routes(services)
        assert (route.http_method, route.grpc_path) == ("GET", "/newpkg.v1.PingService/Ping")
    finally:
        for name in [n for n in sys.modules if n.startswith("newpkg_gen")]:
            del sys.modules[name]
