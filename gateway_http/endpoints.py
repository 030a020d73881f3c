"""A route's response mode, chosen once when the routes are built.

One small class per mode, each holding what it needs for every request:

* `UnaryEndpoint`: a unary call, answered with the response's JSON;
* `HttpBodyEndpoint`: a unary call whose `google.api.HttpBody` (the response,
  or its `response_body` field) is the HTTP response itself: raw bytes with
  their content type, plus the response metadata the app forwards;
* `StreamTwinEndpoint`: a method with a server-streaming twin
  (`gateway_http.api.v1.streaming_twin`): when the request sets the twin's
  flag, the twin is called and its messages written as Server-Sent Events;
  otherwise the unary mode it wraps answers;
* `UploadTwinEndpoint`: a method with an upload twin
  (`gateway_http.api.v1.upload_twin`): a form body is streamed to the twin,
  its file parts as they arrive, and the twin answers with JSON or with
  events; a JSON body goes to the mode it wraps.

`build_endpoint()` picks the mode from the route. Endpoints raise errors
(`HttpError`, `grpc.aio.AioRpcError`) and leave them to the app's one error
handler, except once a stream has started: the status line is sent by then,
so the error is written as an event, through the `error_event` callback.

Every endpoint of a route with a body also holds its form decoder
(`gateway_http.multipart`), for `multipart/form-data` bodies.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
import grpc.aio
from aiohttp import web
from google.protobuf.message import DecodeError, Message

from gateway_http import sse
from gateway_http.access_log import GRPC_STATUS
from gateway_http.errors import HttpError, Reason, door_error
from gateway_http.marshal import Marshaler, RequestDecoder, ResponseEncoder
from gateway_http.multipart import FormDecoder, FormReader
from gateway_http.routes import Route, StreamTwin, UploadTwin

__all__ = [
    "Endpoint",
    "ErrorEvent",
    "HttpBodyEndpoint",
    "Metadata",
    "StreamTwinEndpoint",
    "UnaryEndpoint",
    "UploadTwinEndpoint",
    "build_endpoint",
]

_log = logging.getLogger(__name__)

JSON = "application/json"

Metadata = Sequence[tuple[str, str]]
# Builds the error event for a failure after a stream started.
ErrorEvent = Callable[[web.Request, Exception], bytes]


def _parser(message_class: type[Message]) -> Callable[[bytes], Message | None]:
    """A response deserializer that answers None for bytes that do not parse.

    gRPC would log a traceback and hand back None anyway; `_received` turns
    None into a 502, since the core's answer is not what its contract says.
    """

    def parse(data: bytes) -> Message | None:
        try:
            return message_class.FromString(data)
        except DecodeError:
            return None

    return parse


def _received(message: Any) -> Any:
    """The core's answer, or a 502 when it could not be read (`_parser`)."""
    if message is None:
        _log.warning("the core sent a message that does not parse; answering 502")
        raise door_error(Reason.BAD_GATEWAY)
    return message


def _not_running() -> HttpError:
    """The channel is not open: the app is starting or stopping."""
    return door_error(Reason.NOT_RUNNING)


# Response metadata of a raw-body (HttpBody) method that sets the HTTP status,
# e.g. 302 with a forwarded `location` (grpc-gateway's `x-http-code` convention).
STATUS_METADATA = "x-http-status"


async def _response_headers(call: Any, wanted: tuple[str, ...]) -> dict[str, str]:
    """The call's response metadata named in `wanted`, as HTTP headers."""
    # Only on raw-body and streaming routes: JSON routes' headers are fixed by
    # the contract, and skipping the lookup keeps their hot path lean.
    headers: dict[str, str] = {}
    for key, value in await call.initial_metadata() or ():
        if key in wanted and isinstance(value, str) and value.isprintable():
            headers[key] = value
    return headers


class Endpoint(abc.ABC):
    """One route in one response mode; bound to the gRPC channel while the app runs.

    Attributes:
        route: The route.
        decoder: Builds the request message from the HTTP request (a JSON
            body, the path and the query).
        form: Builds it from a `multipart/form-data` body instead; None when
            the route takes no body.
    """

    __slots__ = ("decoder", "form", "route")

    def __init__(
        self, route: Route, decoder: RequestDecoder, form: FormDecoder | None = None
    ) -> None:
        """Sets what every mode has: the route and its request decoders.

        Args:
            route: The route.
            decoder: Builds the request message from the HTTP request.
            form: Builds it from a form body; None when the route takes no body.
        """
        self.route = route
        self.decoder = decoder
        self.form = form

    @property
    @abc.abstractmethod
    def bound(self) -> bool:
        """Whether the endpoint holds its multicallables (the channel is open)."""

    @abc.abstractmethod
    def bind(self, channel: grpc.aio.Channel) -> None:
        """Creates the endpoint's multicallables on `channel`."""

    @abc.abstractmethod
    def unbind(self) -> None:
        """Drops the multicallables (the channel is closing)."""

    def serialize(self, message: Message) -> tuple[Endpoint, bytes]:
        """The endpoint that answers `message`, and the request bytes it sends.

        The door sends bytes it serialized itself and then drops the message:
        a call given the message would hold it and its bytes until answered,
        an upload twice over.
        """
        return self, message.SerializeToString()

    @abc.abstractmethod
    async def respond(
        self, request: web.Request, payload: bytes, metadata: Metadata
    ) -> web.StreamResponse:
        """Calls the core with the serialized request and writes the answer.

        Args:
            request: The HTTP request.
            payload: The request message, serialized (`serialize`).
            metadata: The gRPC metadata to send.

        Returns:
            The HTTP response.

        Raises:
            HttpError: The door refuses or cannot serve the request.
            grpc.aio.AioRpcError: The call failed.
        """


class _UnaryCallEndpoint(Endpoint):
    """The part the unary modes share: one unary multicallable and its deadline."""

    __slots__ = ("_call", "_timeout")

    def __init__(
        self,
        route: Route,
        decoder: RequestDecoder,
        *,
        timeout: float | None,
        form: FormDecoder | None = None,
    ) -> None:
        super().__init__(route, decoder, form)
        self._timeout = timeout
        self._call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] | None = None

    @property
    def bound(self) -> bool:
        """Whether the unary multicallable exists (the channel is open)."""
        return self._call is not None

    def bind(self, channel: grpc.aio.Channel) -> None:
        self._call = channel.unary_unary(
            self.route.grpc_path,
            request_serializer=None,  # the request comes serialized (`serialize`)
            response_deserializer=_parser(self.route.response_class),
        )

    def unbind(self) -> None:
        self._call = None


class UnaryEndpoint(_UnaryCallEndpoint):
    """A unary call answered with its response's JSON.

    Attributes:
        encoder: Serializes the response (or its `response_body` field).
    """

    __slots__ = ("encoder",)

    def __init__(
        self,
        route: Route,
        decoder: RequestDecoder,
        encoder: ResponseEncoder,
        *,
        timeout: float | None,
        form: FormDecoder | None = None,
    ) -> None:
        """Creates the UnaryEndpoint, unbound.

        Args:
            route: The route.
            decoder: Builds the request message from the HTTP request.
            encoder: Serializes the response (or its `response_body` field).
            timeout: Deadline in seconds of each gRPC call; None for none.
            form: Builds the request message from a form body; None without a body.
        """
        super().__init__(route, decoder, timeout=timeout, form=form)
        self.encoder = encoder

    async def respond(
        self, request: web.Request, payload: bytes, metadata: Metadata
    ) -> web.StreamResponse:
        """Calls the core and answers with the response's JSON."""
        call = self._call
        if call is None:
            raise _not_running()
        response = _received(await call(payload, metadata=metadata, timeout=self._timeout))
        return web.Response(body=self.encoder.encode(response), content_type=JSON)


class HttpBodyEndpoint(_UnaryCallEndpoint):
    """A unary call whose `google.api.HttpBody` is the HTTP response itself."""

    __slots__ = ("_response_headers",)

    def __init__(
        self,
        route: Route,
        decoder: RequestDecoder,
        *,
        timeout: float | None,
        response_headers: tuple[str, ...],
        form: FormDecoder | None = None,
    ) -> None:
        """Creates the HttpBodyEndpoint, unbound.

        Args:
            route: The route.
            decoder: Builds the request message from the HTTP request.
            timeout: Deadline in seconds of each gRPC call; None for none.
            response_headers: Response metadata keys copied to HTTP headers.
            form: Builds the request message from a form body; None without a body.
        """
        super().__init__(route, decoder, timeout=timeout, form=form)
        self._response_headers = response_headers

    async def respond(
        self, request: web.Request, payload: bytes, metadata: Metadata
    ) -> web.StreamResponse:
        """Calls the core and answers with the `HttpBody`'s data and content type."""
        if self._call is None:
            raise _not_running()
        call = self._call(payload, metadata=metadata, timeout=self._timeout)
        response: Any = _received(await call)
        headers = await _response_headers(call, (*self._response_headers, STATUS_METADATA))
        field = self.route.response_body
        body = getattr(response, field) if field else response
        headers["X-Content-Type-Options"] = "nosniff"
        return web.Response(
            status=_success_status(headers.pop(STATUS_METADATA, None)),
            body=body.data,
            headers={"Content-Type": body.content_type or "application/octet-stream", **headers},
        )


def _success_status(value: str | None) -> int:
    """The HTTP status a raw-body answer asks for in its metadata: 2xx or 3xx, else 200.

    Errors travel as gRPC statuses, never this way.
    """
    if value is not None and value.isdecimal() and 200 <= int(value) < 400:
        return int(value)
    return 200


class StreamTwinEndpoint(Endpoint):
    """A route whose method has a server-streaming twin, selected by a request flag.

    With the flag unset the wrapped unary endpoint answers. With it set, the
    twin's messages are written as Server-Sent Events. Errors before the
    first message are ordinary HTTP errors (the status can still say what
    went wrong); later ones are an error event. A client that goes away
    cancels the call, and so the work behind it.

    Attributes:
        unary: The endpoint that answers when the flag is unset.
        twin: The streaming twin.
        event_encoder: Serializes each streamed message (an event's data).
    """

    __slots__ = (
        "_error_event",
        "_response_headers",
        "_stream",
        "_timeout",
        "event_encoder",
        "twin",
        "unary",
    )

    def __init__(
        self,
        unary: Endpoint,
        twin: StreamTwin,
        encoder: ResponseEncoder,
        *,
        timeout: float | None,
        response_headers: tuple[str, ...],
        error_event: ErrorEvent,
    ) -> None:
        """Creates the StreamTwinEndpoint, unbound.

        Args:
            unary: The endpoint that answers when the flag is unset; its route and
                decoders are this endpoint's.
            twin: The streaming twin.
            encoder: Serializes each streamed message (an event's data).
            timeout: Deadline in seconds of each streaming call; None for none.
            response_headers: Response metadata keys copied to the stream's HTTP
                headers.
            error_event: Builds the event for an error after the stream started.
        """
        super().__init__(unary.route, unary.decoder, unary.form)
        self.unary = unary
        self.twin = twin
        self.event_encoder = encoder
        self._timeout = timeout
        self._response_headers = response_headers
        self._error_event = error_event
        self._stream: grpc.aio.UnaryStreamMultiCallable[Message, Message] | None = None

    @property
    def bound(self) -> bool:
        """Whether both the twin's multicallable and the unary endpoint are bound."""
        return self._stream is not None and self.unary.bound

    def bind(self, channel: grpc.aio.Channel) -> None:
        """Binds the unary endpoint and creates the twin's multicallable on `channel`."""
        self.unary.bind(channel)
        self._stream = channel.unary_stream(
            self.twin.grpc_path,
            request_serializer=None,  # the request comes serialized (`serialize`)
            response_deserializer=_parser(self.twin.response_class),
        )

    def unbind(self) -> None:
        """Unbinds the unary endpoint and drops the twin's multicallable."""
        self.unary.unbind()
        self._stream = None

    def serialize(self, message: Message) -> tuple[Endpoint, bytes]:
        """The twin with its request (`message` in its field) if the flag is set; else `unary`'s.

        The twin's request is written as the field's bytes around the
        message's (protobuf's wire format: tag, length, contents), rather
        than copied into a new message and serialized again.
        """
        twin = self.twin
        if not getattr(message, twin.selector_field):
            return self.unary.serialize(message)
        inner = message.SerializeToString()
        return self, _length_delimited(twin.request_field_number, len(inner)) + inner

    async def respond(
        self, request: web.Request, payload: bytes, metadata: Metadata
    ) -> web.StreamResponse:
        """Streams the twin's messages as Server-Sent Events (`serialize` chose the twin)."""
        twin = self.twin
        if self._stream is None:
            raise _not_running()
        call: Any = self._stream(payload, metadata=metadata, timeout=self._timeout)
        try:
            return await _event_stream(
                request,
                call,
                _received(await call.read()),
                call.read,
                event_field=twin.event_field,
                encoder=self.event_encoder,
                response_headers=self._response_headers,
                error_event=self._error_event,
            )
        finally:
            call.cancel()  # a no-op when the call has finished


async def _event_stream(
    request: web.Request,
    call: Any,
    first: Any,
    read: Callable[[], Awaitable[Any]],
    *,
    event_field: str,
    encoder: ResponseEncoder,
    response_headers: tuple[str, ...],
    error_event: ErrorEvent,
) -> web.StreamResponse:
    """Writes `first` and the events `read` returns (until EOF) as Server-Sent Events.

    The status line goes with the first event; a later error is written as
    an error event, and a client that goes away ends the stream.
    """
    response = web.StreamResponse(
        headers={
            "Content-Type": sse.CONTENT_TYPE,
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # tell nginx-like proxies not to buffer
            **await _response_headers(call, response_headers),
        }
    )
    await response.prepare(request)
    event = first
    try:
        while event is not grpc.aio.EOF:
            name = getattr(event, event_field) if event_field else ""
            await response.write(sse.event_frame(name, encoder.encode(event)))
            event = _received(await read())
    except ConnectionResetError:
        _log.info("client left %s during a stream; cancelling the call", request.path)
        request[GRPC_STATUS] = grpc.StatusCode.CANCELLED.name
        return response
    except Exception as exc:  # the status line is sent: the error becomes an event
        await response.write(error_event(request, exc))
    await response.write_eof()
    return response


class UploadTwinEndpoint(Endpoint):
    """A route whose form bodies are streamed to its upload twin, file parts as they arrive.

    The door holds a piece of a file at a time, never an upload whole. The
    twin's one `response_field` message is answered as the route's JSON; a
    stream of `event_field` messages as Server-Sent Events, as the streaming
    twin's would be. A JSON body is the endpoint's it wraps (`inner`).
    Errors are ordinary HTTP errors until an event is written, as for the
    streaming twin; one the core sends while the form is still arriving
    ends the read there.

    Attributes:
        inner: The endpoint that answers JSON bodies.
        upload: The upload twin.
    """

    __slots__ = (
        "_call",
        "_encoder",
        "_error_event",
        "_event_encoder",
        "_response_headers",
        "_timeout",
        "inner",
        "upload",
    )

    def __init__(
        self,
        inner: Endpoint,
        upload: UploadTwin,
        encoder: ResponseEncoder,
        event_encoder: ResponseEncoder | None,
        *,
        timeout: float | None,
        response_headers: tuple[str, ...],
        error_event: ErrorEvent,
    ) -> None:
        """Creates the UploadTwinEndpoint, unbound.

        Args:
            inner: The endpoint that answers JSON bodies; its route and decoders
                are this endpoint's (it must have a form decoder).
            upload: The upload twin.
            encoder: Serializes the route's response (or its `response_body` field).
            event_encoder: Serializes each streamed event; None without a streaming twin.
            timeout: Deadline in seconds of each call; None for none.
            response_headers: Response metadata keys copied to a stream's HTTP headers.
            error_event: Builds the event for an error after a stream started.
        """
        super().__init__(inner.route, inner.decoder, inner.form)
        self.inner = inner
        self.upload = upload
        self._encoder = encoder
        self._event_encoder = event_encoder
        self._timeout = timeout
        self._response_headers = response_headers
        self._error_event = error_event
        # Messages are written as bytes (`_FileSender`), not as messages.
        self._call: grpc.aio.StreamStreamMultiCallable[bytes, Message] | None = None

    @property
    def bound(self) -> bool:
        """Whether the twin's multicallable and the wrapped endpoint are bound."""
        return self._call is not None and self.inner.bound

    def bind(self, channel: grpc.aio.Channel) -> None:
        """Binds the wrapped endpoint and creates the twin's multicallable on `channel`."""
        self.inner.bind(channel)
        self._call = channel.stream_stream(
            self.upload.grpc_path,
            request_serializer=None,  # messages are written as bytes (`_FileSender`)
            response_deserializer=_parser(self.upload.response_class),
        )

    def unbind(self) -> None:
        """Unbinds the wrapped endpoint and drops the twin's multicallable."""
        self.inner.unbind()
        self._call = None

    def serialize(self, message: Message) -> tuple[Endpoint, bytes]:
        """A JSON body's request: the wrapped endpoint's."""
        return self.inner.serialize(message)

    async def respond(
        self, request: web.Request, payload: bytes, metadata: Metadata
    ) -> web.StreamResponse:
        """A JSON body's answer: the wrapped endpoint's (`serialize` chose it)."""
        return await self.inner.respond(request, payload, metadata)

    async def stream_form(
        self,
        request: web.Request,
        path_vars: Mapping[str, str],
        query: Iterable[tuple[str, str]] | None,
        metadata: Metadata,
        *,
        read_seconds: float,
    ) -> web.StreamResponse:
        """Streams the form body to the twin as it is read, and writes the twin's answer.

        Args:
            request: The HTTP request, its form body not read yet.
            path_vars: Variables bound by the path template.
            query: Query parameters, or None.
            metadata: The gRPC metadata to send.
            read_seconds: The longest the form may take to arrive and be sent
                on (a 408 after it).

        Raises:
            HttpError: The form is malformed or over a limit, or the answer is not
                what the contract says.
            grpc.aio.AioRpcError: The call failed.
        """
        form = self.form
        if self._call is None or form is None:
            raise _not_running()
        upload = self.upload
        call: Any = self._call(metadata=metadata, timeout=self._timeout)
        try:
            try:
                async with asyncio.timeout(read_seconds):
                    sender = _FileSender(call, upload.chunk_field_number)
                    message = await form.decode(
                        request.headers, request.content, path_vars, query, files=sender
                    )
                    inner = message.SerializeToString()
                    del message
                    head = _length_delimited(upload.request_field_number, len(inner))
                    await call.write(head + inner)
                    await call.done_writing()
            except asyncio.InvalidStateError:
                pass  # the core answered before the form was all sent: its status is read next
            except TimeoutError:
                raise door_error(Reason.BODY_TIMEOUT, seconds=f"{read_seconds:g}") from None
            answer = await call.read()  # an error status raises here
            answer = _received(None if answer is grpc.aio.EOF else answer)
            if answer.HasField(upload.response_field):
                body = self._encoder.encode(getattr(answer, upload.response_field))
                # Answered only once the call has ended well: a twin that fails
                # after its answer (or still reads the form) is not cut short.
                if await call.read() is not grpc.aio.EOF:
                    raise _received(None)  # a second answer: not what the contract says
                return web.Response(body=body, content_type=JSON)
            events = self._event_encoder
            if events is None or not answer.HasField(upload.event_field):
                raise _received(None)
            twin = self.route.twin
            return await _event_stream(
                request,
                call,
                getattr(answer, upload.event_field),
                lambda: self._next_event(call),
                event_field="" if twin is None else twin.event_field,
                encoder=events,
                response_headers=self._response_headers,
                error_event=self._error_event,
            )
        finally:
            call.cancel()  # a no-op when the call has finished

    async def _next_event(self, call: Any) -> Any:
        """The twin's next event, EOF, or None (a 502) for a message that is not an event."""
        answer = await call.read()
        if answer is grpc.aio.EOF:
            return answer
        field = self.upload.event_field
        return getattr(answer, field) if answer is not None and answer.HasField(field) else None


class _FileSender:
    """Sends a form's file contents to an upload twin's call, as UploadChunk messages.

    Each message is written as bytes around the piece (tag, length, fields),
    so the piece is copied once, into the message, and never parsed again.
    """

    __slots__ = ("_call", "_tag")

    def __init__(self, call: Any, chunk_field_number: int) -> None:
        self._call = call
        self._tag = chunk_field_number

    async def send(self, field: str, index: int, data: list[bytes], begins: bool) -> None:
        """Writes one piece of the file for `field` at `index` (UploadChunk's fields 1 to 4)."""
        name = field.encode()
        length = sum(len(read) for read in data)
        head = _length_delimited(1, len(name)) + name
        if index:
            head += b"\x10" + _varint(index)
        if begins:
            head += b"\x20\x01"
        head += _length_delimited(3, length)
        outer = _length_delimited(self._tag, len(head) + length)
        await self._call.write(b"".join((outer, head, *data)))


def _length_delimited(field_number: int, length: int) -> bytes:
    """The tag and length that precede `length` bytes of a length-delimited field."""
    return _varint(field_number << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def build_endpoint(
    route: Route,
    marshaler: Marshaler,
    *,
    forms: FormReader,
    timeout: float | None,
    response_headers: tuple[str, ...],
    error_event: ErrorEvent,
) -> Endpoint:
    """The endpoint of `route`, in the response mode its descriptors give.

    Args:
        route: The route.
        marshaler: Owner of the marshaling tables.
        forms: Owner of the form tables (for routes with a body).
        timeout: Deadline in seconds of each gRPC call; None for none.
        response_headers: Response metadata keys copied to HTTP headers on
            raw-body and streaming responses.
        error_event: Builds the event for an error after a stream started.

    Returns:
        The endpoint.

    Raises:
        ValueError: The route's body or response fields do not fit its messages, or
            an upload option of its request is malformed.
    """
    decoder = marshaler.request_decoder(route.request_class, route.body, route.template.variables)
    form = forms.decoder(route.request_class, route.body, decoder) if route.body else None
    unary: Endpoint
    if route.http_body:
        unary = HttpBodyEndpoint(
            route, decoder, timeout=timeout, response_headers=response_headers, form=form
        )
    else:
        encoder = marshaler.response_encoder(route.response_class, route.response_body)
        unary = UnaryEndpoint(route, decoder, encoder, timeout=timeout, form=form)
    endpoint: Endpoint = unary
    event_encoder = None
    if route.twin is not None:
        event_encoder = marshaler.response_encoder(route.twin.response_class)
        endpoint = StreamTwinEndpoint(
            unary,
            route.twin,
            event_encoder,
            timeout=timeout,
            response_headers=response_headers,
            error_event=error_event,
        )
    if route.upload is None or form is None:
        return endpoint
    assert isinstance(unary, UnaryEndpoint)  # routes refuse upload twins on raw-bytes rules
    return UploadTwinEndpoint(
        endpoint,
        route.upload,
        unary.encoder,
        event_encoder,
        timeout=timeout,
        response_headers=response_headers,
        error_event=error_event,
    )
