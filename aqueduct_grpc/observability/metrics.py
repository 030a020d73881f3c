"""The core's Prometheus metrics, in a registry of their own (served on `--metrics-port`).

Names follow Prometheus' conventions: a `aqueduct_` prefix, base units
(`_seconds`, `_bytes`, `_usd`), `_total` for counters. Labels are bounded
sets (methods, configured model names, gRPC codes, reason codes): never a
token, a prompt or a caller's text. Latency is split the way an operator
asks about it: the whole call, the upstream's part, and what the gateway
added on top.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from aqueduct_grpc.observability.calls import CallRecord

# The door's buckets, 1 ms to 300 s: both doors' latencies read on one scale.
from gateway_http.metrics import LATENCY_BUCKETS, Children

__all__ = ["CoreMetrics"]

# Reason codes that are the caller's limits or budgets saying no.
REFUSALS = frozenset(
    {"RATE_LIMITED", "IMAGE_RATE_LIMITED", "INSUFFICIENT_QUOTA", "TOO_MANY_REQUESTS"}
)


class CoreMetrics:
    """Every metric of the core, registered in `registry`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        """Creates the metrics in `registry` (a new one by default)."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "aqueduct_requests",
            "Calls answered, by method, resolved model and gRPC status code.",
            ["method", "model", "code"],
            registry=r,
        )
        self.duration = Histogram(
            "aqueduct_request_duration_seconds",
            "Time to answer a call, whole (streams: until their last event).",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.added = Histogram(
            "aqueduct_gateway_added_duration_seconds",
            "Time a call spent in the gateway, outside the upstream call.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_duration = Histogram(
            "aqueduct_upstream_duration_seconds",
            "Time the upstream took to answer, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "aqueduct_requests_in_flight", "Calls being handled.", ["method"], registry=r
        )
        self.upstream_errors = Counter(
            "aqueduct_upstream_errors",
            "Upstream failures, by model and kind (the reason code callers see).",
            ["model", "kind"],
            registry=r,
        )
        self.refusals = Counter(
            "aqueduct_limit_refusals",
            "Requests refused by a rate limit or budget, by reason code.",
            ["reason"],
            registry=r,
        )
        self.images = Counter(
            "aqueduct_images",
            "Images returned, by model and operation.",
            ["model", "operation"],
            registry=r,
        )
        self.cost = Counter(
            "aqueduct_cost_usd", "What answered requests cost, by model.", ["model"], registry=r
        )
        self.usage_commit = Histogram(
            "aqueduct_usage_commit_duration_seconds",
            "Time to commit one batch of usage rows.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.images_stored = Counter(
            "aqueduct_image_store_written_bytes",
            "Bytes of images stored for response_format url.",
            registry=r,
        )
        self._requests = Children(self.requests)
        self._duration = Children(self.duration)
        self._added = Children(self.added)
        self._upstream_duration = Children(self.upstream_duration)
        self._in_flight = Children(self.in_flight)
        self._upstream_errors = Children(self.upstream_errors)
        self._refusals = Children(self.refusals)
        self._images = Children(self.images)
        self._cost = Children(self.cost)

    def call_started(self, method: str) -> None:
        """Counts a call of `method` in flight."""
        self._in_flight(method).inc()

    def call_ended(self, call: CallRecord, code: str, seconds: float) -> None:
        """Counts and times a call that ended with `code` after `seconds`."""
        method, row = call.method, call.usage
        # Only a resolved (configured) name: a caller's text would make a series per request.
        model = (row.model or "") if row is not None else ""
        self._in_flight(method).dec()
        self._requests(method, model, code).inc()
        self._duration(method).observe(seconds)
        upstream = call.upstream_seconds
        self._added(method).observe(max(0.0, seconds - (upstream or 0.0)))
        if upstream is not None:
            self._upstream_duration(model).observe(upstream)
        if call.stored_bytes:
            self.images_stored.inc(call.stored_bytes)
        if row is None:
            return
        reason = row.error_reason
        if reason is not None and reason.startswith("UPSTREAM"):
            self._upstream_errors(model, reason).inc()
        if reason in REFUSALS:
            self._refusals(reason).inc()
        if row.images:
            self._images(model, row.operation).inc(row.images)
        if row.cost:
            self._cost(model).inc(row.cost)

    def watch_usage_queue(self, depth: Callable[[], int]) -> None:
        """Reports `depth()` (usage rows not yet committed) at each scrape."""
        gauge = Gauge(
            "aqueduct_usage_queue_rows",
            "Usage rows waiting for their database commit.",
            registry=self.registry,
        )
        gauge.set_function(depth)
