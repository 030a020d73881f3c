"""OpenAI's published schemas for the gateway's answers (images_schemas.yaml), and a check."""

from __future__ import annotations

import functools
import pathlib
from typing import Any

import jsonschema
import yaml
from jsonschema.protocols import Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

__all__ = ["SCHEMAS", "validate"]

SCHEMAS = pathlib.Path(__file__).with_name("images_schemas.yaml")
_URI = "urn:openai-openapi:images-schemas"

# Formats the spec uses that jsonschema does not check by itself.
_FORMATS = jsonschema.FormatChecker()


@_FORMATS.checks("uri")
def _absolute_uri(value: object) -> bool:
    """An RFC 3986 URI has a scheme, and no spaces: a path alone is not one."""
    if not isinstance(value, str):
        return True
    scheme, colon, rest = value.partition(":")
    return bool(colon and rest and scheme[:1].isalpha() and not any(c.isspace() for c in value))


@_FORMATS.checks("unixtime")
def _unix_seconds(value: object) -> bool:
    """Seconds since 1970, so ten digits: milliseconds (thirteen) are a real mistake."""
    return not isinstance(value, int) or 10**9 <= value < 10**10


def _json_schema(node: Any) -> Any:
    """OpenAPI 3.0's `nullable: true` as JSON Schema's null (3.1, today's spec, has none)."""
    if isinstance(node, list):
        return [_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {key: _json_schema(value) for key, value in node.items()}
    if schema.get("nullable") is True:  # `is`: a property may be named "nullable"
        del schema["nullable"]
        return {"anyOf": [schema, {"type": "null"}]}
    return schema


@functools.cache
def _schemas() -> dict[str, Any]:
    return _json_schema(yaml.safe_load(SCHEMAS.read_text()))


def _named(name: str) -> dict[str, Any]:
    schemas: dict[str, Any] = _schemas()["components"]["schemas"]
    if name not in schemas:
        raise KeyError(f"{name} is not among the schemas in {SCHEMAS.name}")
    return schemas[name]


@functools.cache
def _validator(name: str) -> Validator:
    registry: Registry[Any] = Registry().with_resource(
        _URI, DRAFT202012.create_resource(_schemas())
    )
    schema = {"$ref": f"{_URI}#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry, format_checker=_FORMATS)


def _branch(name: str, document: Any) -> str:
    """The member of the union `name` that `document` says it is (OpenAPI's discriminator).

    Checking against that member alone says what is wrong with the document, where the
    union's `anyOf` would only say that it matches none of them.
    """
    union = _named(name)
    if "discriminator" not in union:
        return name
    field = union["discriminator"]["propertyName"]
    value = document.get(field) if isinstance(document, dict) else None
    members = [ref["$ref"].rpartition("/")[2] for ref in union.get("anyOf") or union["oneOf"]]
    for member in members:
        if value in _named(member)["properties"][field].get("enum", ()):
            return member
    raise AssertionError(f"{name}: {field} {value!r} is none of {members}")


def validate(document: Any, name: str) -> None:
    """Fail, naming every field that is wrong, unless `document` is a valid `name`.

    Args:
        document: JSON as it came over the wire, parsed.
        name: A schema in images_schemas.yaml, e.g. "ImagesResponse" or "ImageGenStreamEvent".

    Raises:
        AssertionError: Listing each error as `path: message`.
    """
    member = _branch(name, document)
    errors = sorted(_validator(member).iter_errors(document), key=lambda e: e.json_path)
    if errors:
        found = "; ".join(f"{e.json_path}: {_short(e.message)}" for e in errors)
        raise AssertionError(f"not a valid {member}: {found}")


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[:limit] + "…"
