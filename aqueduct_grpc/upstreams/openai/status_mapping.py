"""What an OpenAI-compatible upstream's failures mean to our caller, as `GatewayError`s.

An upstream's HTTP error keeps its status, type, code, param and message
(each with our key scrubbed, in any of its forms, and cut to a length that
fits a gRPC trailer), carried beside the gRPC code so that the HTTP door
restores it exactly (e.g. 422). Our own key being refused is the gateway's
fault, not the caller's. None of these messages names an upstream address.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import grpc

from aqueduct_grpc.config import Deployment
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.upstreams.openai.scrubbing import scrubber_for

__all__ = [
    "image_unavailable",
    "image_url_refused",
    "invalid_response",
    "stream_cut",
    "too_large",
    "unreachable",
    "upstream_error",
]

log = logging.getLogger(__name__)

# An upstream's texts are passed on cut to these lengths: with the rest of the
# status they must fit gRPC's trailers (8 KiB by default), whatever was sent.
MESSAGE_CHARS = 1_000
NAME_CHARS = 200

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


def unreachable() -> GatewayError:
    """The upstream could not be reached (the dispatcher fails over on this)."""
    # UNAVAILABLE is what the dispatcher fails over on; no address in the text.
    return GatewayError(
        grpc.StatusCode.UNAVAILABLE,
        "The upstream image service could not be reached.",
        reason="UPSTREAM_UNAVAILABLE",
    )


def stream_cut(deployment: Deployment) -> GatewayError:
    """The upstream ended a stream before its image was complete."""
    log.warning("upstream %s ended a stream before its image", deployment.upstream_model)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service ended the stream before the image was complete.",
        reason="UPSTREAM_STREAM_INCOMPLETE",
        http_status=502,
    )


def invalid_response(deployment: Deployment) -> GatewayError:
    """The upstream's answer is not what its API promises."""
    log.warning("upstream %s sent an invalid image response", deployment.upstream_model)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service sent an invalid response.",
        reason="UPSTREAM_INVALID_RESPONSE",
        http_status=502,
    )


def too_large() -> GatewayError:
    """The upstream's answer is over `max_upstream_response_bytes`."""
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service sent a response larger than the gateway accepts.",
        reason="UPSTREAM_RESPONSE_TOO_LARGE",
        http_status=502,
    )


def upstream_error(
    status: int, raw: bytes, retry_after: str | None, deployment: Deployment
) -> GatewayError:
    """The caller's view of an upstream HTTP error: its status, type, code and message."""
    error: dict[str, Any] = {}
    try:
        parsed = json.loads(raw)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except (ValueError, RecursionError):  # not JSON, or nested past the parser
        pass
    scrub = scrubber_for(deployment)
    message = scrub.bounded(
        str(error.get("message") or f"The upstream image service answered {status}."),
        MESSAGE_CHARS,
    )
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
        param=scrub.bounded(param, NAME_CHARS) if isinstance(param, str) else None,
        http_status=status,
        error_type=scrub.bounded(str(error["type"]), NAME_CHARS) if error.get("type") else None,
        openai_code="" if openai_code is None else scrub.bounded(str(openai_code), NAME_CHARS),
        retry_after=delay,
    )


def image_url_refused(deployment: Deployment) -> GatewayError:
    """An upstream image URL on another host, which is never fetched."""
    log.warning(
        "upstream %s returned an image URL on another host; not fetched", deployment.upstream_model
    )
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        "The upstream image service returned an image URL on another host, "
        "which the gateway does not fetch.",
        reason="UPSTREAM_URL_REFUSED",
        http_status=502,
    )


def image_unavailable(deployment: Deployment, status: int) -> GatewayError:
    """An upstream image URL that did not deliver its image."""
    log.warning("upstream %s image download answered %d", deployment.upstream_model, status)
    return GatewayError(
        grpc.StatusCode.INTERNAL,
        f"The upstream image service could not deliver an image ({status}).",
        reason="UPSTREAM_IMAGE_UNAVAILABLE",
        http_status=502,
    )
