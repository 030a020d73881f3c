"""The ImageService handlers: resolve the model, check the request, dispatch, account.

Images asked for by URL are stored and signed by `ImageLinks`; GetImageFile
serves them back (the signed URL is its credential, so it needs no token).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.api import httpbody_pb2

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.usage_log import UsageRecord, UsageRecorder
from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.auth.tokens import Token
from aqueduct_grpc.errors import INTERNAL_ERROR, GatewayError
from aqueduct_grpc.images.catalog import ModelCatalog
from aqueduct_grpc.images.links import ImageLinks
from aqueduct_grpc.images.validation import upstream_body, validate
from aqueduct_grpc.upstreams.dispatch import Dispatcher

__all__ = ["GET_IMAGE_FILE", "ImageService"]

GET_IMAGE_FILE = "/{}/GetImageFile".format(
    images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name
)
"""The gRPC path of GetImageFile, which the auth interceptor lets through."""

COMPLETED = "image_generation.completed"

log = logging.getLogger(__name__)


class ImageService(images_pb2_grpc.ImageServiceServicer):
    """Serves aqueduct.images.v1.ImageService."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        dispatcher: Dispatcher,
        usage: UsageRecorder,
        links: ImageLinks,
    ) -> None:
        """Args:
        catalog: resolves model names and checks token access.
        dispatcher: sends requests to the model's upstreams.
        usage: receives one row per request.
        links: stores images returned by URL and serves them back.
        """
        self._catalog = catalog
        self._dispatcher = dispatcher
        self._usage = usage
        self._links = links

    async def GenerateImages(
        self, request: images_pb2.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GenerateImagesResponse:
        token = current_token()
        row = _usage_row(token, request)
        async with self._accounted(row, context):
            model = self._catalog.resolve(row.requested_model, token)
            row.model = model.name
            validate(request, model)
            base_url = None
            if request.response_format == "url":
                # Known before the upstream is paid for: a caller whose URL
                # cannot be built gets its error at once.
                base_url = self._links.base_url(context.invocation_metadata())
            response = await self._dispatcher.generate(
                model,
                lambda upstream_model: upstream_body(request, upstream_model),
                _deadline(context),
            )
            _account(row, response)
            if base_url is not None:
                urls = await asyncio.gather(
                    *(self._links.publish(image.b64_json, base_url) for image in response.data)
                )
                for image, url in zip(response.data, urls, strict=True):
                    image.url = url
                    image.ClearField("b64_json")
            return response
        raise AssertionError("unreachable")  # _accounted aborts the call on every error

    async def StreamGenerateImages(
        self, request: images_pb2.StreamGenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]:
        inner = request.request
        token = current_token()
        row = _usage_row(token, inner)
        # One usage row per stream, however it ends; a caller that goes away
        # cancels the upstream call with us, and what was streamed is accounted.
        async with self._accounted(row, context):
            model = self._catalog.resolve(row.requested_model, token)
            row.model = model.name
            validate(inner, model, streaming=True)
            events = self._dispatcher.stream(
                model,
                lambda upstream_model: upstream_body(inner, upstream_model, streaming=True),
                _deadline(context),
            )
            async for event in events:
                if event.type == COMPLETED:
                    _account_completed(row, event)
                yield event

    @contextlib.asynccontextmanager
    async def _accounted(
        self, row: UsageRecord, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[None]:
        """Runs a generation: turns its errors into statuses and records its usage row."""
        started = time.perf_counter()
        try:
            yield
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
            row.status, row.error_reason = INTERNAL_ERROR.code.name, INTERNAL_ERROR.reason
            log.exception("image generation failed")
            await context.abort_with_status(INTERNAL_ERROR.to_status())
        except BaseException:
            # Cancelled by the caller (disconnect or deadline): still accounted.
            row.status, row.error_reason = grpc.StatusCode.CANCELLED.name, "CANCELLED"
            raise
        finally:
            row.latency_ms = (time.perf_counter() - started) * 1000
            self._usage.record(row)

    async def GetImageFile(
        self, request: images_pb2.GetImageFileRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GetImageFileResponse:
        try:
            data, content_type = await self._links.open(request.name, request.signature)
        except GatewayError as error:
            await context.abort_with_status(error.to_status())
        # The bytes behind a URL never change; caches may keep them until expiry.
        max_age = self._links.max_age(request.name)
        await context.send_initial_metadata(
            (("cache-control", f"private, max-age={max_age}, immutable"),)
        )
        return images_pb2.GetImageFileResponse(
            file=httpbody_pb2.HttpBody(content_type=content_type, data=data)
        )

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


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a monotonic time, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _usage_row(token: Token, request: images_pb2.GenerateImagesRequest) -> UsageRecord:
    return UsageRecord(
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


def _account_completed(row: UsageRecord, event: images_pb2.StreamGenerateImagesResponse) -> None:
    row.images += 1
    if event.HasField("usage"):
        row.input_tokens = (row.input_tokens or 0) + event.usage.input_tokens
        row.output_tokens = (row.output_tokens or 0) + event.usage.output_tokens
        row.total_tokens = (row.total_tokens or 0) + event.usage.total_tokens


def _account(row: UsageRecord, response: Any) -> None:
    row.images = len(response.data)
    if response.HasField("usage"):
        row.input_tokens = response.usage.input_tokens
        row.output_tokens = response.usage.output_tokens
        row.total_tokens = response.usage.total_tokens
