"""Calls OpenAI-compatible image APIs (OpenAI, Azure OpenAI, self-hosted) over HTTP.

One pooled aiohttp session serves every upstream. The upstream gets the
configured key and model name, never the caller's token. Its errors keep
their HTTP status and message (with our key scrubbed); connection failures
become UNAVAILABLE and timeouts DEADLINE_EXCEEDED.

An upstream that answers with image URLs (legacy models) has them fetched
here, only from its own host, so callers never see an upstream URL. Streaming
answers (Server-Sent Events) are relayed event by event as they arrive.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import pybase64
import yarl

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images.links import sniff_image_type
from aqueduct_grpc.upstreams.openai.event_stream import read_events
from aqueduct_grpc.upstreams.openai.images_json import parse_images_response

__all__ = ["HttpImageBackend", "response_from_json", "stream_event_from_json"]

COMPLETED = "image_generation.completed"

log = logging.getLogger(__name__)

# Upstream HTTP status -> the gRPC code our caller sees. The exact status is
# carried beside it, so the HTTP door restores it (e.g. 422).
_CODE_BY_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class HttpImageBackend:
    """Generates images by POSTing to a deployment's `/images/generations`."""

    def __init__(self, session: aiohttp.ClientSession, *, max_response_bytes: int) -> None:
        """Args:
        session: the shared, pooled client session.
        max_response_bytes: a larger upstream answer is refused.
        """
        self._session = session
        self._max_response_bytes = max_response_bytes

    async def generate(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> images_pb2.GenerateImagesResponse:
        """Sends `body` upstream and returns its answer as a response message."""
        url, headers = _endpoint(deployment)
        payload = json.dumps(body).encode()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                async with self._session.post(
                    url, data=payload, headers=headers, allow_redirects=False
                ) as response:
                    raw = await self._read(response)
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
                if status < 400:
                    parsed = _parse_images(raw, deployment)
                    if any(image.HasField("url") for image in parsed.data):
                        # Fetched within the same timeout as the answer itself.
                        return await self._rehosted(parsed, deployment)
                    return parsed
        except TimeoutError:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"The upstream did not answer within {timeout:.1f} s.",
                reason="UPSTREAM_TIMEOUT",
            ) from None
        except aiohttp.ClientError as exc:
            log.warning(
                "upstream %s unreachable after %.0f ms: %s",
                deployment.upstream_model,
                (time.monotonic() - started) * 1000,
                type(exc).__name__,
            )
            raise _unreachable() from None
        raise _upstream_error(status, raw, retry_after, deployment)

    async def _rehosted(
        self, response: images_pb2.GenerateImagesResponse, deployment: Deployment
    ) -> images_pb2.GenerateImagesResponse:
        """Replaces upstream image URLs by the bytes they point at."""
        for image in response.data:
            if image.HasField("url") and not image.HasField("b64_json"):
                image.b64_json = await self._download(image.url, deployment)
                image.ClearField("url")
        return response

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
            log.warning(
                "upstream %s returned an image URL on another host; not fetched",
                deployment.upstream_model,
            )
            raise GatewayError(
                grpc.StatusCode.INTERNAL,
                "The upstream image service returned an image URL on another host, "
                "which the gateway does not fetch.",
                reason="UPSTREAM_URL_REFUSED",
                http_status=502,
            )
        async with self._session.get(target, allow_redirects=False) as response:
            if response.status != 200:
                log.warning(
                    "upstream %s image download answered %d",
                    deployment.upstream_model,
                    response.status,
                )
                raise GatewayError(
                    grpc.StatusCode.INTERNAL,
                    f"The upstream image service could not deliver an image ({response.status}).",
                    reason="UPSTREAM_IMAGE_UNAVAILABLE",
                    http_status=502,
                )
            data = await self._read(response)
        try:
            sniff_image_type(data)  # whatever it is, it is never passed on as an image
        except ValueError:
            raise _invalid_response(deployment) from None
        return data

    async def stream(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]:
        """Sends `body` (with `stream: true`) upstream and yields its events as they come."""
        url, headers = _endpoint(deployment)
        headers["Accept"] = "text/event-stream"
        payload = json.dumps(body).encode()
        # Every wait on the upstream is bounded by one deadline, rather than a
        # timeout around the whole generator: one spanning `yield` could fire
        # while our consumer is being awaited, outside this frame.
        deadline = asyncio.get_running_loop().time() + timeout
        started = completed = False
        try:
            async with asyncio.timeout_at(deadline):
                response = await self._session.post(
                    url, data=payload, headers=headers, allow_redirects=False
                )
            async with response:
                if response.status >= 400:
                    async with asyncio.timeout_at(deadline):
                        raw = await self._read(response)
                    retry_after = response.headers.get("Retry-After")
                    raise _upstream_error(response.status, raw, retry_after, deployment)
                events = read_events(
                    response.content.iter_any(), max_event_bytes=self._max_response_bytes
                )
                while True:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(events, None)
                    if event is None or event.data.strip() == "[DONE]":
                        break  # many OpenAI-compatible servers end streams so
                    message = _stream_event(event.event, event.data, deployment)
                    if message is None:
                        continue  # an event type this gateway does not know yet
                    started = True
                    completed = completed or message.type == COMPLETED
                    yield message
        except TimeoutError:
            raise GatewayError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"The upstream did not finish streaming within {timeout:.1f} s.",
                reason="UPSTREAM_TIMEOUT",
            ) from None
        except aiohttp.ClientError as exc:
            log.warning(
                "upstream %s stream failed: %s", deployment.upstream_model, type(exc).__name__
            )
            if started:
                raise _stream_cut(deployment) from None
            raise _unreachable() from None
        except ValueError:
            raise _invalid_response(deployment) from None
        if not completed:
            raise _stream_cut(deployment)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        if (response.content_length or 0) > self._max_response_bytes:
            raise _too_large()
        chunks = []
        size = 0
        async for chunk in response.content.iter_chunked(1 << 20):
            size += len(chunk)
            if size > self._max_response_bytes:
                raise _too_large()
            chunks.append(chunk)
        return b"".join(chunks)


def _unreachable() -> GatewayError:
    # UNAVAILABLE is what the dispatcher fails over on; no address in the text.
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "The upstream image service could not be reached.",
        reason="UPSTREAM_UNAVAILABLE",
    )


def _stream_cut(deployment: Deployment) -> GatewayError:
    log.warning("upstream %s ended a stream before its image", deployment.upstream_model)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service ended the stream before the image was complete.",
        reason="UPSTREAM_STREAM_INCOMPLETE",
        http_status=502,
    )


def _invalid_response(deployment: Deployment) -> GatewayError:
    log.warning("upstream %s sent an invalid image response", deployment.upstream_model)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service sent an invalid response.",
        reason="UPSTREAM_INVALID_RESPONSE",
        http_status=502,
    )


def _parse_images(raw: bytes, deployment: Deployment) -> images_pb2.GenerateImagesResponse:
    try:
        return response_from_json(parse_images_response(raw))
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise _invalid_response(deployment) from None


def _stream_event(
    name: str, data: str, deployment: Deployment
) -> images_pb2.StreamGenerateImagesResponse | None:
    """The event as a message; None for a type this gateway does not relay (skipped)."""
    try:
        document = json.loads(data)
    except ValueError:
        raise _invalid_response(deployment) from None
    if not isinstance(document, dict):
        raise _invalid_response(deployment)
    if name == "error" or "error" in document:
        error = document.get("error")
        # An error after the stream started: same shape as an HTTP error body.
        raise _upstream_error(500, json.dumps({"error": error}).encode(), None, deployment)
    if document.get("type") not in _RELAYED_EVENTS:
        # OpenAI adds event types over time; one we do not know must not
        # break a stream that still delivers the ones we do.
        log.info("skipping upstream stream event %r", str(document.get("type"))[:80])
        return None
    try:
        return stream_event_from_json(document)
    except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        raise _invalid_response(deployment) from None


_RELAYED_EVENTS = ("image_generation.partial_image", COMPLETED)


def stream_event_from_json(document: dict[str, Any]) -> images_pb2.StreamGenerateImagesResponse:
    """Converts one OpenAI `ImageGenStreamEvent` (JSON, `b64_json` as base64) to the message."""
    kind = document["type"]
    if kind not in _RELAYED_EVENTS:
        raise ValueError(f"unknown image stream event {kind!r}")
    event = images_pb2.StreamGenerateImagesResponse(
        type=kind,
        b64_json=pybase64.b64decode(document["b64_json"], validate=True),
        created_at=int(document.get("created_at") or time.time()),
    )
    for name in ("size", "quality", "background", "output_format"):
        if document.get(name) is not None:
            setattr(event, name, str(document[name]))
    if document.get("partial_image_index") is not None:
        event.partial_image_index = int(document["partial_image_index"])
    if isinstance(document.get("usage"), dict):
        _usage_from_json(document["usage"], event.usage)
    return event


def _too_large() -> GatewayError:
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service sent a response larger than the gateway accepts.",
        reason="UPSTREAM_RESPONSE_TOO_LARGE",
        http_status=502,
    )


def _endpoint(deployment: Deployment) -> tuple[str, dict[str, str]]:
    headers = {"Content-Type": "application/json"}
    if deployment.provider == "azure":
        url = (
            f"{deployment.api_base}/openai/deployments/{deployment.upstream_model}"
            f"/images/generations?api-version={deployment.api_version}"
        )
        if deployment.api_key:
            headers["api-key"] = deployment.api_key
        return url, headers
    if deployment.api_key:
        headers["Authorization"] = f"Bearer {deployment.api_key}"
    return f"{deployment.api_base}/images/generations", headers


def _upstream_error(
    status: int, raw: bytes, retry_after: str | None, deployment: Deployment
) -> GatewayError:
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(raw)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass
    message = str(error.get("message") or f"The upstream image service answered {status}.")
    if deployment.api_key:
        message = message.replace(deployment.api_key, "***")
    if status == 401:
        # Our key was refused: the caller's own token is fine, so a 401 would
        # mislead them. Tell them the gateway is misconfigured instead.
        log.error("upstream refused the gateway's key for %s (401)", deployment.upstream_model)
        return GatewayError(
            grpc.StatusCode.INTERNAL,
            "The upstream image service refused the gateway's credentials.",
            reason="UPSTREAM_AUTHENTICATION_FAILED",
            http_status=502,
        )
    code = _CODE_BY_STATUS.get(
        status, grpc.StatusCode.INVALID_ARGUMENT if status < 500 else grpc.StatusCode.INTERNAL
    )
    delay: float | None = None
    if retry_after is not None:
        try:
            delay = max(0.0, math.ceil(float(retry_after)))
        except ValueError:
            delay = None
    param = error.get("param")
    openai_code = error.get("code")
    return GatewayError(
        code,
        message,
        reason="UPSTREAM_ERROR",
        param=param if isinstance(param, str) else None,
        http_status=status,
        error_type=str(error["type"]) if error.get("type") else None,
        openai_code=str(openai_code) if openai_code is not None else "",
        retry_after=delay,
    )


def response_from_json(document: dict[str, Any]) -> images_pb2.GenerateImagesResponse:
    """Converts a parsed `ImagesResponse` (`b64_json` already decoded) to the message."""
    response = images_pb2.GenerateImagesResponse(
        created=int(document.get("created") or time.time())
    )
    for item in document["data"]:
        image = response.data.add()
        if item.get("b64_json") is not None:
            image.b64_json = item["b64_json"]
        if item.get("url") is not None:
            image.url = item["url"]
        if item.get("revised_prompt") is not None:
            image.revised_prompt = item["revised_prompt"]
    for name in ("background", "output_format", "quality", "size"):
        if document.get(name) is not None:
            setattr(response, name, document[name])
    usage = document.get("usage")
    if isinstance(usage, dict):
        _usage_from_json(usage, response.usage)
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
