"""Serving the door: every answer, aiohttp's own refusals included, is the dialect's error.

aiohttp answers some requests before any handler runs: those its HTTP parser
rejects (a URL or header over its limits, a control character in a header,
an invalid method, a malformed chunked body) and, after parsing, its own
`HTTPException`s (a `CONNECT host:443` or `OPTIONS *` no route can take, an
unknown `Expect`). Those answers are text/plain, and the parser's quote the
raw request head, an `Authorization` header included. aiohttp has no hook
for them (aio-libs/aiohttp#3287); its connection class, `RequestHandler`,
makes them in `handle_error` and `finish_response`. `DoorRunner` gives its
connections a subclass that sends the door's error through the app's one
error handler (`Transcoder.error_response`) instead.

`serve()` runs an app with a `DoorRunner` until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import Any

import grpc
from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from gateway_http.access_log import ACCESS_LOGGER, DoorAccessLogger
from gateway_http.app import TRANSCODER
from gateway_http.errors import HttpError
from gateway_http.log_format import write_queued_lines
from gateway_http.metrics import DOOR_METRICS

__all__ = ["DoorRunner", "serve"]

_log = logging.getLogger(__name__)

# Builds the door's error response for a request and what went wrong.
ErrorResponse = Callable[[web.BaseRequest, Exception], web.StreamResponse]


class _DoorConnection(RequestHandler):
    """aiohttp's connection, answering its own refusals with the door's errors."""

    __slots__ = ("_error_response",)

    def __init__(self, manager: web.Server, error_response: ErrorResponse, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._error_response = error_response

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """The door's error for a request aiohttp could not parse or serve.

        aiohttp calls it with status 400 and the parser's exception, 504 for a
        handler timeout, and 500 for an exception out of the handler.
        """
        if request.writer.output_size > 0:  # as aiohttp: the status line is gone
            raise ConnectionError("an error after the response started cannot be sent")
        if isinstance(exc, http_exceptions.HttpProcessingError):
            # The caller's mistake; its text quotes the raw head: only the class is logged.
            _log.debug("refused a malformed HTTP request: %s", type(exc).__name__)
        error: Exception
        if isinstance(exc, Exception):
            error = exc  # errors.as_http_error maps it (and logs a bug with its traceback)
        else:
            kind = grpc.StatusCode.DEADLINE_EXCEEDED if status == 504 else grpc.StatusCode.INTERNAL
            error = HttpError(status, grpc_code=kind)
        response = self._error_response(request, error)
        response.force_close()  # the stream may be out of step: as aiohttp does
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """Sends `resp`; an `HTTPException` of aiohttp's is sent as the door's error."""
        if isinstance(resp, web.HTTPException) and resp.status >= 400:
            resp = self._error_response(request, resp)
        return await super().finish_response(request, resp, start_time)


class _DoorServer(web.Server):
    """aiohttp's `Server` (the connection factory), making `_DoorConnection`s."""

    error_response: ErrorResponse

    def __call__(self) -> RequestHandler:
        return _DoorConnection(self, self.error_response, loop=self._loop, **self._kwargs)


class DoorRunner(web.AppRunner):
    """An `AppRunner` for an app of `create_app`, whose every answer is the dialect's.

    Use it as `web.AppRunner`: `await runner.setup()`, sites, `await runner.cleanup()`.
    Every finished request is counted in the app's metrics (when it has them)
    and, unless `access_log` is False, written to the access log: the runner
    sets aiohttp's `access_log` and `access_log_class` itself.
    """

    def __init__(self, app: web.Application, *, access_log: bool = True, **kwargs: Any) -> None:
        """Creates the runner; `kwargs` are `web.AppRunner`'s (`handler_cancellation`...)."""
        hook = DoorAccessLogger.bound(app.get(DOOR_METRICS), lines=access_log)
        super().__init__(app, access_log=ACCESS_LOGGER, access_log_class=hook, **kwargs)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server in `Application._make_handler`, with no
        # choice of class: the one made becomes the door's (same state, one
        # method more), so app start-up and options stay aiohttp's.
        server.__class__ = _DoorServer
        door: Any = server
        door.error_response = self.app[TRANSCODER].error_response
        return server


async def serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool = False,
    announce: Callable[[str], None] = print,
    **runner_options: Any,
) -> None:
    """Serves `app` on host:port until SIGINT or SIGTERM, then shuts it down gracefully.

    Args:
        app: An application made by `create_app`.
        host: Interface to listen on.
        port: TCP port to listen on (0: one the OS picks).
        reuse_port: Set SO_REUSEPORT so several processes share the port.
        announce: Called with the URL the door listens on, once it does.
        **runner_options: Further keyword arguments for the runner (e.g.
            `access_log`, `handler_cancellation`).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    runner = DoorRunner(app, **runner_options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
        await site.start()
        announce(site.name)
        await stop.wait()
    finally:
        await runner.cleanup()
        # While a second stop signal is still handled: once the handlers are
        # gone, one would end the process with these lines unwritten.
        write_queued_lines()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
