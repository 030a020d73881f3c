"""The door's Prometheus metrics, and `/metrics` to scrape them.

Requests are counted and timed by route template (a bounded set, unlike
paths), method and HTTP status, in a middleware, so every answer counts:
errors, streams (timed to their end) and refusals alike. Several door
processes sharing one port (`--reuse-port`) each answer some scrapes: with
`PROMETHEUS_MULTIPROC_DIR` set in their environment, prometheus_client keeps
every process's values in files there, and any process's `/metrics` reports
them all, summed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from gateway_http.access_log import ROUTE

__all__ = ["LATENCY_BUCKETS", "METRICS_PATH", "Children", "DoorMetrics"]

# 1 ms to 300 s: a model listing to the slowest image call.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 300.0,
)  # fmt: skip
_UNMATCHED = "unmatched"  # the route label of requests no route took (404s)
METRICS_PATH = "/metrics"
_CATCH_ALL = "/{tail}"  # the transcoder's route, which labels its requests itself (ROUTE)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Children:
    """A labelled metric's children, found by their label values without a lock.

    `metric.labels(...)` takes a lock and rebuilds the key on every call,
    which costs as much as the update itself; here each child is looked up
    once. Labels are bounded sets, so the cache is too.
    """

    def __init__(self, metric: Any) -> None:
        """Caches the children of `metric` (a Counter, Gauge or Histogram with labels)."""
        self._metric = metric
        self._known: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        """The child for `values`, in the metric's label order."""
        child = self._known.get(values)
        if child is None:
            child = self._known[values] = self._metric.labels(*values)
        return child


class DoorMetrics:
    """The door's metrics, and what serves them."""

    def __init__(self, waiting_uploads: Callable[[], int]) -> None:
        """Creates the metrics (shared through files when `PROMETHEUS_MULTIPROC_DIR` is set).

        Args:
            waiting_uploads: how many uploads wait for the body budget now.
        """
        self._shared = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        # In multi-process mode the values live in files, not in a registry.
        registry = None if self._shared else CollectorRegistry()
        self._registry = registry
        self.requests = Counter(
            "gateway_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "gateway_http_request_duration_seconds",
            "Time to answer an HTTP request (streams: to their end), by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "gateway_http_requests_in_flight",
            "HTTP requests being answered.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._requests = Children(self.requests)
        self._duration = Children(self.duration)
        if not self._shared:  # a callback cannot be summed across processes
            waiting = Gauge(
                "gateway_http_uploads_waiting",
                "Uploads waiting for the door's budget of body bytes.",
                registry=registry,
            )
            waiting.set_function(waiting_uploads)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Counts and times every request (`/metrics` itself too)."""
        started = time.perf_counter()
        self.in_flight.inc()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            self.in_flight.dec()
            route = request.get(ROUTE) or _route_label(request)
            self._requests(route, request.method, str(status)).inc()
            self._duration(route).observe(time.perf_counter() - started)

    async def scrape(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the text exposition format."""
        registry = self._registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


def _route_label(request: web.Request) -> str:
    """The aiohttp route a request took (`/healthz`, a static folder), else `unmatched`."""
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    return canonical if canonical and canonical != _CATCH_ALL else _UNMATCHED
