"""OpenAI's image wire format: the request body, and answers and stream events as messages.

The one place that knows OpenAI's JSON shapes. `request_body` builds what an
OpenAI-compatible upstream receives from a typed request; `response_from_json`
and `stream_event_from_json` turn its answers into the contract's messages,
every text in them scrubbed of the deployment's key.
The event type names are OpenAI's, which the contract adopts as they are.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp
import pybase64
from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload
from google.protobuf import json_format

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.images.edit_inputs import Edit, ImageFile

__all__ = [
    "COMPLETED",
    "EDIT_COMPLETED",
    "EDIT_EVENTS",
    "EDIT_PARTIAL_IMAGE",
    "GENERATION_EVENTS",
    "PARTIAL_IMAGE",
    "Scrub",
    "StreamEvents",
    "edit_form",
    "request_body",
    "response_from_json",
    "stream_event_from_json",
]

# The bytes of an input image written to the upstream at a time (`_ImagePayload`).
_PIECE_BYTES = 256 * 1024

# What every upstream text goes through before it is put in a message.
Scrub = Callable[[str], str]

PARTIAL_IMAGE = "image_generation.partial_image"
COMPLETED = "image_generation.completed"
EDIT_PARTIAL_IMAGE = "image_edit.partial_image"
EDIT_COMPLETED = "image_edit.completed"

_Event = TypeVar(
    "_Event", images_pb2.StreamGenerateImagesResponse, images_pb2.StreamEditImagesResponse
)


@dataclass(frozen=True)
class StreamEvents(Generic[_Event]):
    """One streamed operation's events: their message and OpenAI's two type names.

    A generation's and an edit's events are field for field the same; only
    the names differ, so one relay and one renderer serve both.
    """

    message: type[_Event]
    partial_image: str
    completed: str


GENERATION_EVENTS = StreamEvents(images_pb2.StreamGenerateImagesResponse, PARTIAL_IMAGE, COMPLETED)
EDIT_EVENTS = StreamEvents(images_pb2.StreamEditImagesResponse, EDIT_PARTIAL_IMAGE, EDIT_COMPLETED)

# Optional parameters passed upstream as they are when the caller set them.
_FORWARDED = (
    "n",
    "size",
    "quality",
    "style",
    "response_format",
    "user",
    "background",
    "moderation",
    "output_compression",
    "output_format",
    "safety_identifier",
    "complexity",
    "frame_count",
    "frame_duration_ms",
)


def request_body(
    request: images_pb2.GenerateImagesRequest, upstream_model: str, *, streaming: bool = False
) -> dict[str, Any]:
    """The OpenAI JSON body for the upstream: set fields only, its model name.

    Forwarded unknown parameters go first so that no declared field can be
    overridden through them. `response_format: "url"` is not forwarded: the
    gateway hosts the images itself, and gpt-image models refuse the parameter.
    """
    body: dict[str, Any] = {}
    if request.HasField("extra_parameters"):
        body.update(json_format.MessageToDict(request.extra_parameters))
    body["model"] = upstream_model
    body["prompt"] = request.prompt
    for name in _FORWARDED:
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.HasField("svg"):
        body["svg"] = json_format.MessageToDict(request.svg, preserving_proto_field_name=True)
    if body.get("response_format") == "url":
        del body["response_format"]
    if streaming:
        body["stream"] = True
        if request.HasField("partial_images"):
            body["partial_images"] = request.partial_images
    return body


# Edit parameters sent as text parts when the caller set them.
_EDIT_FORWARDED = (
    "n",
    "size",
    "quality",
    "background",
    "input_fidelity",
    "output_format",
    "output_compression",
    "moderation",
    "user",
    "safety_identifier",
    "complexity",
    "frame_count",
    "frame_duration_ms",
)


def edit_form(edit: Edit, upstream_model: str, *, streaming: bool = False) -> aiohttp.FormData:
    """The multipart form for an OpenAI-compatible `/images/edits`, as OpenAI's SDK sends it.

    Images go as `image[]` file parts (the checked inputs of `edit`), the
    mask as `mask`; nested parameters as `svg[model]`-style names;
    forwarded unknown parameters first, as text, so no declared field can be
    overridden through them. `response_format: "url"` is not forwarded (the
    gateway hosts the images itself).
    """
    request = edit.request
    form = aiohttp.FormData(quote_fields=False)
    for name, value in json_format.MessageToDict(request.extra_parameters).items():
        for part, text in _bracketed(name, value):
            form.add_field(part, text)
    form.add_field("model", upstream_model)
    form.add_field("prompt", request.prompt)
    for name in _EDIT_FORWARDED:
        if request.HasField(name):
            form.add_field(name, str(getattr(request, name)))
    if request.HasField("svg"):
        svg = json_format.MessageToDict(request.svg, preserving_proto_field_name=True)
        for name, value in _bracketed("svg", svg):
            form.add_field(name, value)
    if streaming:
        form.add_field("stream", "true")
        if request.HasField("partial_images"):
            form.add_field("partial_images", str(request.partial_images))
    for index, image in enumerate(edit.images):
        _add_file(form, "image[]", image, f"image-{index}")
    for name, overlay in (("mask", edit.mask), ("markup", edit.markup)):
        if overlay is not None:
            _add_file(form, name, overlay, name)
    return form


class _ImagePayload(Payload):
    """An input image's file as a form part: written in large pieces, its length known.

    aiohttp's file payloads write 64 KiB at a time, yielding to the loop
    between pieces (and reading each in a worker thread): a loaded gateway
    then sends a megabyte image in dozens of loop turns. An image file is in
    memory or in the page cache, so it is read here in 256 KiB pieces, each
    written at once, and the writer's drain keeps about one piece per upload
    waiting in the socket's buffer (mebibyte pieces cost 15 MB more with
    sixteen uploads at once). Each attempt (a failover) reads the file from
    its start again.
    """

    _autoclose = True  # the file belongs to the call (`UploadedFiles`), not to the form

    def __init__(self, image: ImageFile, **kwargs: Any) -> None:
        super().__init__(image, **kwargs)
        self._image = image
        self._size = image.size

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        """The image's bytes as text (aiohttp's interface; never called for a form)."""
        return self._image.read().decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        """Writes the whole image."""
        await self.write_with_length(writer, None)

    async def write_with_length(
        self, writer: AbstractStreamWriter, content_length: int | None
    ) -> None:
        """Writes the image, or its first `content_length` bytes."""
        file = self._image.opened()
        left = self._image.size if content_length is None else content_length
        while left > 0 and (piece := file.read(min(_PIECE_BYTES, left))):
            left -= len(piece)
            await writer.write(piece)


def _add_file(form: aiohttp.FormData, name: str, image: ImageFile, stem: str) -> None:
    # The content type is the checked one (edit_inputs), whatever the client said.
    kind = image.content_type.removeprefix("image/")
    form.add_field(
        name,
        _ImagePayload(image, content_type=image.content_type),
        filename=f"{stem}.{kind}",
        content_type=image.content_type,
    )


def _bracketed(prefix: str, value: Any) -> list[tuple[str, str]]:
    """`{"a": {"b": 1}}` under `prefix` as `prefix[a][b]=1` parts, as OpenAI's SDKs nest them.

    Lists go as one JSON text.
    """
    if isinstance(value, dict):
        return [
            part for key, inner in value.items() for part in _bracketed(f"{prefix}[{key}]", inner)
        ]
    return [(prefix, _form_text(value))]


def _form_text(value: Any) -> str:
    """A JSON value as a form field's text: 3 rather than 3.0 (Struct numbers are floats)."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value)


def stream_event_from_json(
    document: dict[str, Any], scrub: Scrub, events: StreamEvents[_Event]
) -> _Event:
    """Converts one OpenAI `ImageGenStreamEvent` or `ImageEditStreamEvent` to the message.

    Args:
        document: the event's parsed JSON (`b64_json` as base64).
        scrub: cleans every text the upstream sent (the deployment's key scrubber).
        events: the operation's events, whose two types alone are relayed.
    """
    kind = document["type"]
    if kind not in (events.partial_image, events.completed):
        raise ValueError(f"unknown image stream event {kind!r}")
    event = events.message(
        type=kind,
        b64_json=pybase64.b64decode(document["b64_json"], validate=True),
        created_at=int(document.get("created_at") or time.time()),
    )
    for name in ("size", "quality", "background", "output_format"):
        if document.get(name) is not None:
            setattr(event, name, scrub(str(document[name])))
    if document.get("partial_image_index") is not None:
        event.partial_image_index = int(document["partial_image_index"])
    if document.get("safety_identifier") is not None:
        event.safety_identifier = scrub(str(document["safety_identifier"]))
    if isinstance(document.get("usage"), dict):
        _usage_from_json(document["usage"], event.usage)
    return event


_Answer = TypeVar("_Answer", images_pb2.GenerateImagesResponse, images_pb2.EditImagesResponse)


def response_from_json(document: dict[str, Any], scrub: Scrub, answer: type[_Answer]) -> _Answer:
    """Converts a parsed `ImagesResponse` (`b64_json` already decoded) to the message.

    Args:
        document: the parsed answer.
        scrub: cleans every text the upstream sent (the deployment's key scrubber);
            an image `url` is kept as sent, for the backend to fetch and drop.
        answer: the contract's message for it: a generation's or an edit's,
            which are field for field the same.
    """
    response = answer(created=int(document.get("created") or time.time()))
    for item in document["data"]:
        image = response.data.add()
        if item.get("b64_json") is not None:
            image.b64_json = item["b64_json"]
        if item.get("url") is not None:
            image.url = item["url"]
        if item.get("revised_prompt") is not None:
            image.revised_prompt = scrub(item["revised_prompt"])
    for name in ("background", "output_format", "quality", "size", "safety_identifier"):
        if document.get(name) is not None:
            setattr(response, name, scrub(document[name]))
    usage = document.get("usage")
    if isinstance(usage, dict):
        _usage_from_json(usage, response.usage)
    svg_usage = document.get("svg_usage")
    if isinstance(svg_usage, dict):
        target = response.svg_usage
        target.model = scrub(str(svg_usage.get("model") or ""))
        for name in ("input_tokens", "output_tokens", "reasoning_tokens", "total_tokens"):
            setattr(target, name, int(svg_usage.get(name) or 0))
    return response


def _usage_from_json(usage: dict[str, Any], target: images_pb2.ImageUsage) -> None:
    target.input_tokens = int(usage.get("input_tokens") or 0)
    target.output_tokens = int(usage.get("output_tokens") or 0)
    target.total_tokens = int(usage.get("total_tokens") or 0)
    for name in ("input_tokens_details", "output_tokens_details"):
        details = usage.get(name)
        if isinstance(details, dict):
            field = getattr(target, name)
            field.image_tokens = int(details.get("image_tokens") or 0)
            field.text_tokens = int(details.get("text_tokens") or 0)
