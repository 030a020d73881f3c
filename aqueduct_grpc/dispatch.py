"""Sends a resolved request to one of its model's deployments.

Deployments of a model are used in turn; when one cannot be reached (or
answers 502/503) the next one is tried, within the same deadline.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Protocol

import grpc

from aqueduct.images.v1 import images_pb2
from aqueduct_grpc.config import Deployment, ModelConfig
from aqueduct_grpc.errors import GatewayError

__all__ = ["Dispatcher", "ImageBackend"]


class ImageBackend(Protocol):
    """Something that turns an OpenAI request body into images."""

    async def generate(
        self, deployment: Deployment, body: dict[str, Any], timeout: float
    ) -> images_pb2.GenerateImagesResponse: ...


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
        deployments = model.deployments
        start = next(self._turns.setdefault(model.name, itertools.count())) % len(deployments)
        last_error: GatewayError | None = None
        for offset in range(len(deployments)):
            deployment = deployments[(start + offset) % len(deployments)]
            timeout = deployment.timeout
            if deadline is not None:
                timeout = min(timeout, deadline - time.monotonic())
                if timeout <= 0:
                    break
            backend = self._backends[deployment.provider]
            try:
                return await backend.generate(
                    deployment, body_for(deployment.upstream_model), timeout
                )
            except GatewayError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE:
                    raise
                last_error = error
        if last_error is not None:
            raise last_error
        raise GatewayError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "The request's deadline passed before an upstream could answer.",
            reason="DEADLINE_EXCEEDED",
        )
