"""The backend for OpenAI-compatible image APIs (OpenAI, Azure OpenAI, self-hosted), over HTTP.

One pooled aiohttp session serves every upstream. The upstream gets the
configured key and model name, never the caller's token. Connection failures
are handled in one place (`_connection_errors`); the dispatcher bounds time.

An upstream that answers with image URLs (legacy models) has them fetched
here, only from its own origin, so callers never see an upstream URL.
Streaming answers (Server-Sent Events) are relayed event by event. Every
text an upstream sends back is scrubbed of the deployment's key
(`scrubbing`), in answers, events and errors alike.
"""

from __future__ import annotations

import binascii
import contextlib
import functools
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, TypeVar

import aiohttp
import yarl
from opentelemetry.trace import Span, SpanKind

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.image_formats import sniff_image_type
from aqueduct_grpc.images.edit_inputs import Edit
from aqueduct_grpc.observability.calls import current_call, current_request_id
from aqueduct_grpc.observability.tracing import step, upstream_headers
from aqueduct_grpc.upstreams.openai import status_mapping as failed
from aqueduct_grpc.upstreams.openai.event_stream import read_events
from aqueduct_grpc.upstreams.openai.images_json import parse_images_response
from aqueduct_grpc.upstreams.openai.scrubbing import scrubber_for
from aqueduct_grpc.upstreams.openai.wire import (
    EDIT_EVENTS,
    GENERATION_EVENTS,
    StreamEvents,
    edit_form,
    request_body,
    response_from_json,
    stream_event_from_json,
)

__all__ = ["OpenAIBackend"]

log = logging.getLogger(__name__)

_Answer = TypeVar("_Answer", images_pb2.GenerateImagesResponse, images_pb2.EditImagesResponse)
_Event = TypeVar(
    "_Event", images_pb2.StreamGenerateImagesResponse, images_pb2.StreamEditImagesResponse
)

# What a malformed answer can raise while it is read into messages
# (RecursionError: JSON nested deeper than the parser goes).
_MALFORMED = (ValueError, TypeError, KeyError, AttributeError, RecursionError, binascii.Error)


class OpenAIBackend:
    """Generates and edits images by POSTing to a deployment's `/images/generations` or `/edits`."""

    def __init__(self, session: aiohttp.ClientSession, *, max_response_bytes: int) -> None:
        """Creates the OpenAIBackend.

        Args:
            session: the shared, pooled client session.
            max_response_bytes: a larger upstream answer is refused.
        """
        self._session = session
        self._max_response_bytes = max_response_bytes

    async def generate(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> images_pb2.GenerateImagesResponse:
        """Sends the request upstream and returns its answer as a response message."""
        url, headers = _endpoint(deployment)
        payload = json.dumps(request_body(request, deployment.upstream_model)).encode()
        return await self._images(
            url, payload, headers, deployment, images_pb2.GenerateImagesResponse
        )

    async def edit(self, edit: Edit, deployment: Deployment) -> images_pb2.EditImagesResponse:
        """Sends the edit upstream as multipart/form-data, as OpenAI's SDK does.

        The images are read from their files as they are sent; the answer is
        read as a generation's is, and has the same fields.
        """
        url, headers = _endpoint(deployment, "edits")
        del headers["Content-Type"]  # aiohttp writes the multipart boundary
        form = edit_form(edit, deployment.upstream_model)
        return await self._images(url, form, headers, deployment, images_pb2.EditImagesResponse)

    async def _images(
        self,
        url: str,
        data: Any,
        headers: dict[str, str],
        deployment: Deployment,
        answer: type[_Answer],
    ) -> _Answer:
        """POSTs `data` and reads the upstream's `ImagesResponse` (its image URLs fetched)."""
        sent_at = time.perf_counter()
        with step("upstream", SpanKind.CLIENT) as span:
            headers.update(upstream_headers(span))  # the caller's trace goes on through us
            async with _connection_errors(deployment, started=lambda: False):
                async with self._session.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    raw = await self._read(response)
                    _answered(deployment, response.status, sent_at, span)
                    if response.status >= 400:
                        raise failed.upstream_error(
                            response.status, raw, response.headers.get("Retry-After"), deployment
                        )
                try:
                    parsed = response_from_json(
                        parse_images_response(raw), scrubber_for(deployment), answer
                    )
                except _MALFORMED:
                    raise failed.invalid_response(deployment) from None
                for image in parsed.data:
                    if image.HasField("url"):
                        if not image.HasField("b64_json"):
                            image.b64_json = await self._download(image.url, deployment)
                        image.ClearField("url")  # an upstream URL is never passed on
                return parsed

    def stream(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamGenerateImagesResponse, None]:
        """Sends the request (with `stream: true`) upstream and yields its events as they come."""
        url, headers = _endpoint(deployment)
        body = request_body(request, deployment.upstream_model, streaming=True)
        return self._events(url, json.dumps(body).encode(), headers, deployment, GENERATION_EVENTS)

    def stream_edit(
        self, edit: Edit, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamEditImagesResponse, None]:
        """Sends the edit (with `stream=true`) upstream and yields its events as they come."""
        url, headers = _endpoint(deployment, "edits")
        del headers["Content-Type"]  # aiohttp writes the multipart boundary
        form = edit_form(edit, deployment.upstream_model, streaming=True)
        return self._events(url, form, headers, deployment, EDIT_EVENTS)

    async def _events(
        self,
        url: str,
        data: Any,
        headers: dict[str, str],
        deployment: Deployment,
        events: StreamEvents[_Event],
    ) -> AsyncGenerator[_Event, None]:
        """POSTs `data` and relays the upstream's Server-Sent Events as `events` messages."""
        headers["Accept"] = "text/event-stream"
        started = completed = False
        sent_at = time.perf_counter()
        with step("upstream", SpanKind.CLIENT) as span:
            headers.update(upstream_headers(span))  # the caller's trace goes on through us
            async with _connection_errors(deployment, started=lambda: started):
                response = await self._session.post(
                    url, data=data, headers=headers, allow_redirects=False
                )
                async with response:
                    _answered(deployment, response.status, sent_at, span)
                    if response.status >= 400:
                        raw = await self._read(response)
                        retry_after = response.headers.get("Retry-After")
                        raise failed.upstream_error(response.status, raw, retry_after, deployment)
                    try:
                        async for sent in read_events(
                            response.content.iter_any(), max_event_bytes=self._max_response_bytes
                        ):
                            if sent.data.strip() == "[DONE]":
                                break  # many OpenAI-compatible servers end streams so
                            message = _stream_event(sent.event, sent.data, deployment, events)
                            if message is None:
                                continue  # an event type this gateway does not know yet
                            started = True
                            completed = completed or message.type == events.completed
                            yield message
                    except ValueError:  # an event past the size limit
                        raise failed.invalid_response(deployment) from None
            _answered(deployment, response.status, sent_at, None)  # the stream's whole time
        if not completed:
            raise failed.stream_cut(deployment)

    async def _download(self, url: str, deployment: Deployment) -> bytes:
        # Only from the upstream's own origin: an upstream (or whoever forged
        # its answer) must not make the gateway fetch from other hosts.
        try:
            target = yarl.URL(url)
            foreign = (
                target.scheme not in ("http", "https")
                or target.origin() != yarl.URL(str(deployment.api_base)).origin()
            )
        except ValueError:  # not even a URL
            foreign = True
        if foreign:
            raise failed.image_url_refused(deployment)
        async with self._session.get(target, allow_redirects=False) as response:
            if response.status != 200:
                raise failed.image_unavailable(deployment, response.status)
            data = await self._read(response)
        try:
            sniff_image_type(data)  # whatever it is, it is never passed on as an image
        except ValueError:
            raise failed.invalid_response(deployment) from None
        return data

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        if (response.content_length or 0) > self._max_response_bytes:
            raise failed.too_large()
        chunks = []
        size = 0
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise failed.too_large()
            chunks.append(chunk)
        return b"".join(chunks)


@functools.lru_cache(maxsize=256)
def _host_of(api_base: str) -> str:
    """A deployment's host, parsed once per base URL (it is asked on every call)."""
    return yarl.URL(api_base).host or ""


def _answered(deployment: Deployment, status: int, sent_at: float, span: Span | None) -> None:
    """Notes the upstream's status and time on the call (access log, metrics) and its span."""
    call = current_call()
    host = _host_of(str(deployment.api_base))
    if call is not None:
        call.upstream_answered(host, status, time.perf_counter() - sent_at)
    if span is not None:
        span.set_attributes(
            {
                "http.response.status_code": status,
                "server.address": host,
                "gen_ai.request.model": deployment.upstream_model,
            }
        )


@contextlib.asynccontextmanager
async def _connection_errors(deployment: Deployment, *, started: Any) -> AsyncIterator[None]:
    """Connection failures as the caller sees them.

    UNAVAILABLE, so that the dispatcher fails over; or a cut stream once
    `started()` says events were relayed.
    """
    try:
        yield
    except aiohttp.ClientError as exc:
        log.warning(
            "upstream %s at %s failed: %s (request %s)",
            deployment.upstream_model,
            _host_of(str(deployment.api_base)),
            type(exc).__name__,
            current_request_id(),
        )
        if started():
            raise failed.stream_cut(deployment) from None
        raise failed.unreachable() from None


def _stream_event(
    name: str, data: str, deployment: Deployment, events: StreamEvents[_Event]
) -> _Event | None:
    """The event as a message; None for a type this gateway does not relay (skipped)."""
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise failed.invalid_response(deployment) from None
    if not isinstance(document, dict):
        raise failed.invalid_response(deployment)
    if name == "error" or "error" in document:
        error = document.get("error")
        # An error after the stream started: same shape as an HTTP error body,
        # and through the same mapping (which scrubs every text of it).
        raise failed.upstream_error(500, json.dumps({"error": error}).encode(), None, deployment)
    scrub = scrubber_for(deployment)
    if document.get("type") not in (events.partial_image, events.completed):
        # OpenAI adds event types over time; one we do not know must not
        # break a stream that still delivers the ones we do.
        log.info("skipping upstream stream event %r", scrub.bounded(str(document.get("type")), 80))
        return None
    try:
        return stream_event_from_json(document, scrub, events)
    except _MALFORMED:
        raise failed.invalid_response(deployment) from None


def _endpoint(deployment: Deployment, operation: str = "generations") -> tuple[str, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    call = current_call()
    if call is not None:
        # The upstream's logs then name the request as ours do.
        headers["X-Request-ID"] = call.request_id
    if deployment.provider == "azure":
        url = (
            f"{deployment.api_base}/openai/deployments/{deployment.upstream_model}"
            f"/images/{operation}?api-version={deployment.api_version}"
        )
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        return url, headers
    if deployment.api_key:
        headers["Authorization"] = f"Bearer {deployment.api_key}"
    return f"{deployment.api_base}/images/{operation}", headers
