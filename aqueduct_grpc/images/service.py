"""The ImageService handlers: resolve, validate, admit, dispatch, account.

Each generation or edit reads as the business it does: the model is resolved and the
request validated, then `Admission.admit` charges limits and holds budget,
the dispatcher calls a typed backend, and the finished request is priced and
its usage row recorded, whatever the outcome. Images asked for by URL are
stored and signed by `ImageLinks`; GetImageFile serves them back (the signed
URL is its credential, so it needs no token). Errors are raised, never
aborted here: `error_exit` turns them into statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.api import httpbody_pb2

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.admission import Admission
from aqueduct_grpc.accounting.budgets import BudgetLedger
from aqueduct_grpc.accounting.usage_log import UsageLog
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.auth.interceptor import current_token
from aqueduct_grpc.auth.tokens import Token
from aqueduct_grpc.config import ModelConfig
from aqueduct_grpc.errors import INTERNAL_ERROR, GatewayError
from aqueduct_grpc.images.catalog import ModelCatalog
from aqueduct_grpc.images.edit_inputs import Edit, Uploads, decode_inputs
from aqueduct_grpc.images.image_fetcher import ImageFetcher
from aqueduct_grpc.images.links import ImageLinks
from aqueduct_grpc.images.uploaded_files import UploadedFiles, receive_upload
from aqueduct_grpc.images.validation import storable, validate
from aqueduct_grpc.observability.calls import current_call
from aqueduct_grpc.observability.tracing import step
from aqueduct_grpc.upstreams.dispatch import Dispatcher
from aqueduct_grpc.upstreams.openai.wire import COMPLETED, EDIT_COMPLETED

__all__ = ["GET_IMAGE_FILE", "ImageService"]

GET_IMAGE_FILE = "/{}/GetImageFile".format(
    images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name
)
"""The gRPC path of GetImageFile, which the auth interceptor lets through."""

log = logging.getLogger(__name__)


class ImageService(images_pb2_grpc.ImageServiceServicer):
    """Serves aqueduct.images.v1.ImageService."""

    def __init__(
        self,
        *,
        catalog: ModelCatalog,
        admission: Admission,
        dispatcher: Dispatcher,
        ledger: BudgetLedger,
        usage: UsageLog,
        links: ImageLinks,
        fetcher: ImageFetcher,
        max_upload_bytes: int,
    ) -> None:
        """Creates the ImageService.

        Args:
            catalog: resolves model names and checks token access.
            admission: admits a request within its limits and budgets.
            dispatcher: sends requests to the model's upstreams.
            ledger: prices each finished request.
            usage: receives one row per request.
            links: stores images returned by URL and serves them back.
            fetcher: fetches edits' http(s) image URLs from the hosts allowed.
            max_upload_bytes: the most bytes one UploadEditImages call may send
                (what one unary request may carry).
        """
        self._catalog = catalog
        self._admission = admission
        self._dispatcher = dispatcher
        self._ledger = ledger
        self._usage = usage
        self._links = links
        self._fetcher = fetcher
        self._max_upload_bytes = max_upload_bytes

    async def GenerateImages(
        self, request: images_pb2.GenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GenerateImagesResponse:
        """Generates images: one answer with all of them."""
        return await self._answer(request, context, self._dispatcher.generate)

    async def EditImages(
        self, request: images_pb2.EditImagesRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.EditImagesResponse:
        """Edits images: one answer with all of them."""
        return await self._answer(request, context, self._dispatcher.edit)

    async def StreamGenerateImages(
        self, request: images_pb2.StreamGenerateImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.StreamGenerateImagesResponse]:
        """Generates images as a stream of partial and completed images."""
        async for event in self._streamed(
            request.request, context, self._dispatcher.stream, COMPLETED
        ):
            yield event

    async def StreamEditImages(
        self, request: images_pb2.StreamEditImagesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[images_pb2.StreamEditImagesResponse]:
        """Edits images as a stream of partial and completed images."""
        async for event in self._streamed(
            request.request, context, self._dispatcher.stream_edit, EDIT_COMPLETED
        ):
            yield event

    async def UploadEditImages(
        self,
        request_iterator: AsyncIterable[images_pb2.UploadEditImagesRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[images_pb2.UploadEditImagesResponse]:
        """Edits images sent in pieces: one answer, or (`stream`) the edit's events.

        The files are spooled as they arrive (`uploaded_files`) and deleted
        when the call ends.
        """
        with UploadedFiles(max_total_bytes=self._max_upload_bytes) as files:
            request = await self._received(request_iterator, files, context)
            if request.stream:
                async for event in self._streamed(
                    request, context, self._dispatcher.stream_edit, EDIT_COMPLETED, files.files
                ):
                    yield images_pb2.UploadEditImagesResponse(event=event)
            else:
                response = await self._answer(request, context, self._dispatcher.edit, files.files)
                yield images_pb2.UploadEditImagesResponse(response=response)

    async def _received(
        self,
        messages: AsyncIterable[images_pb2.UploadEditImagesRequest],
        files: UploadedFiles,
        context: grpc.aio.ServicerContext,
    ) -> images_pb2.EditImagesRequest:
        """An upload's request, its files in `files`; a refusal as they arrive is accounted.

        A caller that leaves before its request arrived asked for nothing and
        was answered nothing: that is not accounted. gRPC may end the stream
        of a cancelled call as if it were complete, so it is told apart here.
        """
        try:
            return await receive_upload(messages, files)
        except GatewayError:
            if context.cancelled():
                raise asyncio.CancelledError from None
            # Refused before its parameters arrived: a row without them.
            async with self._accounted(_usage_row(current_token(), images_pb2.EditImagesRequest())):
                raise

    async def _answer(
        self,
        request: Any,
        context: grpc.aio.ServicerContext,
        call: Callable[..., Awaitable[Any]],
        uploads: Uploads | None = None,
    ) -> Any:
        """A generation or an edit: resolve, validate, admit, `call` the upstream, account."""
        token = current_token()
        row = _usage_row(token, request)
        async with self._accounted(row):
            model = await self._resolved(request, token, row, streaming=False)
            edit = self._checked(request, uploads)
            base_url = None
            if request.response_format == "url":
                # Known before the upstream is paid for: a caller whose URL
                # cannot be built gets its error at once.
                base_url = self._links.base_url(context.invocation_metadata())
            await self._admitted(token, model, row)
            subject = await self._fetched(request, edit, uploads)
            response = await call(model, subject, _deadline(context))
            _account(row, response)
            if base_url is not None:
                with step("image_store"):
                    urls = await asyncio.gather(
                        *(self._links.publish(image.b64_json, base_url) for image in response.data)
                    )
                observed = current_call()
                if observed is not None:
                    observed.stored_bytes += sum(len(image.b64_json) for image in response.data)
                for image, url in zip(response.data, urls, strict=True):
                    image.url = url
                    image.ClearField("b64_json")
        return response

    async def _streamed(
        self,
        inner: Any,
        context: grpc.aio.ServicerContext,
        stream: Callable[..., AsyncIterator[Any]],
        completed_type: str,
        uploads: Uploads | None = None,
    ) -> AsyncIterator[Any]:
        """A streamed generation or edit: its events, the last once its row is durable."""
        token = current_token()
        row = _usage_row(token, inner)
        # One usage row per stream, however it ends; a caller that goes away
        # cancels the upstream call with us, and what was streamed is accounted.
        last = None
        try:
            async with self._accounted(row):
                model = await self._resolved(inner, token, row, streaming=True)
                edit = self._checked(inner, uploads)
                await self._admitted(token, model, row)
                subject = await self._fetched(inner, edit, uploads)
                expected, completed = row.n or 1, 0
                async for event in stream(model, subject, _deadline(context)):
                    if last is not None:
                        yield last  # the upstream sent more than it was asked for
                        last = None
                    if event.type == completed_type:
                        _account_completed(row, event)
                        # OpenAI's completed event always has usage (its SDK's
                        # types require it): zeros when the upstream sent
                        # none, which the row keeps as unknown (just counted).
                        event.usage.input_tokens_details.SetInParent()
                        completed += 1
                        if completed >= expected:
                            # The final image leaves only once its row is durable.
                            last = event
                            continue
                    yield event
        except Exception:
            if last is not None:
                yield last  # counted in the row: delivered before the error
            raise
        if last is not None:
            yield last

    async def _resolved(
        self,
        request: images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest,
        token: Token,
        row: UsageRecord,
        *,
        streaming: bool,
    ) -> ModelConfig:
        """The model the request names, once the request is known to be valid for it."""
        model = self._catalog.resolve(row.requested_model, token)
        row.model = model.name
        validate(request, model, streaming=streaming)
        return model

    def _checked(self, request: Any, uploads: Uploads | None) -> Edit | None:
        """An edit with its images checked, before admission; None for anything else.

        A request refused for its images costs its caller no limit. One that
        names image URLs is None here too: they are fetched and checked once
        admitted (`_fetched`).
        """
        if isinstance(request, images_pb2.EditImagesRequest) and not self._fetcher.wants(request):
            return decode_inputs(request, uploads)
        return None

    async def _fetched(self, request: Any, edit: Edit | None, uploads: Uploads | None) -> Any:
        """What the dispatcher takes: a generation's request, or the checked `Edit`.

        An edit's image URLs are fetched here, after admission: the caller's
        limits bound what it can make the gateway fetch.
        """
        if edit is not None or not isinstance(request, images_pb2.EditImagesRequest):
            return edit or request
        uploaded = sum(size for _, size in (uploads or {}).values())
        with step("fetch_images"):
            await self._fetcher.fetch_inputs(request, uploaded)
        return decode_inputs(request, uploads)

    async def _admitted(self, token: Token, model: ModelConfig, row: UsageRecord) -> None:
        """Admits a resolved, valid request within its limits and budgets."""
        with step("admission"):
            reservation = await self._admission.admit(
                token,
                model.name,
                weight=model.limit_weight,
                n=row.n or 1,
                size=row.size,
                quality=row.quality,
                request_key=row.request_key,
            )
        # Known now, so that if this process dies mid-request the row it
        # leaves behind is charged what the request was going to cost.
        self._usage.admitted(row, team_id=reservation.team_id, estimate=reservation.estimate)

    @contextlib.asynccontextmanager
    async def _accounted(
        self, row: UsageRecord, *, wait_for_commit: bool = True
    ) -> AsyncIterator[None]:
        """Runs a request: notes how it ended, prices it, then commits its usage row.

        The request is journaled from its start and its answer leaves only
        after its row is committed, so no crash can lose an answered request.
        The commit also settles the request's budget hold into the spend, so
        at no moment does neither the hold nor the cost count against a budget.
        """
        started = time.perf_counter()
        call = current_call()
        if call is not None:
            call.usage = row  # what the access log and the metrics report of the request
        self._usage.begin(row)
        try:
            yield
        except GatewayError as error:
            row.status, row.error_reason = error.code.name, error.reason
            row.http_status = error.http_status
            raise
        except Exception:
            row.status, row.error_reason = INTERNAL_ERROR.code.name, INTERNAL_ERROR.reason
            raise
        except BaseException:
            # Cancelled by the caller (disconnect or deadline): still accounted.
            row.status, row.error_reason = grpc.StatusCode.CANCELLED.name, "CANCELLED"
            raise
        finally:
            row.latency_ms = (time.perf_counter() - started) * 1000
            try:
                self._ledger.charge(row)  # the money: the row's team and cost
            except Exception:
                # The answer stands; its row is kept, without a cost.
                log.exception("could not price a usage row; it is recorded without cost")
            with step("usage_commit"):
                await self._usage.commit(row, wait=wait_for_commit)

    async def GetImageFile(
        self, request: images_pb2.GetImageFileRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GetImageFileResponse:
        """The bytes behind a signed image URL, or a redirect to the store's presigned URL.

        A redirect is an empty body with `location` and `x-http-status: 302`
        metadata, which the HTTP door turns into the redirect itself.
        """
        # The bytes behind a URL never change; caches may keep them until expiry.
        max_age = self._links.max_age(request.name)
        cache = ("cache-control", f"private, max-age={max_age}, immutable")
        location = await self._links.redirect(request.name, request.signature)
        if location is not None:
            # Briefly: a presigned URL can die before the image (its signing
            # credentials may be temporary), and a cached redirect with it.
            short = ("cache-control", f"private, max-age={min(max_age, 60)}")
            await context.send_initial_metadata(
                (short, ("location", location), ("x-http-status", "302"))
            )
            return images_pb2.GetImageFileResponse(file=httpbody_pb2.HttpBody())
        data, content_type = await self._links.open(request.name, request.signature)
        await context.send_initial_metadata((cache,))
        return images_pb2.GetImageFileResponse(
            file=httpbody_pb2.HttpBody(content_type=content_type, data=data)
        )

    async def ListModels(
        self, request: images_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.ListModelsResponse:
        """The models this caller may use (a usage row of its own: `list_models`)."""
        token = current_token()
        # Nothing is charged for a listing: its answer need not wait for the commit.
        async with self._accounted(_listing_row(token, "list_models", None), wait_for_commit=False):
            return images_pb2.ListModelsResponse(
                object="list", data=[_model(m) for m in self._catalog.visible(token)]
            )

    async def GetModel(
        self, request: images_pb2.GetModelRequest, context: grpc.aio.ServicerContext
    ) -> images_pb2.GetModelResponse:
        """One model the caller may use, by name or alias (NOT_FOUND as for a request)."""
        token = current_token()
        row = _listing_row(token, "get_model", storable(request.model, "requested_model"))
        async with self._accounted(row, wait_for_commit=False):
            model = self._catalog.resolve(request.model, token)
            row.model = model.name
            return images_pb2.GetModelResponse(model=_model(model))


def _model(model: ModelConfig) -> images_pb2.Model:
    return images_pb2.Model(
        id=model.name, object="model", created=model.created or 0, owned_by=model.owned_by
    )


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The caller's deadline as a monotonic time, or None when it set none."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def _usage_row(
    token: Token, request: images_pb2.GenerateImagesRequest | images_pb2.EditImagesRequest
) -> UsageRecord:
    def kept(field: str, column: str) -> str | None:
        # The row is made before the request is validated, and a refused
        # request is accounted too: so no more than its column holds.
        return storable(getattr(request, field), column) if request.HasField(field) else None

    call = current_call()
    return UsageRecord(
        created_at=time.time(),
        request_id=None if call is None else call.request_id,
        token_id=token.id,
        requested_model=kept("model", "requested_model"),
        n=request.n if request.HasField("n") else 1,
        size=kept("size", "size"),
        quality=kept("quality", "quality"),
        end_user=kept("user", "end_user"),
        safety_identifier=kept("safety_identifier", "safety_identifier"),
        operation="edit" if isinstance(request, images_pb2.EditImagesRequest) else "generate",
    )


def _listing_row(token: Token, operation: str, requested_model: str | None) -> UsageRecord:
    """The usage row of a model listing: no images, no cost, but counted like any call."""
    call = current_call()
    return UsageRecord(
        created_at=time.time(),
        request_id=None if call is None else call.request_id,
        token_id=token.id,
        requested_model=requested_model,
        n=None,
        operation=operation,
    )


def _account_completed(
    row: UsageRecord,
    event: images_pb2.StreamGenerateImagesResponse | images_pb2.StreamEditImagesResponse,
) -> None:
    row.images += 1
    if event.HasField("usage"):
        row.input_tokens = (row.input_tokens or 0) + event.usage.input_tokens
        row.output_tokens = (row.output_tokens or 0) + event.usage.output_tokens
        row.total_tokens = (row.total_tokens or 0) + event.usage.total_tokens


def _account(
    row: UsageRecord, response: images_pb2.GenerateImagesResponse | images_pb2.EditImagesResponse
) -> None:
    row.images = len(response.data)
    if response.HasField("usage"):
        row.input_tokens = response.usage.input_tokens
        row.output_tokens = response.usage.output_tokens
        row.total_tokens = response.usage.total_tokens
