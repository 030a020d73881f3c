"""The door's Prometheus metrics, and `/metrics` to scrape them.

Requests are counted and timed by route template (a bounded set, unlike
paths), method and HTTP status when aiohttp has finished each one (the
access-log hook, `gateway_http.access_log`), so every answer counts: errors,
streams (timed to their end) and refusals alike. Being in that hook rather
than a middleware matters on the hot path: aiohttp runs a middleware as two
more layers around every handler. Several door
processes sharing one port (`--reuse-port`) each answer some scrapes: with
`PROMETHEUS_MULTIPROC_DIR` set in their environment, prometheus_client keeps
every process's values in files there, and any process's `/metrics` reports
them all, summed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
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

__all__ = ["DOOR_METRICS", "LATENCY_BUCKETS", "METRICS_PATH", "Children", "DoorMetrics"]

# 1 ms to 300 s: a model listing to the slowest image call.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 300.0,
)  # fmt: skip
_UNMATCHED = "unmatched"  # the route label of requests no route took (404s)
# The method label: any other token a client sends is "other", or each would be a series.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_OTHER = "other"
METRICS_PATH = "/metrics"
_CATCH_ALL = "/{tail}"  # the transcoder's route, which labels its requests itself (ROUTE)


class Children:
    """A labelled metric's children, found by their label values without a lock.

    `metric.labels(...)` takes a lock and rebuilds the key on every call,
    which costs as much as the update itself; here each child is looked up
    once. Labels are bounded sets (methods, routes, codes, configured
    models), so the cache is too.
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

    def __init__(self, waiting_uploads: Callable[[], int], in_flight: Callable[[], int]) -> None:
        """Creates the metrics (shared through files when `PROMETHEUS_MULTIPROC_DIR` is set).

        Args:
            waiting_uploads: how many uploads wait for the body budget now.
            in_flight: how many API requests are being answered now.
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
        self._requests = Children(self.requests)
        self._duration = Children(self.duration)
        if not self._shared:  # a callback cannot be summed across processes
            for name, what, value in (
                ("gateway_http_requests_in_flight", "API requests being answered.", in_flight),
                (
                    "gateway_http_uploads_waiting",
                    "Uploads waiting for the door's budget of body bytes.",
                    waiting_uploads,
                ),
            ):
                Gauge(name, what, registry=registry).set_function(value)

    def request_done(self, request: web.BaseRequest, status: int, seconds: float) -> None:
        """Counts and times a finished request (`/metrics` itself too)."""
        route = request.get(ROUTE) or _route_label(request)
        method = request.method if request.method in _METHODS else _OTHER
        self._requests(route, method, str(status)).inc()
        self._duration(route).observe(seconds)

    async def scrape(self, request: web.Request) -> web.Response:
        """`GET /metrics`: the text exposition format."""
        registry = self._registry
        if registry is None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response


DOOR_METRICS = web.AppKey("door_metrics", DoorMetrics)
"""The app's metrics, when it counts (what the access-log hook reports to)."""


def _route_label(request: web.BaseRequest) -> str:
    """The aiohttp route a request took (`/healthz`, a static folder), else `unmatched`."""
    try:
        resource = request.match_info.route.resource  # type: ignore[attr-defined]
    except (AttributeError, AssertionError):
        # Refused by aiohttp's parser, before any routing: aiohttp asserts it
        # has a match (or, under -O, has None).
        return _UNMATCHED
    canonical = resource.canonical if resource is not None else ""
    return canonical if canonical and canonical != _CATCH_ALL else _UNMATCHED
