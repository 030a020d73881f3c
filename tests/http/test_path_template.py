"""Unit tests of gateway_http.path_template: parse, compile, match."""

from __future__ import annotations

import pytest

from gateway_http.path_template import TemplateError, parse


@pytest.mark.parametrize(
    ("template", "path", "expected"),
    [
        ("/v1/images/generations", "/v1/images/generations", {}),
        ("/v1/images/generations", "/v1/images/generations/", None),
        ("/v1/images/generations", "/v1/images", None),
        ("/admin/v1/tokens/{token_id}", "/admin/v1/tokens/tok_1", {"token_id": "tok_1"}),
        ("/admin/v1/tokens/{token_id}", "/admin/v1/tokens/", None),
        ("/admin/v1/tokens/{token_id}", "/admin/v1/tokens/a/b", None),
        # Single-segment variables are fully percent-decoded.
        ("/admin/v1/tokens/{token_id}", "/admin/v1/tokens/a%2Fb%20c", {"token_id": "a/b c"}),
        ("/v1/{name=projects/*}", "/v1/projects/p1", {"name": "projects/p1"}),
        ("/v1/{name=projects/*}", "/v1/projects/p1/x", None),
        ("/v1/{name=projects/*}", "/v1/folders/p1", None),
        ("/v1/{name=projects/*/files/*}", "/v1/projects/p/files/f", {"name": "projects/p/files/f"}),
        # Multi-segment variables keep %2F encoded, decode the rest.
        ("/v1/{x=**}", "/v1/a/b%2Fc/d%20e", {"x": "a/b%2Fc/d e"}),
        ("/v1/{x=**}", "/v1", {}),
        ("/v1/*/items", "/v1/anything/items", {}),
        ("/v1/*/items", "/v1/a/b/items", None),
        ("/v1/**", "/v1/a/b/c", {}),
        ("/v1/{a.b.c}", "/v1/deep", {"a.b.c": "deep"}),
        ("/v1/{name}:cancel", "/v1/job1:cancel", {"name": "job1"}),
        ("/v1/{name}:cancel", "/v1/job1", None),
        ("/v1/{name}:cancel", "/v1/job1:other", None),
        ("/v1/{name=files/**}:download", "/v1/files/a/b:download", {"name": "files/a/b"}),
        ("/v1/jobs:batchGet", "/v1/jobs:batchGet", {}),
        ("/{a}/{b}", "/x/y", {"a": "x", "b": "y"}),
        ("/", "/", {}),
        ("/", "/x", None),
    ],
)
def test_match(template: str, path: str, expected: dict[str, str] | None) -> None:
    assert parse(template).match(path) == expected


def test_compiled_attributes() -> None:
    literal = parse("/v1/models")
    assert literal.literal_path == "/v1/models"
    assert literal.variables == ()
    t = parse("/v1/{parent=projects/*}/items/{item.id}:undelete")
    assert t.literal_path is None
    assert t.verb == "undelete"
    assert t.variables == ("parent", "item.id")


def test_regex_metacharacters_in_literals_are_literal() -> None:
    t = parse("/v1/a.b")
    assert t.match("/v1/a.b") == {}
    assert t.match("/v1/aXb") is None
    t = parse("/v1/a.b/{x}")
    assert t.match("/v1/aXb/1") is None
    assert t.match("/v1/a.b/1") == {"x": "1"}


@pytest.mark.parametrize(
    "template",
    [
        "",
        "v1/models",
        "/v1//models",
        "/v1/models/",
        "/v1/{}",
        "/v1/{1abc}",
        "/v1/{a..b}",
        "/v1/{name",
        "/v1/{name=}",
        "/v1/{a}/{a}",
        "/v1/{a={b}}",
        "/v1/**/x",
        "/v1/{x=**}/y",
        "/v1/a b",
        "/v1/x:",
        "/v1/{x}:a/b",
    ],
)
def test_invalid_templates_are_rejected(template: str) -> None:
    with pytest.raises(TemplateError):
        parse(template)
