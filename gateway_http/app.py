"""The aiohttp application: one generic handler in front of the gRPC core.

`create_app()` builds the route table from service descriptors, prepares the
marshaling tables, and registers one catch-all handler. The `grpc.aio` channel
is a `cleanup_ctx` resource: created at start-up (with one multicallable per
route), closed at clean-up.

Besides JSON, a route can answer with raw bytes (its response is a
`google.api.HttpBody`, whose content type is used, along with the response
metadata named in `forwarded_response_headers`) or with Server-Sent Events
(its method declares a streaming twin and the request sets the twin's flag).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from gateway_http import sse
from gateway_http.errors import GENERIC_SERVER_MESSAGE, ApiError, from_grpc_status
from gateway_http.marshal import Marshaler, RequestDecoder, ResponseEncoder
from gateway_http.routes import DEFAULT_PACKAGE, Route, RouteTable, build_routes, discover_services

__all__ = [
    "DEFAULT_FORWARDED_HEADERS",
    "DEFAULT_FORWARDED_RESPONSE_HEADERS",
    "GATEWAY",
    "Gateway",
    "create_app",
]

_log = logging.getLogger(__name__)

MIB = 1024 * 1024
DEFAULT_MAX_BODY_BYTES = 1 * MIB
DEFAULT_MAX_MESSAGE_BYTES = 64 * MIB
# Host and X-Forwarded-* let the core build absolute URLs that point back at
# the address the client used.
DEFAULT_FORWARDED_HEADERS: tuple[str, ...] = (
    "authorization",
    "x-request-id",
    "host",
    "x-forwarded-host",
    "x-forwarded-proto",
)
# Response metadata copied to HTTP headers on raw-body and streaming routes.
DEFAULT_FORWARDED_RESPONSE_HEADERS: tuple[str, ...] = ("cache-control",)
JSON = "application/json"
HEALTH_CHECK_PATH = "/grpc.health.v1.Health/Check"


@dataclass(frozen=True, slots=True)
class GatewayOptions:
    """The validated options of one application (see `create_app`)."""

    grpc_target: str
    max_body_bytes: int
    forwarded_headers: tuple[str, ...]
    forwarded_response_headers: tuple[str, ...]
    max_send_message_bytes: int
    max_receive_message_bytes: int
    call_timeout: float | None
    health_timeout: float
    channel_credentials: grpc.ChannelCredentials | None
    channel_options: tuple[tuple[str, Any], ...]


class _Endpoint:
    """A route with its marshaling tables and, once started, its multicallables."""

    __slots__ = ("call", "decoder", "encoder", "route", "stream_call", "stream_encoder")

    def __init__(
        self,
        route: Route,
        decoder: RequestDecoder,
        encoder: ResponseEncoder,
        stream_encoder: ResponseEncoder | None,
    ) -> None:
        self.route = route
        self.decoder = decoder
        self.encoder = encoder
        self.stream_encoder = stream_encoder
        self.call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] | None = None
        self.stream_call: grpc.aio.UnaryStreamMultiCallable[Message, Message] | None = None


def _error_response(error: ApiError) -> web.Response:
    return web.Response(
        status=error.http_status, body=error.body(), content_type=JSON, headers=error.headers
    )


_INTERNAL_ERROR = ApiError(500, GENERIC_SERVER_MESSAGE, "server_error")
_NOT_RUNNING = ApiError(503, "The service is starting or stopping.", "server_error")
_UNREADABLE_BODY = ApiError(
    400, "The request body could not be read: it does not match its Content-Encoding."
)
_UNSUPPORTED_MEDIA = ApiError(
    415, "Unsupported Content-Type: the request body must be JSON (application/json)."
)


class Gateway:
    """The HTTP door's state and handlers; one per application.

    Attributes:
        options: The application's options.
        routes: The route table.
        channel: The gRPC channel while the application runs, else None.
    """

    def __init__(self, options: GatewayOptions, routes: Iterable[Route]) -> None:
        self.options = options
        marshaler = Marshaler()
        endpoints = [
            _Endpoint(
                route,
                marshaler.request_decoder(
                    route.request_class, route.body, route.template.variables
                ),
                marshaler.response_encoder(route.response_class, route.response_body),
                None
                if route.twin is None
                else marshaler.response_encoder(route.twin.response_class),
            )
            for route in routes
        ]
        self._endpoints = endpoints
        self.routes: RouteTable[_Endpoint] = RouteTable((e.route, e) for e in endpoints)
        self.channel: grpc.aio.Channel | None = None
        self._health: grpc.aio.UnaryUnaryMultiCallable[Message, Message] | None = None
        self._too_large = ApiError(
            413,
            f"The request body is too large: the limit is {options.max_body_bytes} bytes.",
            code="request_too_large",
        )

    async def channel_ctx(self, app: web.Application) -> AsyncIterator[None]:
        """`cleanup_ctx`: opens the gRPC channel and binds every route to it."""
        opts = self.options
        channel_options = [
            ("grpc.max_send_message_length", opts.max_send_message_bytes),
            ("grpc.max_receive_message_length", opts.max_receive_message_bytes),
            *opts.channel_options,
        ]
        if opts.channel_credentials is None:
            channel = grpc.aio.insecure_channel(opts.grpc_target, options=channel_options)
        else:
            channel = grpc.aio.secure_channel(
                opts.grpc_target, opts.channel_credentials, options=channel_options
            )
        try:
            for endpoint in self._endpoints:
                route = endpoint.route
                endpoint.call = channel.unary_unary(
                    route.grpc_path,
                    request_serializer=route.request_class.SerializeToString,
                    response_deserializer=route.response_class.FromString,
                )
                if route.twin is not None:
                    endpoint.stream_call = channel.unary_stream(
                        route.twin.grpc_path,
                        request_serializer=route.twin.request_class.SerializeToString,
                        response_deserializer=route.twin.response_class.FromString,
                    )
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
                endpoint.call = None
                endpoint.stream_call = None
            await channel.close(None)

    def _metadata(self, request: web.Request) -> list[tuple[str, str]]:
        headers = request.headers
        metadata: list[tuple[str, str]] = []
        for name in self.options.forwarded_headers:
            for value in headers.getall(name, ()):
                # gRPC metadata values must be printable ASCII; others are dropped.
                if value.isascii() and value.isprintable():
                    metadata.append((name, value))
        return metadata

    async def _read_body(self, request: web.Request) -> bytes | None:
        if not request.body_exists:
            return None
        if request.content_type != JSON:
            raise _UNSUPPORTED_MEDIA
        length = request.content_length
        if length is not None and length > self.options.max_body_bytes:
            raise self._too_large
        try:
            # The app's client_max_size is max_body_bytes: aiohttp stops reading
            # (and raises) as soon as a chunked body passes the limit.
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise self._too_large from None
        except web.RequestPayloadError:
            # e.g. a body that does not match its Content-Encoding: the
            # client's mistake, not ours.
            raise _UNREADABLE_BODY from None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The one handler for every transcoded route."""
        try:
            endpoint, path_vars = self.routes.match(request.method, request.rel_url.raw_path)
            decoder = endpoint.decoder
            body = await self._read_body(request) if decoder.uses_body else None
            query = request.query.items() if decoder.uses_query and request.query_string else None
            message = decoder.decode(body, path_vars, query)
            route = endpoint.route
            if route.twin is not None and getattr(message, route.twin.selector_field):
                return await self._stream(request, endpoint, message)
            call = endpoint.call
            if call is None:
                raise _NOT_RUNNING
            if route.http_body:
                return await self._raw_body(request, endpoint, message)
            try:
                response = await call(
                    message, metadata=self._metadata(request), timeout=self.options.call_timeout
                )
            except grpc.aio.AioRpcError as err:
                raise from_grpc_status(err.code(), err.details(), err.trailing_metadata()) from None
            return web.Response(body=endpoint.encoder.encode(response), content_type=JSON)
        except ApiError as error:
            return _error_response(error)
        except asyncio.CancelledError:
            raise
        except Exception:
            _log.exception("unexpected error for %s %s", request.method, request.path)
            return _error_response(_INTERNAL_ERROR)

    async def _response_headers(self, call: Any) -> dict[str, str]:
        # Only on raw-body and streaming routes: JSON routes' headers are fixed
        # by the contract, and skipping the lookup keeps their hot path lean.
        wanted = self.options.forwarded_response_headers
        headers: dict[str, str] = {}
        for key, value in await call.initial_metadata() or ():
            if key in wanted and isinstance(value, str) and value.isprintable():
                headers[key] = value
        return headers

    async def _raw_body(
        self, request: web.Request, endpoint: _Endpoint, message: Message
    ) -> web.Response:
        """A unary call whose `google.api.HttpBody` is the HTTP response itself."""
        assert endpoint.call is not None
        call = endpoint.call(
            message, metadata=self._metadata(request), timeout=self.options.call_timeout
        )
        try:
            response: Any = await call
            headers = await self._response_headers(call)
        except grpc.aio.AioRpcError as err:
            raise from_grpc_status(err.code(), err.details(), err.trailing_metadata()) from None
        field = endpoint.route.response_body
        body = getattr(response, field) if field else response
        headers["X-Content-Type-Options"] = "nosniff"
        return web.Response(
            body=body.data,
            headers={"Content-Type": body.content_type or "application/octet-stream", **headers},
        )

    async def _stream(
        self, request: web.Request, endpoint: _Endpoint, message: Message
    ) -> web.StreamResponse:
        """Calls the route's streaming twin and writes its messages as Server-Sent Events.

        Errors before the first message are ordinary HTTP errors (the status
        can still say what went wrong); later ones are an `error` event. A
        client that goes away cancels the call, and so the work behind it.
        """
        twin, call_twin, encoder = (
            endpoint.route.twin,
            endpoint.stream_call,
            endpoint.stream_encoder,
        )
        if call_twin is None:
            raise _NOT_RUNNING
        assert twin is not None and encoder is not None
        twin_request = twin.request_class()
        getattr(twin_request, twin.request_field).CopyFrom(message)
        call: Any = call_twin(
            twin_request, metadata=self._metadata(request), timeout=self.options.call_timeout
        )
        try:
            try:
                event = await call.read()
                headers = await self._response_headers(call)
            except grpc.aio.AioRpcError as err:
                raise from_grpc_status(err.code(), err.details(), err.trailing_metadata()) from None
            response = web.StreamResponse(
                headers={
                    "Content-Type": sse.CONTENT_TYPE,
                    "Cache-Control": "no-cache",
                    "X-Accel-Buffering": "no",  # tell nginx-like proxies not to buffer
                    **headers,
                }
            )
            await response.prepare(request)
            name_field = twin.event_field
            try:
                while event is not grpc.aio.EOF:
                    name = getattr(event, name_field) if name_field else ""
                    await response.write(sse.event_frame(name, encoder.encode(event)))
                    event = await call.read()
            except grpc.aio.AioRpcError as err:
                error = from_grpc_status(err.code(), err.details(), err.trailing_metadata())
                await response.write(sse.error_frame(error))
            except ConnectionResetError:
                _log.info("client left %s during a stream; cancelling the call", request.path)
                return response
            await response.write_eof()
            return response
        finally:
            call.cancel()  # a no-op when the call has finished

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


def _status_body(status: str) -> bytes:
    """`{"status": ...}` for the health endpoint (status is an enum name)."""
    return b'{"status":"' + status.encode("ascii") + b'"}'


GATEWAY = web.AppKey("gateway_http.gateway", Gateway)


def create_app(
    *,
    grpc_target: str,
    services: Iterable[ServiceDescriptor] | None = None,
    proto_packages: Sequence[str | ModuleType] = (DEFAULT_PACKAGE,),
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
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
        max_body_bytes: Largest accepted request body; larger ones get 413
            without being read beyond the limit.
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
        channel_options: Extra gRPC channel options.

    Returns:
        The application (its channel opens at start-up).

    Raises:
        ValueError: An option is invalid, or an http rule is malformed.
    """
    if max_body_bytes <= 0:
        raise ValueError("max_body_bytes must be positive")
    if call_timeout is not None and call_timeout <= 0:
        raise ValueError("call_timeout must be positive")
    options = GatewayOptions(
        grpc_target=grpc_target,
        max_body_bytes=max_body_bytes,
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
    gateway = Gateway(options, build_routes(services))
    # aiohttp enforces the limit while reading, so chunked bodies stop early too.
    app = web.Application(client_max_size=max_body_bytes)
    app[GATEWAY] = gateway
    app.cleanup_ctx.append(gateway.channel_ctx)
    app.router.add_get("/healthz", gateway.health, allow_head=False)
    app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return app
