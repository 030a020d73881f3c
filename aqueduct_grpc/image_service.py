"""The ImageService handlers: resolve the model, check the request, dispatch, account."""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.auth import current_token
from aqueduct_grpc.dispatch import Dispatcher
from aqueduct_grpc.errors import GatewayError
from aqueduct_grpc.image_request import upstream_body, validate
from aqueduct_grpc.model_catalog import ModelCatalog
from aqueduct_grpc.usage import UsageRecord, UsageRecorder

__all__ = ["ImageService"]

log = logging.getLogger(__name__)

_INTERNAL = GatewayError(
    grpc.StatusCode.INTERNAL, "The gateway failed to handle the request.", reason="INTERNAL_ERROR"
)


class ImageService(images_pb2_grpc.ImageServiceServicer):
    """Serves aqueduct.images.v1.ImageService."""

    def __init__(
        self, *, catalog: ModelCatalog, dispatcher: Dispatcher, usage: UsageRecorder
    ) -> None:
        """Args:
        catalog: resolves model names and checks token access.
        dispatcher: sends requests to the model's upstreams.
        usage: receives one row per request.
        """
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._usage = usage

    async def GenerateImages(
        self, request: images_pb2.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GenerateImagesResponse:
        token = current_token()
        started = time.perf_counter()
        row = UsageRecord(
            created_at=time.time(),
            token_id=token.id,
            requested_model=request.model if request.HasField("model") else None,
            n=request.n if request.HasField("n") else 1,
            size=request.size if request.HasField("size") else None,
            quality=request.quality if request.HasField("quality") else None,
            end_user=request.user if request.HasField("user") else None,
            safety_identifier=(
                request.safety_identifier if request.HasField("safety_identifier") else None
            ),
        )
        try:
            model = self._catalog.resolve(row.requested_model, token)
            row.model = model.name
            validate(request, model)
            remaining = context.time_remaining()
            deadline = None if remaining is None else time.monotonic() + remaining
            response = await self._dispatcher.generate(
                model, lambda upstream_model: upstream_body(request, upstream_model), deadline
            )
            _account(row, response)
            return response
        except GatewayError as error:
            row.status, row.error_reason, row.http_status = (
                error.code.name,
                error.reason,
                error.http_status,
            )
            await context.abort_with_status(error.to_status())
        except grpc.aio.AbortError:
            raise
        except Exception:
            row.status, row.error_reason = _INTERNAL.code.name, _INTERNAL.reason
            log.exception("GenerateImages failed")
            await context.abort_with_status(_INTERNAL.to_status())
        except BaseException:
            # Cancelled by the caller (disconnect or deadline) — still accounted.
            row.status, row.error_reason = grpc.StatusCode.CANCELLED.name, "CANCELLED"
            raise
        finally:
            row.latency_ms = (time.perf_counter() - started) * 1000
            self._usage.record(row)
        raise AssertionError("unreachable")  # abort_with_status always raises

    async def ListModels(
        self, request: images_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.ListModelsResponse:
        token = current_token()
        response = images_pb2.ListModelsResponse(object="list")
        for model in self._catalog.visible(token):
            response.data.add(
                id=model.name, object="model", created=model.created, owned_by=model.owned_by
            )
        return response


def _account(row: UsageRecord, response: Any) -> None:
    row.images = len(response.data)
    if response.HasField("usage"):
        row.input_tokens = response.usage.input_tokens
        row.output_tokens = response.usage.output_tokens
        row.total_tokens = response.usage.total_tokens
