"""The door's access log: one structured line per HTTP request, as aiohttp's hook writes it.

aiohttp calls its access logger once per request, after the response (a
stream's too) is finished, which is what uvicorn- and gunicorn-style access
logs record; the same hook counts the request in the door's metrics. The
fields are the log record's own attributes (`extra`), which the formatter
lays out as JSON keys or logfmt pairs. The URL's query is never logged: a
signed image URL carries its credential there, as an `Authorization` header
would; no header is logged either.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from gateway_http.request_ids import request_id_of

if TYPE_CHECKING:
    from gateway_http.metrics import DoorMetrics

__all__ = ["ACCESS_LOGGER", "ERROR_CODE", "GRPC_STATUS", "ROUTE", "DoorAccessLogger"]

ACCESS_LOGGER = logging.getLogger("gateway_http.access")
ROUTE = web.RequestKey("route", str)
"""The route template the request matched (a bounded set, unlike paths)."""
GRPC_STATUS = web.RequestKey("grpc_status", str)
"""The gRPC status code the request ended with, when a call was made."""
ERROR_CODE = web.RequestKey("error_code", str)
"""The error's machine-readable code, when the request failed."""


class DoorAccessLogger(AbstractAccessLogger):
    """Writes each request's line to `gateway_http.access` at INFO, and counts it.

    aiohttp makes the instances (one per connection) from the class, so what
    they report to is the class's: `bound` makes the class for an app.
    """

    metrics: ClassVar[DoorMetrics | None] = None
    lines: ClassVar[bool] = True

    @classmethod
    def bound(cls, metrics: DoorMetrics | None, *, lines: bool) -> type[DoorAccessLogger]:
        """The hook class counting in `metrics` (None: nothing), writing lines if `lines`."""
        return type(cls.__name__, (cls,), {"metrics": metrics, "lines": lines})

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Counts a finished request and writes its line (`time`: seconds since it arrived)."""
        if self.metrics is not None:
            self.metrics.request_done(request, response.status, time)
        if self.lines:
            self._line(request, response, time)

    def _line(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields: dict[str, Any] = {
            "request_id": request_id_of(request),
            "door": "http",
            "method": request.method,
            "path": request.path,
            "route": request.get(ROUTE),
            "status": response.status,
            "grpc_status": request.get(GRPC_STATUS),
            "latency_ms": round(time * 1000, 2),
            "bytes_in": request.content_length,
            "bytes_out": response.body_length,
            "remote": request.remote,
        }
        error = request.get(ERROR_CODE)
        if error is not None:
            fields["error"] = error
        self.logger.info(
            "%s %s %d %.1fms",
            request.method,
            request.path,
            response.status,
            fields["latency_ms"],
            extra=fields,
        )
