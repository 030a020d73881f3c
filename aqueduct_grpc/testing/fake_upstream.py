"""A fake OpenAI-compatible image API: a real aiohttp server on loopback, for tests and the bench.

In tests::

    async with FakeUpstream(image_bytes=1_500_000) as upstream:
        upstream.plan(Fail(429, retry_after=2), Succeed(delay=0.5))
        ...  # point the gateway at upstream.base_url, call it
        assert upstream.requests[0].headers["Authorization"] == "Bearer sk-upstream"

As a process (for the benchmark)::

    python -m aqueduct_grpc.testing.fake_upstream --port 0 --image-bytes 1500000 --delay 0

prints ``READY port=<port> base_url=http://127.0.0.1:<port>/v1`` on stdout once it listens.

What a request gets is decided by the next planned behaviour (``plan()``), or by ``default``
when nothing is planned. Behaviours are small frozen dataclasses: ``Succeed``, ``Fail``,
``Drop``, ``InvalidJson`` and ``FailMidStream``; each has a ``delay`` in seconds applied
before it acts.

A request with ``"stream": true`` gets Server-Sent Events as OpenAI sends them: for each
image, ``partial_images`` ``image_generation.partial_image`` events, then one
``image_generation.completed`` event (with ``usage``), ``Succeed.event_delay`` seconds apart.
``streaming=False`` makes the fake refuse streaming like a legacy model does.

``POST {base_url}/images/edits`` takes OpenAI's ``multipart/form-data`` edit request; its text
fields land in ``RecordedRequest.form`` and its file parts in ``RecordedRequest.files``. The
planned behaviours apply to it as to generations, ``stream=true`` streams it as
``image_edit.partial_image`` / ``image_edit.completed`` events, and a success echoes the
form's ``n``, ``background``, ``output_format``, ``quality`` and ``size``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import dataclasses
import functools
import io
import json
import random
import signal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal

from aiohttp import BodyPartReader, hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy
from PIL import Image, PngImagePlugin

__all__ = [
    "EDIT_IMAGE_TOKENS",
    "TINY_IMAGE_BYTES",
    "Behaviour",
    "Drop",
    "Fail",
    "FailMidStream",
    "FakeUpstream",
    "InvalidJson",
    "RecordedRequest",
    "Succeed",
    "UploadedFile",
    "png_image",
]

TINY_IMAGE_BYTES = 1_000
"""Default image size: a ~1 KB PNG."""

PNG_INDEX_KEY = "fake-upstream-index"
"""PNG text chunk holding the image's position in the response (0-based)."""

MAX_N = 10

EDIT_IMAGE_TOKENS = 65
"""``usage.input_tokens_details.image_tokens`` an edit reports per uploaded input image."""

# Form fields of an edit that OpenAI reads as integers.
_INT_FIELDS = frozenset({"n", "output_compression", "partial_images"})
# File parts of an edit that are input images (the mask is not counted as one).
_IMAGE_PARTS = frozenset({"image", "image[]"})

ResponseFormat = Literal["b64_json", "url"]
Outcome = Literal[
    "pending", "replied", "streamed", "failed", "dropped", "invalid_json", "cancelled"
]

# (type, code, message) OpenAI sends for each status when the test does not say otherwise.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to use this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    408: ("timeout_error", None, "Request timed out."),
    409: ("invalid_request_error", None, "Conflict."),
    422: ("invalid_request_error", None, "Unprocessable request."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for images per minute."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


@functools.lru_cache(maxsize=64)
def png_image(nbytes: int, index: int) -> bytes:
    """A real PNG of about ``nbytes`` bytes, distinct for each ``index``, and deterministic.

    The pixels are seeded noise, so PNG cannot compress them and the file size follows the
    pixel count. The index is stored in the PNG text chunk ``fake-upstream-index``.

    Args:
        nbytes: Target file size; the result is within about 1 % of it (at least ~100 bytes).
        index: The image's position in a response; also seeds the noise.
    """
    side = max(1, int(((nbytes - 120) / 3) ** 0.5)) if nbytes > 123 else 1
    pixels = random.Random(f"{nbytes}:{index}").randbytes(side * side * 3)
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_INDEX_KEY, str(index))
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(
        out, format="PNG", pnginfo=info, compress_level=1
    )
    return out.getvalue()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Succeed:
    """Reply 200 with an OpenAI ``ImagesResponse`` holding the requested ``n`` images.

    Unset fields fall back to the ``FakeUpstream`` constructor's settings.

    Args:
        delay: Seconds to wait before replying.
        image_bytes: Approximate size of each PNG.
        response_format: ``"b64_json"`` (image bytes inline) or ``"url"`` (legacy; the URL is
            served by the fake itself).
        revised_prompt: Added to every image when set.
        usage: Whether to include the gpt-image-1 ``usage`` block.
        url_root: For ``"url"`` replies, the scheme and host of the URLs (default: the fake's
            own ``root_url``); the fake serves them whatever name they use for it.
        event_delay: For streamed replies, seconds between events.
    """

    delay: float = 0.0
    image_bytes: int | None = None
    response_format: ResponseFormat | None = None
    revised_prompt: str | None = None
    usage: bool | None = None
    url_root: str | None = None
    event_delay: float = 0.0


@dataclasses.dataclass(frozen=True)
class Fail:
    """Reply with an HTTP error status and the OpenAI error envelope.

    Args:
        status: The HTTP status, e.g. 400, 401, 422, 429, 500, 503.
        message: ``error.message``; a typical OpenAI message for the status when unset.
        type: ``error.type``; OpenAI's usual type for the status when unset.
        param: ``error.param`` (JSON null when unset).
        code: ``error.code``; OpenAI's usual code for the status when unset, else null.
        retry_after: Sent as the ``Retry-After`` header (seconds) when set.
        headers: Further response headers.
        delay: Seconds to wait before replying.
    """

    status: int
    _: dataclasses.KW_ONLY
    message: str | None = None
    type: str | None = None
    param: str | None = None
    code: str | None = None
    retry_after: float | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0

    def body(self) -> dict[str, Any]:
        """The OpenAI error envelope ``{"error": {"message", "type", "param", "code"}}``."""
        default_type, default_code, default_message = _ERROR_DEFAULTS.get(
            self.status,
            ("server_error" if self.status >= 500 else "invalid_request_error", None, "Error."),
        )
        return {
            "error": {
                "message": self.message if self.message is not None else default_message,
                "type": self.type if self.type is not None else default_type,
                "param": self.param,
                "code": self.code if self.code is not None else default_code,
            }
        }


@dataclasses.dataclass(frozen=True, kw_only=True)
class Drop:
    """Close the connection without sending any response.

    Args:
        delay: Seconds to wait first.
        reset: Abort with a TCP reset instead of a clean close.
    """

    delay: float = 0.0
    reset: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class InvalidJson:
    """Reply with a body that is not valid JSON (a truncated ImagesResponse by default).

    Args:
        status: The HTTP status to send.
        body: The bytes to send.
        content_type: The ``Content-Type`` to claim.
        delay: Seconds to wait first.
    """

    status: int = 200
    body: bytes = b'{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo'
    content_type: str = "application/json"
    delay: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class FailMidStream:
    """Answer a streaming request with ``after`` events, then an SSE ``error`` event.

    Args:
        after: Events sent before the error (partial images first, as ``Succeed`` would).
        message: ``error.message``.
        type: ``error.type``.
        code: ``error.code``.
        param: ``error.param`` (JSON null when unset).
        error_event: When False, the stream just ends there (cleanly, with no error event
            and no ``completed`` event).
        delay: Seconds to wait first.
    """

    after: int = 1
    message: str = "The image generation failed midway."
    type: str = "server_error"
    code: str | None = "generation_failed"
    param: str | None = None
    error_event: bool = True
    delay: float = 0.0


Behaviour = Succeed | Fail | Drop | InvalidJson | FailMidStream


@dataclasses.dataclass(frozen=True, kw_only=True)
class UploadedFile:
    """One file part of a ``multipart/form-data`` request.

    Attributes:
        name: The form field, e.g. ``image[]`` or ``mask``.
        filename: The file name the client gave, if any.
        content_type: The part's ``Content-Type``, if any.
        data: The file's bytes.
    """

    name: str
    filename: str | None
    content_type: str | None
    data: bytes


@dataclasses.dataclass(kw_only=True)
class RecordedRequest:
    """One request the fake received.

    Attributes:
        method: HTTP method.
        path: URL path, e.g. ``/v1/images/generations``.
        query: Query string parameters.
        headers: Request headers (case-insensitive lookup), including ``Authorization``.
        body: The raw body; empty for a ``multipart/form-data`` one, read part by part into
            ``form`` and ``files``.
        json: The parsed JSON body, or None when it was not valid JSON or was a form.
        form: A form's text fields, in arrival order (one list entry per part).
        files: A form's file parts, in arrival order.
        behaviour: What the fake did with it.
        outcome: ``pending`` while the handler runs, then ``replied``, ``failed``, ``dropped``,
            ``invalid_json``, or ``cancelled`` when the client went away first.
        received_at: ``time.monotonic()`` on arrival.
        reply: The body of a successful reply (see ``reply_json``).
        events: For streamed replies, each event sent (parsed JSON), in order.
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: CIMultiDictProxy[str]
    body: bytes
    json: Any
    form: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    files: list[UploadedFile] = dataclasses.field(default_factory=list)
    behaviour: Behaviour | None = None
    outcome: Outcome = "pending"
    received_at: float = 0.0
    reply: bytes | None = None
    events: list[Any] = dataclasses.field(default_factory=list)

    @property
    def reply_json(self) -> Any:
        """The ImagesResponse JSON the fake answered with (None if it did not reply 200)."""
        return None if self.reply is None else json.loads(self.reply)

    @property
    def authorization(self) -> str | None:
        """The ``Authorization`` header, if any."""
        return self.headers.get("Authorization")


class FakeUpstream:
    """A fake OpenAI image API (``POST {base_url}/images/generations`` and ``/edits``) on loopback.

    Attributes:
        default: The behaviour used when nothing is planned; assign to change it.
        requests: Every ``RecordedRequest`` received, in arrival order.
        file_requests: The paths of image files fetched (``"url"`` replies), in order.
        request_count: Number of requests received (counted even when ``record`` is off).
        outcome_counts: Number of requests settled with each outcome (``"replied"``,
            ``"streamed"``, ``"failed"``…), counted even when ``record`` is off; served with
            ``request_count`` as JSON by ``GET /_stats`` (the benchmark checks the gateway's
            successes against it).
        port: The bound port, after ``start()``.
        base_url: ``http://127.0.0.1:<port>/v1``, after ``start()``.
    """

    def __init__(
        self,
        *,
        image_bytes: int = TINY_IMAGE_BYTES,
        delay: float = 0.0,
        response_format: ResponseFormat = "b64_json",
        revised_prompt: str | None = None,
        usage: bool = True,
        api_key: str | None = None,
        record: bool = True,
        host: str = "127.0.0.1",
        port: int = 0,
        streaming: bool = True,
    ) -> None:
        """Create the fake; it serves only after ``start()``.

        Args:
            image_bytes: Approximate size of each PNG (``TINY_IMAGE_BYTES`` by default;
                1_500_000 for large images).
            delay: Seconds every default reply waits (the default ``Succeed`` behaviour).
            response_format: ``"b64_json"`` or ``"url"`` for default replies.
            revised_prompt: Added to each image of default replies when set.
            usage: Include the gpt-image-1 ``usage`` block in replies.
            api_key: When set, requests without ``Authorization: Bearer <api_key>`` get
                OpenAI's 401 ``invalid_api_key`` error.
            record: Keep every request in ``requests``.
            host: Address to bind; loopback only.
            port: Port to bind; 0 lets the OS choose.
            streaming: Answer ``"stream": true`` with Server-Sent Events; when False, such
                requests get OpenAI's 400 for a model that cannot stream.

        Raises:
            ValueError: ``host`` is not a loopback address.
        """
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"FakeUpstream only binds loopback, not {host!r}")
        self.image_bytes = image_bytes
        self.response_format: ResponseFormat = response_format
        self.revised_prompt = revised_prompt
        self.usage = usage
        self.api_key = api_key
        self.record = record
        self.streaming = streaming
        self.host = host
        self.file_requests: list[str] = []
        self.default: Behaviour = Succeed(delay=delay)
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self.outcome_counts: collections.Counter[str] = collections.Counter()
        self.port = port
        self._planned: collections.deque[Behaviour] = collections.deque()
        self._bodies: dict[tuple[Any, ...], bytes] = {}
        self._changed: asyncio.Event | None = None  # made on start(), inside the loop
        self._runner: web.AppRunner | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind and start serving; sets ``port`` and ``base_url``."""
        if self._runner is not None:
            raise RuntimeError("FakeUpstream already started")
        self._changed = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/images/generations", self._generate)
        app.router.add_post("/images/generations", self._generate)
        app.router.add_post("/v1/images/edits", self._edit)
        app.router.add_post("/images/edits", self._edit)
        app.router.add_get("/files/{nbytes:\\d+}/{index:\\d+}.png", self._file)
        app.router.add_get("/_stats", self._stats)
        # handler_cancellation: a client that goes away cancels the handler, so tests can see
        # that the gateway really cancelled its upstream call (outcome == "cancelled").
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=0.5
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port, backlog=4096)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop serving; requests still waiting on a delay are cancelled."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> FakeUpstream:
        """Start serving (see ``start``) and return the fake."""
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Stop serving (see ``stop``)."""
        await self.stop()

    @property
    def root_url(self) -> str:
        """``http://127.0.0.1:<port>`` (no ``/v1``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url``/``api_base`` to configure: ``http://127.0.0.1:<port>/v1``."""
        return f"{self.root_url}/v1"

    # -- test controls ---------------------------------------------------------------------

    def plan(self, *behaviours: Behaviour) -> None:
        """Queue behaviours for the next requests, one each, in order; then ``default``."""
        self._planned.extend(behaviours)

    @property
    def planned(self) -> tuple[Behaviour, ...]:
        """Behaviours still queued."""
        return tuple(self._planned)

    def reset(self) -> None:
        """Forget recorded requests and queued behaviours (``default`` is kept)."""
        self.requests.clear()
        self.file_requests.clear()
        self.request_count = 0
        self.outcome_counts.clear()
        self._planned.clear()

    def image(self, index: int, image_bytes: int | None = None) -> bytes:
        """The exact PNG bytes the fake returns at position ``index`` of a response."""
        return png_image(image_bytes or self.image_bytes, index)

    def partial_image(self, index: int, step: int) -> bytes:
        """The exact PNG bytes of partial image ``step`` of image ``index`` in a stream."""
        return png_image(max(200, self.image_bytes // 4), 100 + index * 10 + step)

    async def wait_for_requests(self, count: int) -> None:
        """Wait until ``request_count`` reaches ``count`` (wrap in ``asyncio.timeout``)."""
        await self.wait_until(lambda: self.request_count >= count)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Wait until ``predicate()`` is true; it is checked on every arrival and outcome.

        For example ``await upstream.wait_until(lambda: upstream.requests[0].outcome ==
        "cancelled")``. Wrap in ``asyncio.timeout``.
        """
        while not predicate():
            if self._changed is None:
                raise RuntimeError("FakeUpstream not started")
            await self._changed.wait()

    def _signal(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    # -- handlers --------------------------------------------------------------------------

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = None
        record = self._arrived(request, body=raw, json=payload)
        behaviour = await self._behaviour(request, record)
        if isinstance(payload, dict) and payload.get("stream") is True:
            if not self.streaming:
                behaviour = Fail(
                    400,
                    message="Streaming is not supported for this model.",
                    param="stream",
                    code="unsupported_value",
                )
            elif isinstance(behaviour, Succeed | FailMidStream):
                return await self._stream(behaviour, request, payload, record)
        if isinstance(behaviour, FailMidStream):
            behaviour = Fail(400, message="FailMidStream needs a streaming request.")
        return self._act(behaviour, request, payload, record)

    async def _edit(self, request: web.Request) -> web.StreamResponse:
        form: dict[str, list[str]] = {}
        files: list[UploadedFile] = []
        raw = b""
        problem: Fail | None = None
        if request.content_type == "multipart/form-data":
            try:
                await _read_form(request, form, files)
            except ValueError as error:  # aiohttp's errors for a malformed body
                problem = Fail(400, message=f"Could not parse the multipart form: {error}")
        else:
            raw = await request.read()
            problem = Fail(
                400,
                message=f"Invalid Content-Type header ({request.content_type}), expected "
                "multipart/form-data.",
            )
        record = self._arrived(request, body=raw, json=None, form=form, files=files)
        behaviour = await self._behaviour(request, record)
        # The last value of a repeated field counts, as form parsers usually do.
        payload = {name: _form_value(name, values[-1]) for name, values in form.items()}
        image_tokens = EDIT_IMAGE_TOKENS * sum(part.name in _IMAGE_PARTS for part in files)
        if payload.get("stream") == "true" and problem is None:
            if not self.streaming:
                behaviour = Fail(
                    400,
                    message="Streaming is not supported for this model.",
                    param="stream",
                    code="unsupported_value",
                )
            elif isinstance(behaviour, Succeed | FailMidStream):
                return await self._stream(
                    behaviour, request, payload, record, "image_edit", image_tokens
                )
        if isinstance(behaviour, FailMidStream):
            behaviour = Fail(400, message="FailMidStream needs a streaming request.")
        return self._act(
            behaviour,
            request,
            payload,
            record,
            problem=problem,
            image_tokens=image_tokens,
        )

    def _arrived(self, request: web.Request, **fields: Any) -> RecordedRequest:
        """Counts and records the request (``fields`` are its parsed body)."""
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDictProxy(CIMultiDict(request.headers)),
            received_at=time.monotonic(),
            **fields,
        )
        self.request_count += 1
        if self.record:
            self.requests.append(record)
        self._signal()
        return record

    async def _behaviour(self, request: web.Request, record: RecordedRequest) -> Behaviour:
        """What the request gets, after its delay; a bad API key always gets a 401."""
        if self.api_key is not None and request.headers.get("Authorization") != (
            f"Bearer {self.api_key}"
        ):
            behaviour: Behaviour = Fail(401)
        else:
            behaviour = self._planned.popleft() if self._planned else self.default
        record.behaviour = behaviour
        if behaviour.delay > 0:
            try:
                await asyncio.sleep(behaviour.delay)
            except asyncio.CancelledError:
                self._settle(record, "cancelled")
                raise
        return behaviour

    async def _stream(
        self,
        behaviour: Succeed | FailMidStream,
        request: web.Request,
        payload: Any,
        record: RecordedRequest,
        operation: str = "image_generation",
        image_tokens: int = 0,
    ) -> web.StreamResponse:
        problem = _validate(payload)
        if problem is not None:
            self._settle(record, "failed")
            return self._error_response(problem)
        events = self._stream_events(payload, operation, image_tokens)
        event_delay = behaviour.event_delay if isinstance(behaviour, Succeed) else 0.0
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await response.prepare(request)
            for position, event in enumerate(events):
                if isinstance(behaviour, FailMidStream) and position == behaviour.after:
                    error = {
                        "type": "error",
                        "error": {
                            "message": behaviour.message,
                            "type": behaviour.type,
                            "param": behaviour.param,
                            "code": behaviour.code,
                        },
                    }
                    if behaviour.error_event:
                        await response.write(_sse("error", error))
                    await response.write_eof()
                    self._settle(record, "failed")
                    return response
                if position and event_delay > 0:
                    await asyncio.sleep(event_delay)
                await response.write(_sse(event["type"], event))
                record.events.append(event)
                self._signal()
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self._settle(record, "cancelled")
            raise
        self._settle(record, "streamed")
        return response

    def _stream_events(
        self, payload: dict[str, Any], operation: str, image_tokens: int
    ) -> list[dict[str, Any]]:
        """The events of a stream; ``operation`` is ``image_generation`` or ``image_edit``."""
        n = payload.get("n") or 1
        partials = payload.get("partial_images") or 0
        echoed = {
            "background": payload.get("background") or "opaque",
            "output_format": payload.get("output_format") or "png",
            "quality": payload.get("quality") or "low",
            "size": payload.get("size") or "1024x1024",
        }
        text_tokens = len(str(payload.get("prompt", "")).split())
        events: list[dict[str, Any]] = []
        for index in range(n):
            for step in range(partials):
                events.append(
                    {
                        "type": f"{operation}.partial_image",
                        "b64_json": base64.b64encode(self.partial_image(index, step)).decode(),
                        "created_at": int(time.time()),
                        "partial_image_index": step,
                        **echoed,
                    }
                )
            events.append(
                {
                    "type": f"{operation}.completed",
                    "b64_json": base64.b64encode(self.image(index)).decode(),
                    "created_at": int(time.time()),
                    **echoed,
                    "usage": {
                        "input_tokens": text_tokens + image_tokens,
                        "input_tokens_details": {
                            "image_tokens": image_tokens,
                            "text_tokens": text_tokens,
                        },
                        "output_tokens": 272,
                        "total_tokens": text_tokens + image_tokens + 272,
                    },
                }
            )
        return events

    def _act(
        self,
        behaviour: Behaviour,
        request: web.Request,
        payload: Any,
        record: RecordedRequest,
        *,
        problem: Fail | None = None,
        image_tokens: int = 0,
    ) -> web.StreamResponse:
        """Carries out ``behaviour``; a ``Succeed`` gets ``problem`` (default: ``_validate``)."""
        if isinstance(behaviour, Drop):
            self._settle(record, "dropped")
            transport = request.transport
            if transport is not None:
                if behaviour.reset:
                    transport.abort()
                else:
                    transport.close()
            # Nothing can be written any more; aiohttp drops the response quietly.
            raise asyncio.CancelledError
        if isinstance(behaviour, InvalidJson):
            self._settle(record, "invalid_json")
            return web.Response(
                status=behaviour.status,
                body=behaviour.body,
                headers={"Content-Type": behaviour.content_type},
            )
        if isinstance(behaviour, Fail):
            self._settle(record, "failed")
            return self._error_response(behaviour)
        assert isinstance(behaviour, Succeed)

        if problem is None:
            problem = _validate(payload)
        if problem is not None:
            self._settle(record, "failed")
            return self._error_response(problem)
        body = self._images_body(behaviour, payload, image_tokens)
        record.reply = body
        self._settle(record, "replied")
        return web.Response(body=body, content_type="application/json")

    def _settle(self, record: RecordedRequest, outcome: Outcome) -> None:
        record.outcome = outcome
        self.outcome_counts[outcome] += 1
        self._signal()

    @staticmethod
    def _error_response(fail: Fail) -> web.Response:
        headers = dict(fail.headers)
        if fail.retry_after is not None:
            retry = fail.retry_after
            headers["Retry-After"] = str(int(retry) if float(retry).is_integer() else retry)
        return web.Response(
            status=fail.status,
            body=json.dumps(fail.body()).encode(),
            content_type="application/json",
            headers=headers,
        )

    def _images_body(
        self, succeed: Succeed, payload: dict[str, Any], image_tokens: int = 0
    ) -> bytes:
        image_bytes = succeed.image_bytes or self.image_bytes
        response_format = succeed.response_format or self.response_format
        revised_prompt = succeed.revised_prompt or self.revised_prompt
        usage = self.usage if succeed.usage is None else succeed.usage
        url_root = succeed.url_root or self.root_url
        n = payload.get("n") or 1
        echoed = tuple(
            json.dumps(payload.get(k), sort_keys=True)
            for k in ("background", "output_format", "quality", "size", "safety_identifier", "svg")
        )
        text_tokens = len(str(payload.get("prompt", "")).split())
        key = (
            n,
            image_bytes,
            response_format,
            revised_prompt,
            usage,
            echoed,
            text_tokens,
            url_root,
            image_tokens,
        )
        body = self._bodies.get(key)
        if body is None:
            body = self._build_body(
                n=n,
                image_bytes=image_bytes,
                response_format=response_format,
                revised_prompt=revised_prompt,
                usage=usage,
                payload=payload,
                text_tokens=text_tokens,
                url_root=url_root,
                image_tokens=image_tokens,
            )
            if len(self._bodies) >= 64:
                self._bodies.clear()
            self._bodies[key] = body
        return body

    def _build_body(
        self,
        *,
        n: int,
        image_bytes: int,
        response_format: ResponseFormat,
        revised_prompt: str | None,
        usage: bool,
        payload: dict[str, Any],
        text_tokens: int,
        url_root: str,
        image_tokens: int = 0,
    ) -> bytes:
        data: list[dict[str, Any]] = []
        for index in range(n):
            item: dict[str, Any]
            if response_format == "url":
                item = {"url": f"{url_root}/files/{image_bytes}/{index}.png"}
            else:
                item = {"b64_json": base64.b64encode(png_image(image_bytes, index)).decode()}
            if revised_prompt is not None:
                item["revised_prompt"] = revised_prompt
            data.append(item)
        response: dict[str, Any] = {"created": int(time.time()), "data": data}
        # gpt-image-1 reports these; echo what was asked, or its defaults.
        response["background"] = payload.get("background") or "opaque"
        response["output_format"] = payload.get("output_format") or "png"
        response["quality"] = payload.get("quality") or "low"
        response["size"] = payload.get("size") or "1024x1024"
        if payload.get("safety_identifier") is not None:
            response["safety_identifier"] = payload["safety_identifier"]
        svg = payload.get("svg")
        if isinstance(svg, dict):
            # What drawing the SVG cost, as OpenAI reports it for output_format "svg".
            response["svg_usage"] = {
                "input_tokens": text_tokens,
                "model": str(svg.get("model")),
                "output_tokens": 120,
                "reasoning_tokens": 30,
                "total_tokens": text_tokens + 120,
            }
        if usage:
            output_tokens = 272 * n
            input_tokens = text_tokens + image_tokens
            response["usage"] = {
                "input_tokens": input_tokens,
                "input_tokens_details": {
                    "image_tokens": image_tokens,
                    "text_tokens": text_tokens,
                },
                "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens,
            }
        return json.dumps(response, separators=(",", ":")).encode()

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": self.request_count, "outcomes": dict(self.outcome_counts)}
        )

    async def _file(self, request: web.Request) -> web.Response:
        self.file_requests.append(request.path)
        self._signal()
        nbytes = int(request.match_info["nbytes"])
        index = int(request.match_info["index"])
        if not 0 < nbytes <= 64 * 1024 * 1024 or index >= MAX_N:
            raise web.HTTPNotFound()
        return web.Response(body=png_image(nbytes, index), content_type="image/png")


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _read_form(
    request: web.Request, form: dict[str, list[str]], files: list[UploadedFile]
) -> None:
    """Reads a ``multipart/form-data`` body part by part into ``form`` and ``files``.

    Raises:
        ValueError: The body is not a well-formed form.
    """
    reader = await request.multipart()
    async for part in reader:
        if not isinstance(part, BodyPartReader) or not part.name:
            raise ValueError("every part must be a named form field")
        if part.filename is None:
            form.setdefault(part.name, []).append(await part.text())
        else:
            data = bytes(await part.read())
            files.append(
                UploadedFile(
                    name=part.name,
                    filename=part.filename,
                    content_type=part.headers.get(hdrs.CONTENT_TYPE),
                    data=data,
                )
            )


def _form_value(name: str, value: str) -> Any:
    """A form field as the JSON body would carry it: integers parsed, else the text."""
    if name in _INT_FIELDS:
        with contextlib.suppress(ValueError):
            return int(value)
    return value


def _validate(payload: Any) -> Fail | None:
    """The 400 OpenAI would send for a malformed request, or None."""
    if not isinstance(payload, dict):
        return Fail(400, message="We could not parse the JSON body of your request.")
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        return Fail(400, message="Missing required parameter: 'prompt'.", param="prompt")
    n = payload.get("n", 1)
    if n is None:
        n = 1
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
        return Fail(
            400,
            message=f"Invalid value for 'n': expected an integer from 1 to {MAX_N}.",
            param="n",
            code="invalid_value",
        )
    return None


# -- standalone process ------------------------------------------------------------------------


async def _serve(args: argparse.Namespace) -> None:
    upstream = FakeUpstream(
        image_bytes=args.image_bytes,
        delay=args.delay,
        api_key=args.api_key,
        record=False,
        host=args.host,
        port=args.port,
    )
    # Build the common bodies before accepting load so the first requests are not slow.
    for n in range(1, MAX_N + 1):
        upstream.image(n - 1)
    await upstream.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY port={upstream.port} base_url={upstream.base_url}", flush=True)
    try:
        await stop.wait()
    finally:
        await upstream.stop()
        print(f"served {upstream.request_count} requests", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    """Run the fake upstream as a process until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m aqueduct_grpc.testing.fake_upstream", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    parser.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    parser.add_argument("--image-bytes", type=int, default=TINY_IMAGE_BYTES)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each reply")
    parser.add_argument("--api-key", default=None, help="require this bearer key")
    args = parser.parse_args(argv)
    runner_factory: Any = None
    with contextlib.suppress(ImportError):
        import uvloop

        runner_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=runner_factory) as runner:
        runner.run(_serve(args))


if __name__ == "__main__":
    main()
