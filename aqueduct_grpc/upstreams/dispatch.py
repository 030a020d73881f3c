"""Sends a resolved request to one of its model's deployments.

Deployments of a model are used in turn; when one cannot be reached (or
answers 502/503) the next one is tried, within the same deadline. A stream
fails over only before its first event: after that the caller has seen part
of an answer, and the error is theirs to see.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Protocol

import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment, ModelConfig
from aqueduct_grpc.errors import GatewayError

__all__ = ["Dispatcher", "ImageBackend"]

_DEADLINE_PASSED = GatewayError(
    grpc.StatusCode.DEADLINE_EXCEEDED,
    "The request's deadline passed before an upstream could answer.",
    reason="DEADLINE_EXCEEDED",
)


class ImageBackend(Protocol):
    """Something that turns an OpenAI request body into images."""

    async def generate(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> images_pb2.GenerateImagesResponse: ...

    def stream(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]: ...


class Dispatcher:
    """Picks a deployment and the backend for its provider."""

    def __init__(self, backends: dict[str, ImageBackend]) -> None:
        """Args:
        backends: the backend for each provider ("openai", "azure", "builtin").
        """
        self._backends = backends
        self._turns: dict[str, itertools.count[int]] = {}

    async def generate(
        self,
        model: ModelConfig,
        body_for: Any,
        deadline: float | None,
    ) -> images_pb2.GenerateImagesResponse:
        """Generates with `model`.

        Args:
            model: the resolved model.
            body_for: called with a deployment's upstream model name, returns the body.
            deadline: monotonic time by which the caller needs the answer, or None.
        """
        last_error: GatewayError | None = None
        for deployment, timeout in self._attempts(model, deadline):
            backend = self._backends[deployment.provider]
            try:
                return await backend.generate(
                    deployment, body_for(deployment.upstream_model), timeout
                )
            except GatewayError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = error
        raise last_error or _DEADLINE_PASSED

    async def stream(
        self, model: ModelConfig, body_for: Any, deadline: float | None
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]:
        """Streams from `model`; arguments as for `generate`."""
        last_error: GatewayError | None = None
        for deployment, timeout in self._attempts(model, deadline):
            backend = self._backends[deployment.provider]
            started = False
            try:
                async for event in backend.stream(
                    deployment, body_for(deployment.upstream_model), timeout
                ):
                    started = True
                    yield event
                return
            except GatewayError as error:
                if started or error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = error
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
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    return
            yield deployment, timeout
