"""The composition root: builds the core's components and the gRPC server that serves them.

`open_core` is an async context manager: everything it opens (database,
HTTP client session, usage writer, image sweeper) is closed in reverse order
on exit, even when start-up fails half way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import grpc
import prometheus_client
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from aqueduct.admin.v1 import admin_pb2_grpc
from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.admission import Admission
from aqueduct_grpc.accounting.budgets import BudgetLedger
from aqueduct_grpc.accounting.policy_store import PolicyStore
from aqueduct_grpc.accounting.pricing import PriceTable
from aqueduct_grpc.accounting.rate_limits import RateLimiter
from aqueduct_grpc.accounting.usage_journal import UsageJournal
from aqueduct_grpc.accounting.usage_log import UsageLog
from aqueduct_grpc.admin.service import ADMIN_SERVICE, AdminService
from aqueduct_grpc.auth.interceptor import AuthInterceptor
from aqueduct_grpc.auth.tokens import TokenStore
from aqueduct_grpc.config import GatewayConfig
from aqueduct_grpc.error_exit import ErrorExit
from aqueduct_grpc.images.catalog import ModelCatalog
from aqueduct_grpc.images.edit_inputs import MAX_INPUT_IMAGE_BYTES
from aqueduct_grpc.images.image_fetcher import ImageFetcher
from aqueduct_grpc.images.links import ImageLinks, load_signing_key
from aqueduct_grpc.images.model_times import with_created_times
from aqueduct_grpc.images.service import GET_IMAGE_FILE, ImageService
from aqueduct_grpc.observability.interceptor import CallObserver
from aqueduct_grpc.observability.metrics import CoreMetrics
from aqueduct_grpc.storage.changes import ChangeWatcher
from aqueduct_grpc.storage.database import open_engine
from aqueduct_grpc.storage.image_files import (
    FileImageStore,
    ImageStore,
    ImageSweeper,
    open_image_store,
)
from aqueduct_grpc.upstreams.builtin import BuiltinImageBackend
from aqueduct_grpc.upstreams.dispatch import Dispatcher
from aqueduct_grpc.upstreams.openai.backend import OpenAIBackend

__all__ = ["Core", "GrpcServer", "open_core", "start_grpc_server"]

log = logging.getLogger(__name__)

IMAGE_SERVICE = images_pb2.DESCRIPTOR.services_by_name["ImageService"].full_name


@dataclass(frozen=True)
class Core:
    """The core's components, built once at start-up and passed explicitly."""

    config: GatewayConfig
    engine: AsyncEngine
    tokens: TokenStore
    usage: UsageLog
    catalog: ModelCatalog
    dispatcher: Dispatcher
    policies: PolicyStore
    limiter: RateLimiter
    ledger: BudgetLedger
    admission: Admission
    links: ImageLinks
    sweeper: ImageSweeper
    fetcher: ImageFetcher
    metrics: CoreMetrics


@dataclass(frozen=True)
class GrpcServer:
    """A started gRPC server, the port it is bound to, and its health service."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def stop(self, grace: float) -> None:
        """Reports NOT_SERVING, then lets in-flight calls finish for `grace` seconds."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)


@contextlib.asynccontextmanager
async def open_core(
    config: GatewayConfig,
    *,
    database_url: str,
    image_dir: str | os.PathLike[str] | None = None,
    journal_dir: str | os.PathLike[str] | None = None,
) -> AsyncIterator[Core]:
    """Opens the database, the upstream session, the usage writer and the image store.

    Args:
        config: the gateway's configuration.
        database_url: SQLAlchemy async URL.
        image_dir: where images returned by URL are kept, unless the config
            names a store (`gateway.image_store_url`); None (and no config)
            uses a temporary folder removed on exit.
        journal_dir: where the usage journal lives (what a crash would
            otherwise lose is recovered from there at the next start); None
            uses a temporary folder removed on exit.
    """
    async with contextlib.AsyncExitStack() as stack:
        engine = await open_engine(database_url)
        stack.push_async_callback(engine.dispose)
        policies = PolicyStore(engine, cache_seconds=config.token_cache_seconds)
        tokens = TokenStore(engine, cache_seconds=config.token_cache_seconds)
        # Revocations and policy changes made by other replicas or the CLI.
        watcher = ChangeWatcher(engine, [tokens.forget_cached, policies.forget_cached])
        await watcher.start()
        stack.push_async_callback(watcher.close)
        if journal_dir is None:
            journal_dir = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="aqueduct-journal-")
            )
        ledger = BudgetLedger(
            engine,
            PriceTable((m.name, m.prices) for m in config.models),
            policies,
            # A SQLite file is one process's; replicas share a database server.
            shared=engine.dialect.name != "sqlite",
            hold_seconds=_longest_request_seconds(config),
        )
        await ledger.load()  # before the usage log settles what a crash left
        metrics = CoreMetrics()
        usage = UsageLog(
            engine,
            UsageJournal(journal_dir),
            ledger=ledger,
            # SQLite is a local file, like the journal: its journal line makes a row durable.
            answer_after_commit=engine.dialect.name != "sqlite",
            batch_rows=config.usage_flush_rows,
            observe_commit=metrics.usage_commit.observe,
        )
        metrics.watch_usage_queue(lambda: usage.pending_rows)
        await usage.start()
        stack.push_async_callback(usage.close)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.upstream_max_connections),
            # Each call is bounded by the model's timeout and the caller's deadline.
            timeout=aiohttp.ClientTimeout(total=None),
            # Never send our cookies or follow redirects to other hosts implicitly.
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await stack.enter_async_context(session)
        openai_backend = OpenAIBackend(
            session, max_response_bytes=config.max_upstream_response_bytes
        )
        # Its own connections: slow image hosts never take the upstreams' pool.
        fetch_session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16),
            timeout=aiohttp.ClientTimeout(total=None),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        await stack.enter_async_context(fetch_session)
        fetcher = ImageFetcher(
            fetch_session,
            allowed_hosts=config.fetch_image_hosts,
            timeout_seconds=config.fetch_image_timeout_seconds,
            max_image_bytes=MAX_INPUT_IMAGE_BYTES,
            # What one upload request could carry, its own bytes included.
            max_total_bytes=config.max_message_bytes,
        )
        store: ImageStore
        if config.image_store_url is not None:
            store = open_image_store(config.image_store_url)
        else:
            if image_dir is None:
                image_dir = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="aqueduct-images-")
                )
            store = FileImageStore(image_dir)
        links = ImageLinks(
            store,
            key=await load_signing_key(engine, config.image_url_secret),
            ttl_seconds=config.image_url_ttl_seconds,
            public_base_url=config.public_base_url,
            redirect=config.image_redirect == "presigned",
        )
        sweeper = ImageSweeper(store, interval=config.image_sweep_seconds)
        await sweeper.start()
        stack.push_async_callback(sweeper.close)
        limiter = RateLimiter(config.rate_limit_storage)
        stack.push_async_callback(limiter.aclose)
        yield Core(
            config=config,
            engine=engine,
            tokens=tokens,
            usage=usage,
            catalog=ModelCatalog(
                await with_created_times(engine, config.models),
                default_model=config.default_model or config.models[0].name,
            ),
            dispatcher=Dispatcher(
                {
                    "openai": openai_backend,
                    "azure": openai_backend,
                    "builtin": BuiltinImageBackend(),
                }
            ),
            policies=policies,
            limiter=limiter,
            ledger=ledger,
            admission=Admission(
                policies=policies,
                limiter=limiter,
                ledger=ledger,
                default_limits=config.limits,
                default_budgets=config.budgets,
            ),
            links=links,
            sweeper=sweeper,
            fetcher=fetcher,
            metrics=metrics,
        )


STREAM_WINDOW_BYTES = 512 * 1024
"""The bytes of a call's requests gRPC takes in before the service reads them."""


async def start_grpc_server(
    core: Core,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    access_log: bool = True,
    metrics: bool = True,
) -> GrpcServer:
    """Binds and starts the gRPC server; port 0 lets the OS choose.

    Args:
        core: the components.
        host: the address to bind.
        port: the port (0: any free one).
        access_log: whether every call is logged (`aqueduct_grpc.access`).
        metrics: whether every call is counted and timed (`core.metrics`).
    """
    limit = core.config.max_message_bytes
    server = grpc.aio.server(
        # The observer is outermost, so it sees every call end, refused ones too;
        # the error exit is next, so an authentication refusal leaves through it.
        interceptors=[
            CallObserver(
                [IMAGE_SERVICE, ADMIN_SERVICE],
                metrics=core.metrics if metrics else None,
                access_log=access_log,
            ),
            ErrorExit([IMAGE_SERVICE, ADMIN_SERVICE]),
            AuthInterceptor(core.tokens, open_methods=[GET_IMAGE_FILE]),
        ],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            # Each call's flow-control window is fixed at STREAM_WINDOW_BYTES. With
            # BDP probing on, grpc widens windows to megabytes on a fast link and
            # holds that much of every upload in flight before the service reads
            # it; fixed, the bytes buffered per call stay bounded however many
            # callers upload at once. (512 KiB still carries 10 MB/s per call over
            # a 50 ms link; with sixteen 10 MB uploads it held the core at 129-131
            # MB, against 132-145 MB with 1 MiB.)
            ("grpc.http2.bdp_probe", 0),
            ("grpc.http2.lookahead_bytes", STREAM_WINDOW_BYTES),
        ],
    )
    images_pb2_grpc.add_ImageServiceServicer_to_server(
        ImageService(
            catalog=core.catalog,
            admission=core.admission,
            dispatcher=core.dispatcher,
            ledger=core.ledger,
            usage=core.usage,
            links=core.links,
            fetcher=core.fetcher,
            max_upload_bytes=limit,
        ),
        server,
    )
    admin_pb2_grpc.add_AdminServiceServicer_to_server(
        AdminService(
            tokens=core.tokens, policies=core.policies, engine=core.engine, usage=core.usage
        ),
        server,
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [IMAGE_SERVICE, ADMIN_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME], server
    )
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpc's way of saying the port is taken or the host is wrong
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {address} (in use, or not a local address?)")
    await server.start()
    for name in ("", IMAGE_SERVICE):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("gRPC core listening on %s:%d", host, bound)
    return GrpcServer(server=server, port=bound, health=health_servicer)


def serve_metrics(core: Core, host: str, port: int) -> int:
    """Serves the core's metrics (Prometheus text format) on host:port; returns the port.

    prometheus_client's own server, in a daemon thread: scrapes never wait on
    the event loop, and it ends with the process.
    """
    server, _ = prometheus_client.start_http_server(port, addr=host, registry=core.metrics.registry)
    return int(server.server_port)


def _longest_request_seconds(config: GatewayConfig) -> float:
    """An upper bound on how long a request runs: the budget holds' lifetime.

    A model's deployments are tried in turn, each within its timeout; the
    margin covers admission, publishing images and the usage commit.
    """
    return max(sum(d.timeout for d in model.deployments) for model in config.models) + 300.0
