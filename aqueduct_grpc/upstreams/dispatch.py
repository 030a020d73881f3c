"""Sends a validated request to one of its model's deployments, within its time.

Deployments of a model are used in turn; when one cannot be reached (or
answers 502/503) the next one is tried, within the same deadline. A stream
fails over only before its first event: after that the caller has seen part
of an answer, and the error is theirs to see.

Time is bounded here, for every backend alike: each call by the smaller of
the deployment's timeout and what is left of the caller's deadline. A stream
bounds each wait for its next event by one deadline rather than wrapping the
whole generator, whose `yield` would let the timeout fire while our consumer
is being awaited, outside this frame.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import Protocol, TypeVar

import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment, ModelConfig
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.image_formats import sniff_image_type
from aqueduct_grpc.images.edit_inputs import Edit
from aqueduct_grpc.upstreams.openai.wire import EDIT_EVENTS, GENERATION_EVENTS, StreamEvents

__all__ = ["Dispatcher", "ImageBackend"]

_Answer = TypeVar("_Answer", images_pb2.GenerateImagesResponse, images_pb2.EditImagesResponse)
_Event = TypeVar(
    "_Event", images_pb2.StreamGenerateImagesResponse, images_pb2.StreamEditImagesResponse
)

_DEADLINE_MARGIN_SECONDS = 0.05

_DEADLINE_PASSED = GatewayError(
    grpc.StatusCode.DEADLINE_EXCEEDED,
    "The request's deadline passed before an upstream could answer.",
    reason="DEADLINE_EXCEEDED",
)


class ImageBackend(Protocol):
    """An upstream kind: turns a typed image request into typed images.

    Backends raise `GatewayError` for what the caller should see; they do not
    bound their own time (the dispatcher does, and cancels them).
    """

    async def generate(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> images_pb2.GenerateImagesResponse:
        """The images for `request` from `deployment`."""
        ...

    def stream(
        self, request: images_pb2.GenerateImagesRequest, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamGenerateImagesResponse, None]:
        """The events for `request` from `deployment`, as they come."""
        ...

    async def edit(self, edit: Edit, deployment: Deployment) -> images_pb2.EditImagesResponse:
        """The edited images for `edit` (its images checked) from `deployment`."""
        ...

    def stream_edit(
        self, edit: Edit, deployment: Deployment
    ) -> AsyncGenerator[images_pb2.StreamEditImagesResponse, None]:
        """The events of `edit` from `deployment`, as they come."""
        ...


class Dispatcher:
    """Picks a deployment and the backend for its provider."""

    def __init__(self, backends: dict[str, ImageBackend]) -> None:
        """Creates the Dispatcher.

        Args:
            backends: the backend for each provider ("openai", "azure", "builtin").
        """
        self._backends = backends
        self._turns: dict[str, itertools.count[int]] = {}

    async def generate(
        self,
        model: ModelConfig,
        request: images_pb2.GenerateImagesRequest,
        deadline: float | None,
    ) -> images_pb2.GenerateImagesResponse:
        """Generates with `model`.

        Args:
            model: the resolved model.
            request: the validated request.
            deadline: monotonic time by which the caller needs the answer, or None.
        """
        return await self._unary(
            model, deadline, lambda backend, deployment: backend.generate(request, deployment)
        )

    async def edit(
        self,
        model: ModelConfig,
        edit: Edit,
        deadline: float | None,
    ) -> images_pb2.EditImagesResponse:
        """Edits with `model`; arguments as for `generate` (the images already checked)."""
        return await self._unary(
            model, deadline, lambda backend, deployment: backend.edit(edit, deployment)
        )

    async def _unary(
        self,
        model: ModelConfig,
        deadline: float | None,
        call: Callable[[ImageBackend, Deployment], Awaitable[_Answer]],
    ) -> _Answer:
        """`call` on each deployment in turn, within its time, until one answers."""
        last_error: GatewayError | None = None
        for deployment, timeout in self._attempts(model, deadline):
            backend = self._backends[deployment.provider]
            bound = asyncio.timeout(timeout)
            try:
                async with bound:
                    return await call(backend, deployment)
            except TimeoutError:
                if not bound.expired():
                    raise  # the backend's own, a bug: not the caller's timeout
                raise _timed_out(f"did not answer within {timeout:.1f} s") from None
            except GatewayError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = error
        raise last_error or _DEADLINE_PASSED

    def stream(
        self,
        model: ModelConfig,
        request: images_pb2.GenerateImagesRequest,
        deadline: float | None,
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]:
        """Streams from `model`; arguments as for `generate`."""
        return self._streamed(
            model,
            deadline,
            GENERATION_EVENTS,
            unary=lambda: self.generate(model, request, deadline),
            opened=lambda backend, deployment: backend.stream(request, deployment),
        )

    def stream_edit(
        self,
        model: ModelConfig,
        edit: Edit,
        deadline: float | None,
    ) -> AsyncIterator[images_pb2.StreamEditImagesResponse]:
        """Streams an edit from `model`; arguments as for `edit`."""
        return self._streamed(
            model,
            deadline,
            EDIT_EVENTS,
            unary=lambda: self.edit(model, edit, deadline),
            opened=lambda backend, deployment: backend.stream_edit(edit, deployment),
        )

    async def _streamed(
        self,
        model: ModelConfig,
        deadline: float | None,
        events: StreamEvents[_Event],
        *,
        unary: Callable[[], Awaitable[_Answer]],
        opened: Callable[[ImageBackend, Deployment], AsyncGenerator[_Event, None]],
    ) -> AsyncIterator[_Event]:
        """The events of `opened` on each deployment in turn, until one streams.

        A model whose upstream does not stream is called once, `unary`, and
        its images come as completed events (no partials): callers need not
        know which models stream.
        """
        if not model.supports_streaming:
            for completed in _completed_events(await unary(), events):
                yield completed
            return
        loop = asyncio.get_running_loop()
        last_error: GatewayError | None = None
        for deployment, timeout in self._attempts(model, deadline):
            stream = opened(self._backends[deployment.provider], deployment)
            ends_at = loop.time() + timeout
            started = False
            try:
                while True:
                    bound = asyncio.timeout_at(ends_at)
                    try:
                        async with bound:
                            event = await anext(stream, None)
                    except TimeoutError:
                        if not bound.expired():
                            raise
                        raise _timed_out(
                            f"did not finish streaming within {timeout:.1f} s"
                        ) from None
                    if event is None:
                        return
                    started = True
                    yield event
            except GatewayError as error:
                if started or error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = error
            finally:
                await stream.aclose()
        raise last_error or _DEADLINE_PASSED

    def _attempts(
        self, model: ModelConfig, deadline: float | None
    ) -> Iterator[tuple[Deployment, float]]:
        """Each deployment in turn with its timeout, until the deadline passes."""
        deployments = model.deployments
        start = next(self._turns.setdefault(model.name, itertools.count())) % len(deployments)
        for offset in range(len(deployments)):
            deployment = deployments[(start + offset) % len(deployments)]
            timeout = deployment.timeout
            if deadline is not None:
                # A little before the caller's deadline: the core then answers
                # (and accounts) the timeout itself, rather than racing gRPC's
                # cancellation of the call at the deadline.
                timeout = min(timeout, deadline - time.monotonic() - _DEADLINE_MARGIN_SECONDS)
                if timeout <= 0:
                    return
            yield deployment, timeout


def _completed_events(
    response: images_pb2.GenerateImagesResponse | images_pb2.EditImagesResponse,
    events: StreamEvents[_Event],
) -> list[_Event]:
    """A unary answer as the completed events a stream of it would end with.

    The answer's usage covers all its images: it goes on the last event, so
    that adding up the events' usage counts it once.
    """
    # An event always has these four (OpenAI's schema requires them): "auto"
    # where the answer did not say, and the format the image's bytes are.
    completed = [
        events.message(
            type=events.completed,
            b64_json=image.b64_json,
            created_at=response.created,
            size=response.size or "auto",
            quality=response.quality or "auto",
            background=response.background or "auto",
            output_format=response.output_format or _format_of(image.b64_json),
        )
        for image in response.data
    ]
    if completed and response.HasField("usage"):
        completed[-1].usage.CopyFrom(response.usage)
    if completed and response.HasField("safety_identifier"):
        completed[-1].safety_identifier = response.safety_identifier
    return completed


def _format_of(image: bytes) -> str:
    """The image's format as OpenAI names it (`png`, `jpeg`, `webp`); `png` if unknown."""
    try:
        return sniff_image_type(image)
    except ValueError:
        return "png"


def _timed_out(what: str) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.DEADLINE_EXCEEDED, f"The upstream {what}.", reason="UPSTREAM_TIMEOUT"
    )
