"""Each route's response mode is chosen once, from its descriptors, when the app is built."""

from __future__ import annotations

import pytest

from aqueduct.images.v1 import images_pb2
from gateway_http import TRANSCODER, create_app
from gateway_http.endpoints import (
    Endpoint,
    HttpBodyEndpoint,
    StreamTwinEndpoint,
    UnaryEndpoint,
    UploadTwinEndpoint,
)
from tests.http import test_streaming as ticker
from tests.http import test_testproto as tp

IMAGES = images_pb2.DESCRIPTOR.services_by_name["ImageService"]


def endpoints() -> dict[tuple[str, str], Endpoint]:
    """Every endpoint of an app serving the test protos, by (verb, template)."""
    app = create_app(grpc_target="127.0.0.1:1", services=[tp.SERVICE, ticker.SERVICE, IMAGES])
    return {
        (e.route.http_method, e.route.template.template): e for e in app[TRANSCODER].routes.values()
    }


# (verb, template, mode, mode of the wrapped unary endpoint for a twin; for an
# upload twin, the mode it wraps and, below, that one's unary mode)
MODES: list[tuple[str, str, type[Endpoint], type[Endpoint] | None]] = [
    # TestService: plain http rules, JSON answers (response_body included).
    ("POST", "/test/v1/echo/{name}", UnaryEndpoint, None),
    ("GET", "/test/v1/{name=things/*}/echo", UnaryEndpoint, None),
    ("GET", "/test/v1/inner/{inner.label}:peek", UnaryEndpoint, None),
    ("PUT", "/test/v1/put/{name}", UnaryEndpoint, None),
    # Ticker: `Count` declares a streaming twin; `Download` returns HttpBody.
    ("POST", "/good/count", StreamTwinEndpoint, UnaryEndpoint),
    ("GET", "/good/files/{name}", HttpBodyEndpoint, None),
    # ImageService: twins (edits: an upload twin around a streaming twin), a
    # `response_body` that is an HttpBody, plain JSON.
    ("POST", "/v1/images/generations", StreamTwinEndpoint, UnaryEndpoint),
    ("POST", "/images/generations", StreamTwinEndpoint, UnaryEndpoint),
    ("POST", "/v1/images/edits", UploadTwinEndpoint, StreamTwinEndpoint),
    ("POST", "/images/edits", UploadTwinEndpoint, StreamTwinEndpoint),
    ("GET", "/v1/images/files/{name}", HttpBodyEndpoint, None),
    ("GET", "/v1/models", UnaryEndpoint, None),
    ("GET", "/models", UnaryEndpoint, None),
    ("GET", "/v1/models/{model}", UnaryEndpoint, None),
    ("GET", "/models/{model}", UnaryEndpoint, None),
]


@pytest.mark.parametrize(("verb", "template", "mode", "unary_mode"), MODES)
def test_the_mode_of_each_route_is_what_its_options_say(
    verb: str, template: str, mode: type[Endpoint], unary_mode: type[Endpoint] | None
) -> None:
    endpoint = endpoints()[verb, template]
    assert type(endpoint) is mode
    if isinstance(endpoint, UploadTwinEndpoint):
        assert type(endpoint.inner) is unary_mode
        endpoint, unary_mode = endpoint.inner, UnaryEndpoint
    if isinstance(endpoint, StreamTwinEndpoint):
        assert type(endpoint.unary) is unary_mode


def test_every_route_has_an_endpoint() -> None:
    assert set(endpoints()) == {(verb, template) for verb, template, _, _ in MODES}
