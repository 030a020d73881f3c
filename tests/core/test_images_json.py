"""The fast ImagesResponse parser must agree with json.loads on every input."""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

import pytest

from aqueduct_grpc.upstreams.openai.images_json import parse_images_response

IMAGES = [os.urandom(n) for n in (1, 2, 3, 5000, 200_000)]


def reference(raw: bytes) -> Any:
    document = json.loads(raw)
    for item in document.get("data", []):
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            item["b64_json"] = base64.b64decode(item["b64_json"], validate=True)
    return document


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# Pads small documents past the parser's small-body shortcut, so the span
# search itself is what these tests exercise.
PAD = b64(os.urandom(100_000))


DOCUMENTS = {
    "compact": json.dumps(
        {"created": 1, "data": [{"b64_json": b64(i)} for i in IMAGES]}, separators=(",", ":")
    ),
    "pretty": json.dumps(
        {"created": 1, "data": [{"revised_prompt": "p", "b64_json": b64(i)} for i in IMAGES]},
        indent=2,
    ),
    "escaped slashes": json.dumps({"pad": PAD, "data": [{"b64_json": b64(b"\xff" * 300)}]}).replace(
        "/", "\\/"
    ),
    "null and url items": json.dumps(
        {
            "pad": PAD,
            "data": [{"b64_json": None, "url": "http://x/1.png"}, {"b64_json": b64(IMAGES[3])}],
        }
    ),
    "key text inside a prompt": json.dumps(
        {
            "pad": PAD,
            "data": [
                {"revised_prompt": 'say "b64_json": "AAAA" twice', "b64_json": b64(IMAGES[2])},
                {"revised_prompt": 'x"b64_json', "b64_json": b64(IMAGES[0])},
            ],
        }
    ),
    "b64_json outside data": json.dumps(
        {"meta": {"b64_json": PAD}, "data": [{"b64_json": b64(IMAGES[1])}]}
    ),
    "unicode around": json.dumps(
        {"data": [{"revised_prompt": "caf\u00e9 \u2603", "b64_json": b64(IMAGES[4])}]},
        ensure_ascii=False,
    ),
    "no images": json.dumps({"created": 5, "pad": PAD, "data": []}),
    "small body": json.dumps({"created": 5, "data": [{"b64_json": b64(IMAGES[3])}]}),
}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_agrees_with_json(name: str):
    raw = DOCUMENTS[name].encode()
    assert parse_images_response(raw) == reference(raw)


def test_images_come_back_as_bytes():
    raw = DOCUMENTS["compact"].encode()
    assert [item["b64_json"] for item in parse_images_response(raw)["data"]] == IMAGES


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b'{"data": [{"b64_json": "AAA*"}]}', binascii.Error),
        (b'{"data": [{"b64_json": "AAAA"}]', ValueError),
        (b"not json", ValueError),
    ],
)
def test_invalid_bodies_raise(raw: bytes, error: type[Exception]):
    with pytest.raises(error):
        parse_images_response(raw)
