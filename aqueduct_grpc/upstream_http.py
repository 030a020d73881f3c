"""Calls OpenAI-compatible image APIs (OpenAI, Azure OpenAI, self-hosted) over HTTP.

One pooled aiohttp session serves every upstream. The upstream gets the
configured key and model name, never the caller's token. Its errors keep
their HTTP status and message (with our key scrubbed); connection failures
become UNAVAILABLE and timeouts DEADLINE_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import binascii
import json
import logging
import math
import time
from typing import Any

import aiohttp
import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.images_json import parse_images_response

__all__ = ["HttpImageBackend", "response_from_json"]

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
                async with self._session.post(url, data=payload, headers=headers) as response:
                    raw = await self._read(response)
                    status = response.status
                    retry_after = response.headers.get("Retry-After")
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
            raise GatewayError(
                grpc.StatusCode.UNAVAILABLE,
                "The upstream image service could not be reached.",
                reason="UPSTREAM_UNAVAILABLE",
            ) from None
        if status >= 400:
            raise _upstream_error(status, raw, retry_after, deployment)
        try:
            return response_from_json(parse_images_response(raw))
        except (ValueError, TypeError, KeyError, AttributeError, binascii.Error):
            log.warning("upstream %s sent an invalid image response", deployment.upstream_model)
            raise GatewayError(
                grpc.StatusCode.INTERNAL,
                "The upstream image service sent an invalid response.",
                reason="UPSTREAM_INVALID_RESPONSE",
                http_status=502,
            ) from None

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
        target = response.usage
        target.input_tokens = int(usage.get("input_tokens") or 0)
        target.output_tokens = int(usage.get("output_tokens") or 0)
        target.total_tokens = int(usage.get("total_tokens") or 0)
        for name in ("input_tokens_details", "output_tokens_details"):
            details = usage.get(name)
            if isinstance(details, dict):
                field = getattr(target, name)
                field.image_tokens = int(details.get("image_tokens") or 0)
                field.text_tokens = int(details.get("text_tokens") or 0)
    return response
