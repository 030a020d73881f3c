"""The aiohttp application: one generic handler in front of the gRPC core.

`create_app()` builds the route table from service descriptors, gives each
route its endpoint (its response mode, chosen once: see
`gateway_http.endpoints`) and registers one catch-all handler on a
`Transcoder`. The `grpc.aio` channel is a `cleanup_ctx` resource: created at
start-up (binding every endpoint to it), closed at clean-up.

Every error leaves through one handler, `Transcoder.error_response` (or, once
a stream has started, `Transcoder.error_event`): the exception becomes an
`HttpError` in one function (`errors.as_http_error`) and the dialect shapes
its body. Requests aiohttp refuses before any handler runs reach it too when
the app is served by `gateway_http.server.DoorRunner`.

Request bodies are decoded by the door, not by aiohttp. Two media types:
JSON (`gateway_http.marshal`), read whole, with `Content-Encoding` gzip or
deflate within the same size limit after decompression (any other coding,
such as br or zstd, is a 415 naming the supported ones, whatever optional
decompressors happen to be installed); and `multipart/form-data`
(`gateway_http.multipart`), read part by part as it arrives, uncompressed,
within the same body limit and a per-part limit. Anything else is a 415.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from opentelemetry.trace import Span

from gateway_http import cors, sse
from gateway_http.access_log import ERROR_CODE, GRPC_STATUS, ROUTE
from gateway_http.body_budget import BodyBudget, WaitedTooLong
from gateway_http.cors import ALLOWED_ORIGINS, CorsPolicy
from gateway_http.dialect import OPENAI, Dialect
from gateway_http.endpoints import Endpoint, UploadTwinEndpoint, build_endpoint
from gateway_http.errors import HttpError, Reason, as_http_error, door_error
from gateway_http.marshal import Marshaler
from gateway_http.metrics import DOOR_METRICS, METRICS_PATH, DoorMetrics
from gateway_http.multipart import FORM_DATA, FormReader
from gateway_http.request_ids import REQUEST_ID_HEADER, request_id_of, stamp
from gateway_http.routes import Route, RouteTable, build_routes, discover_services
from gateway_http.static_files import add_static_folders
from gateway_http.tracing import TRACE_HEADERS, request_span, trace_metadata

__all__ = [
    "DEFAULT_FORWARDED_HEADERS",
    "DEFAULT_FORWARDED_RESPONSE_HEADERS",
    "DEFAULT_MAX_BODY_BYTES_IN_FLIGHT",
    "TRANSCODER",
    "Transcoder",
    "TranscoderOptions",
    "create_app",
]

_log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 1 * MIB
# Large bodies held at once (see `BodyBudget`; streamed forms hold none), then a queue.
DEFAULT_MAX_BODY_BYTES_IN_FLIGHT = 32 * MIB
DEFAULT_MAX_MESSAGE_BYTES = 64 * MIB
# Host and X-Forwarded-* let the core build absolute URLs that point back at
# the address the client used.
DEFAULT_FORWARDED_HEADERS: tuple[str, ...] = (
    "authorization",
    "x-request-id",
    "host",
    "x-forwarded-host",
    "x-forwarded-proto",
    # W3C trace context: passed on as it came, so the door never breaks a caller's trace.
    "traceparent",
    "tracestate",
)
# Response metadata copied to HTTP headers on raw-body and streaming routes.
# `location` goes with a redirect status (see endpoints.STATUS_METADATA).
DEFAULT_FORWARDED_RESPONSE_HEADERS: tuple[str, ...] = ("cache-control", "location")
# gRPC's default metadata limits (8 KiB soft, 16 KiB hard) are smaller than
# an error trailer can be: the message, and again in grpc-status-details-bin
# (base64). A trailer over them loses the core's answer ("received metadata
# size exceeds hard limit"): the door takes what its core sends.
DEFAULT_MAX_METADATA_BYTES = 1 * MIB
JSON = "application/json"
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"
# Content-Encoding -> zlib's wbits for it (deflate: zlib-wrapped; raw is sniffed).
_CONTENT_CODINGS = {
    "gzip": 16 + zlib.MAX_WBITS,
    "x-gzip": 16 + zlib.MAX_WBITS,
    "deflate": zlib.MAX_WBITS,
}
_ACCEPT_ENCODING = "gzip, deflate"


@dataclass(frozen=True, slots=True)
class TranscoderOptions:
    """The validated options of one application (see `create_app`)."""

    grpc_target: str
    max_body_bytes: int
    max_part_bytes: int
    max_body_bytes_in_flight: int
    body_wait_seconds: float
    body_read_seconds: float
    cors: CorsPolicy | None
    forwarded_headers: tuple[str, ...]
    forwarded_response_headers: tuple[str, ...]
    max_send_message_bytes: int
    max_receive_message_bytes: int
    call_timeout: float | None
    health_timeout: float
    channel_credentials: grpc.ChannelCredentials | None
    channel_options: tuple[tuple[str, Any], ...]


class Transcoder:
    """The HTTP door's state and handlers: HTTP/JSON in, gRPC out; one per application.

    Attributes:
        options: The application's options.
        dialect: How errors read and look.
        routes: The route table; its values are the endpoints.
        channel: The gRPC channel while the application runs, else None.
        bodies: The large request bodies held at once (`BodyBudget`).
    """

    def __init__(
        self, options: TranscoderOptions, routes: Iterable[Route], dialect: Dialect = OPENAI
    ) -> None:
        """Creates the Transcoder, with an endpoint for each route and no channel yet.

        Args:
            options: The application's validated options.
            routes: The routes to serve.
            dialect: How errors read and look.

        Raises:
            ValueError: A route does not fit its messages, or two routes bind the
                same verb to the same template.
        """
        self.options = options
        self.dialect = dialect
        marshaler = Marshaler()
        forms = FormReader(
            marshaler, max_body_bytes=options.max_body_bytes, max_part_bytes=options.max_part_bytes
        )
        self.bodies = BodyBudget(options.max_body_bytes_in_flight)
        self.in_flight = 0  # requests being answered (a metric)
        endpoints = [
            build_endpoint(
                route,
                marshaler,
                forms=forms,
                timeout=options.call_timeout,
                response_headers=options.forwarded_response_headers,
                error_event=self.error_event,
            )
            for route in routes
        ]
        self._endpoints = endpoints
        self.routes: RouteTable[Endpoint] = RouteTable((e.route, e) for e in endpoints)
        self.channel: grpc.aio.Channel | None = None
        self._health: grpc.aio.UnaryUnaryMultiCallable[Message, Message] | None = None

    async def channel_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """`cleanup_ctx`: opens the gRPC channel and binds every endpoint to it."""
        opts = self.options
        # gRPC takes the first value of an option given twice: the caller's first.
        channel_options = [
            *opts.channel_options,
            ("grpc.max_send_message_length", opts.max_send_message_bytes),
            ("grpc.max_receive_message_length", opts.max_receive_message_bytes),
            ("grpc.max_metadata_size", DEFAULT_MAX_METADATA_BYTES),
            ("grpc.absolute_max_metadata_size", DEFAULT_MAX_METADATA_BYTES),
        ]
        if opts.channel_credentials is None:
            channel = grpc.aio.insecure_channel(opts.grpc_target, options=channel_options)
        else:
            channel = grpc.aio.secure_channel(
                opts.grpc_target, opts.channel_credentials, options=channel_options
            )
        try:
            for endpoint in self._endpoints:
                endpoint.bind(channel)
            self._health = channel.unary_unary(
                HEALTH_CHECK_PATH,
                request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                response_deserializer=health_pb2.HealthCheckResponse.FromString,
            )
            self.channel = channel
            yield
        finally:
            self.channel = None
            self._health = None
            for endpoint in self._endpoints:
                endpoint.unbind()
            await channel.close(None)

    def _metadata(self, request: web.Request, span: Span | None) -> list[tuple[str, str]]:
        headers = request.headers
        # The id the answer carries, which the caller's header may not have been.
        metadata = [(REQUEST_ID_HEADER, request_id_of(request))]
        replaced = {REQUEST_ID_HEADER}
        if span is not None:  # the core continues the door's span, not the caller's
            metadata += trace_metadata(span)
            replaced.update(TRACE_HEADERS)
        for name in self.options.forwarded_headers:
            if name in replaced:
                continue
            for value in headers.getall(name, ()):
                # gRPC metadata values must be printable ASCII; others are dropped.
                if value.isascii() and value.isprintable():
                    metadata.append((name, value))
        return metadata

    def _too_large(self) -> HttpError:
        # A fresh error each time: one raised again and again would keep every
        # request's frames alive in its growing traceback.
        return door_error(Reason.BODY_TOO_LARGE, limit=self.options.max_body_bytes)

    async def _decode(
        self, request: web.Request, endpoint: Endpoint, path_vars: dict[str, str]
    ) -> Message:
        """The request message, from the body (by its media type), the path and the query."""
        decoder = endpoint.decoder
        query = request.query.items() if decoder.uses_query and request.query_string else None
        if not decoder.uses_body or not request.body_exists:
            return decoder.decode(None, path_vars, query)
        media_type = request.content_type
        form = endpoint.form
        if media_type == FORM_DATA and form is not None:
            _check_form_coding(request)
            return await form.decode(request.headers, request.content, path_vars, query)
        # Its length and media type were checked already (`handle`).
        return decoder.decode(await self._read_json(request), path_vars, query)

    def _check_length(self, request: web.Request) -> None:
        """A 413 for a body whose Content-Length is over the limit, before reading it."""
        length = request.content_length
        if length is not None and length > self.options.max_body_bytes:
            raise self._too_large()

    async def _read_json(self, request: web.Request) -> bytes:
        coding = request.headers.get("Content-Encoding", "").strip().lower()
        wbits = _CONTENT_CODINGS.get(coding)
        if wbits is None and coding not in ("", "identity"):
            raise door_error(
                Reason.UNSUPPORTED_CONTENT_ENCODING,
                encoding=coding,
                supported=_ACCEPT_ENCODING,
                headers={"Accept-Encoding": _ACCEPT_ENCODING},
            )
        try:
            # The app's client_max_size is max_body_bytes: aiohttp stops reading
            # (and raises) as soon as a chunked body passes the limit.
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large() from None
        except web.RequestPayloadError:
            # e.g. a malformed chunked body: the client's mistake, not ours.
            raise door_error(Reason.UNREADABLE_BODY) from None
        return body if wbits is None else self._decompress(body, wbits)

    def _decompress(self, body: bytes, wbits: int) -> bytes:
        """The decoded body, within the body limit (a compression bomb stops there)."""
        if wbits == zlib.MAX_WBITS and body and body[0] & 0x0F != 8:
            wbits = -zlib.MAX_WBITS  # raw deflate, without zlib's header, as some clients send
        limit = self.options.max_body_bytes
        decoder = zlib.decompressobj(wbits)
        try:
            data = decoder.decompress(body, limit + 1)
        except zlib.error:
            raise door_error(Reason.UNREADABLE_BODY) from None
        if len(data) > limit:
            raise self._too_large()
        if not decoder.eof or decoder.unused_data:
            raise door_error(Reason.UNREADABLE_BODY)  # truncated, or data after its end
        return data

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one handler for every transcoded route."""
        self.in_flight += 1
        started = asyncio.get_running_loop().time()
        try:
            return await self._answer(request)
        except asyncio.CancelledError:
            # The caller hung up (or the door is stopping): aiohttp's finished-request
            # hook never sees such a request, so it is counted here, as nginx's 499.
            metrics = request.app.get(DOOR_METRICS)
            if metrics is not None:
                metrics.request_done(request, 499, asyncio.get_running_loop().time() - started)
            raise
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        try:
            policy = self.options.cors
            if (
                policy is not None
                and request.method == "OPTIONS"
                and "Access-Control-Request-Method" in request.headers
            ):
                request[ROUTE] = "preflight"  # one label for them all (metrics, access log)
                return policy.preflight(request, self.routes)
            endpoint, path_vars = self.routes.match(request.method, request.rel_url.raw_path)
            route = request[ROUTE] = endpoint.route.template.template
            if policy is not None:
                request[ALLOWED_ORIGINS] = policy.origins_for(endpoint.route)
            length = request.content_length if request.body_exists else 0
            if request.body_exists:
                # Refused before waiting for the budget: no queueing for a certain 413/415.
                self._check_length(request)
                self._check_media_type(request, endpoint)
            with request_span(request, route) as span:
                if (
                    isinstance(endpoint, UploadTwinEndpoint)
                    and request.body_exists
                    and request.content_type == FORM_DATA
                ):
                    # Streamed as it is read: the door holds a piece at a time.
                    response = await self._stream_form(request, endpoint, path_vars, span)
                else:
                    # Held until the answer is written: a unary call keeps its message.
                    async with self._held(length) as large:
                        message = await self._decode_within(request, endpoint, path_vars, large)
                        chosen, payload = endpoint.serialize(message)
                        del message  # its bytes only, from here: an upload is not held twice
                        metadata = self._metadata(request, span)
                        response = await chosen.respond(request, payload, metadata)
                if span is not None:
                    span.set_attribute("http.response.status_code", response.status)
            request.setdefault(GRPC_STATUS, "OK")
            return response
        except Exception as exc:  # CancelledError is not an Exception: it propagates
            return self.error_response(request, exc)

    async def _stream_form(
        self,
        request: web.Request,
        endpoint: UploadTwinEndpoint,
        path_vars: dict[str, str],
        span: Span | None,
    ) -> web.StreamResponse:
        """A form body streamed to the route's upload twin, and its answer."""
        _check_form_coding(request)
        query = (
            request.query.items() if endpoint.decoder.uses_query and request.query_string else None
        )
        # Timed whatever its size: each holds a call to the core until it has arrived.
        return await endpoint.stream_form(
            request,
            path_vars,
            query,
            self._metadata(request, span),
            read_seconds=self.options.body_read_seconds,
        )

    async def _decode_within(
        self, request: web.Request, endpoint: Endpoint, path_vars: dict[str, str], large: bool
    ) -> Message:
        """`_decode`, a large body within `body_read_seconds` (else a 408)."""
        seconds = self.options.body_read_seconds if large else None
        try:
            async with asyncio.timeout(seconds):
                return await self._decode(request, endpoint, path_vars)
        except TimeoutError:
            raise door_error(Reason.BODY_TIMEOUT, seconds=f"{seconds:g}") from None

    @contextlib.asynccontextmanager
    async def _held(self, length: int | None) -> AsyncIterator[bool]:
        """The body's place in the budget (whether it is a large one), or a 503 after the wait."""
        try:
            async with self.bodies.holding(
                length, self.options.max_body_bytes, self.options.body_wait_seconds
            ) as large:
                yield large
        except WaitedTooLong:
            raise door_error(Reason.UPLOADS_BUSY, headers={"Retry-After": "5"}) from None

    def _check_media_type(self, request: web.Request, endpoint: Endpoint) -> None:
        """A 415 for a body the route cannot read, before reading it."""
        media_type = request.content_type
        if media_type == JSON or (media_type == FORM_DATA and endpoint.form is not None):
            return
        if endpoint.decoder.uses_body:
            raise door_error(Reason.UNSUPPORTED_MEDIA_TYPE)

    def _http_error(self, request: web.BaseRequest, exc: Exception) -> HttpError:
        error = as_http_error(exc, f"{request.method} {request.path}")
        # For the access log: how the request ended.
        request[GRPC_STATUS] = error.grpc_code.name
        request[ERROR_CODE] = error.code or (error.reason.value if error.reason else "")
        return error

    def error_response(self, request: web.Request, exc: Exception) -> web.Response:
        """The HTTP response for anything raised while serving `request`."""
        error = self._http_error(request, exc)
        return web.Response(
            status=error.http_status,
            body=self.dialect.error_body(error),
            content_type=self.dialect.content_type,
            headers=error.headers,
        )

    def error_event(self, request: web.Request, exc: Exception) -> bytes:
        """The Server-Sent Event for anything raised after a stream started."""
        error = self._http_error(request, exc)
        return sse.event_frame(self.dialect.stream_error_event, self.dialect.error_body(error))

    async def health(self, request: web.Request) -> web.Response:
        """`GET /healthz`: 200 when the core's gRPC health check says SERVING."""
        status = "UNAVAILABLE"
        check = self._health
        if check is not None:
            try:
                reply: Any = await check(
                    health_pb2.HealthCheckRequest(), timeout=self.options.health_timeout
                )
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as err:
                _log.warning("health check failed: %s", err.code().name)
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("health check failed")
        return web.Response(
            status=200 if status == "SERVING" else 503,
            body=_status_body(status),
            content_type=JSON,
        )


def _check_form_coding(request: web.Request) -> None:
    """A 415 for a compressed form, which the door would have to inflate whole first."""
    coding = request.headers.get("Content-Encoding", "").strip().lower()
    if coding not in ("", "identity"):
        # Read as it streams, a form is never decompressed whole first;
        # no client of the door's APIs compresses its uploads.
        raise door_error(
            Reason.UNSUPPORTED_FORM_ENCODING,
            encoding=coding,
            headers={"Accept-Encoding": "identity"},
        )


def _status_body(status: str) -> bytes:
    """`{"status": ...}` for the health endpoint (status is an enum name)."""
    return b'{"status":"' + status.encode("ascii") + b'"}'


TRANSCODER = web.AppKey("gateway_http.transcoder", Transcoder)


def create_app(
    *,
    grpc_target: str,
    services: Iterable[ServiceDescriptor] | None = None,
    proto_packages: Sequence[str | ModuleType] = (),
    dialect: Dialect = OPENAI,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_part_bytes: int | None = None,
    max_body_bytes_in_flight: int = DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
    body_wait_seconds: float = 60.0,
    body_read_seconds: float = 120.0,
    cors_allow_origins: Mapping[str, Sequence[str]] | None = None,
    metrics: bool = True,
    static_folders: Mapping[str, str] | None = None,
    root_redirect: str | None = None,
    forwarded_headers: Iterable[str] = DEFAULT_FORWARDED_HEADERS,
    forwarded_response_headers: Iterable[str] = DEFAULT_FORWARDED_RESPONSE_HEADERS,
    max_send_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_receive_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    call_timeout: float | None = None,
    health_timeout: float = 2.0,
    channel_credentials: grpc.ChannelCredentials | None = None,
    channel_options: Iterable[tuple[str, Any]] = (),
) -> web.Application:
    """Builds the HTTP/JSON transcoding application.

    Args:
        grpc_target: Address of the gRPC core, e.g. `127.0.0.1:50051`.
        services: The services to expose. None: every service with
            `google.api.http` rules found in the `*_pb2` modules below
            `proto_packages`.
        proto_packages: Packages searched when `services` is None.
        dialect: How errors read and look (default: OpenAI's envelope).
        max_body_bytes: Largest accepted request body; larger ones get 413
            without being read beyond the limit. A form's boundaries and part
            headers count too.
        max_part_bytes: Largest contents of one part of a `multipart/form-data`
            body (413 beyond); None: `max_body_bytes`.
        max_body_bytes_in_flight: Bytes of large bodies the door holds at
            once; further large requests wait their turn (`BodyBudget`).
            Forms streamed to an upload twin are not held, and do not wait.
        body_wait_seconds: Longest wait of a large body for the budget (503
            with Retry-After after it).
        body_read_seconds: Longest a large body may take to arrive once its
            bytes are granted (408 after it): a slow client cannot hold them.
        cors_allow_origins: Full service name -> the origins (or `*`) whose
            pages may call its routes (`gateway_http.cors`); None: no CORS
            answers at all (preflights are 405s).
        metrics: Whether requests are counted and timed, and `/metrics` serves
            the figures (Prometheus' text format; `gateway_http.metrics`). They
            are counted by `DoorRunner`'s finished-request hook: serve the app
            with a `DoorRunner` (another runner serves `/metrics` unmoved).
        static_folders: URL prefix (`/console/`) -> folder of static files
            served there (`gateway_http.static_files`); None: none.
        root_redirect: Where `GET /` redirects (e.g. `/console/`); None: no route.
        forwarded_headers: HTTP headers passed to the core as gRPC metadata
            (lower-cased names, values verbatim).
        forwarded_response_headers: Response metadata keys copied to HTTP
            headers on raw-body (`google.api.HttpBody`) and streaming routes.
        max_send_message_bytes: gRPC channel limit for requests.
        max_receive_message_bytes: gRPC channel limit for responses (image
            responses reach ~20 MB).
        call_timeout: Deadline in seconds for each gRPC call; None for none.
        health_timeout: Deadline in seconds for the `/healthz` check.
        channel_credentials: TLS credentials; None for a plaintext channel.
        channel_options: Extra gRPC channel options; they win over the ones above.

    Returns:
        The application (its channel opens at start-up).

    Raises:
        ValueError: An option is invalid, neither `services` nor
            `proto_packages` is given, or an http rule is malformed.
    """
    if max_body_bytes <= 0:
        raise ValueError("max_body_bytes must be positive")
    if max_part_bytes is not None and max_part_bytes <= 0:
        raise ValueError("max_part_bytes must be positive")
    if max_body_bytes_in_flight <= 0:
        raise ValueError("max_body_bytes_in_flight must be positive")
    if body_wait_seconds <= 0 or body_read_seconds <= 0:
        raise ValueError("body_wait_seconds and body_read_seconds must be positive")
    if call_timeout is not None and call_timeout <= 0:
        raise ValueError("call_timeout must be positive")
    if services is None and not proto_packages:
        raise ValueError("give the services to expose, or the proto_packages to find them in")
    options = TranscoderOptions(
        grpc_target=grpc_target,
        max_body_bytes=max_body_bytes,
        max_part_bytes=max_body_bytes if max_part_bytes is None else max_part_bytes,
        max_body_bytes_in_flight=max_body_bytes_in_flight,
        body_wait_seconds=body_wait_seconds,
        body_read_seconds=body_read_seconds,
        cors=None if cors_allow_origins is None else CorsPolicy(cors_allow_origins),
        forwarded_headers=tuple(dict.fromkeys(h.lower() for h in forwarded_headers)),
        forwarded_response_headers=tuple(
            dict.fromkeys(h.lower() for h in forwarded_response_headers)
        ),
        max_send_message_bytes=max_send_message_bytes,
        max_receive_message_bytes=max_receive_message_bytes,
        call_timeout=call_timeout,
        health_timeout=health_timeout,
        channel_credentials=channel_credentials,
        channel_options=tuple(channel_options),
    )
    if services is None:
        services = discover_services(proto_packages)
    transcoder = Transcoder(options, build_routes(services), dialect)
    # aiohttp enforces the limit while reading, so chunked bodies stop early too
    # (a form is read as a stream, which the door counts itself). It does not
    # decompress: the door does (see `Transcoder._read_json`).
    app = web.Application(client_max_size=max_body_bytes, handler_args={"auto_decompress": False})
    app[TRANSCODER] = transcoder
    door_metrics = None
    if metrics:  # counted by the runner's hook (`DoorRunner`), served here
        door_metrics = app[DOOR_METRICS] = DoorMetrics(
            lambda: transcoder.bodies.waiting, lambda: transcoder.in_flight
        )
    app.on_response_prepare.append(stamp)
    if options.cors is not None:
        app.on_response_prepare.append(cors.stamp)
    app.cleanup_ctx.append(transcoder.channel_ctx)
    app.router.add_get("/healthz", transcoder.health, allow_head=False)
    if door_metrics is not None:
        app.router.add_get(METRICS_PATH, door_metrics.scrape, allow_head=False)
    if static_folders or root_redirect is not None:
        add_static_folders(app, static_folders or {}, root_redirect)
    app.router.add_route("*", "/{tail:.*}", transcoder.handle)
    return app
