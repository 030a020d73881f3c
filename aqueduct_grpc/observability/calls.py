"""One RPC as the access log and the metrics see it, and where its handlers add to it.

`CallObserver` opens a `CallRecord` for every call and closes it when the
call ends. The code that learns something on the way notes it here (the
service its usage row, the backend its upstream's status and time), so
that the log line and the metrics are made in one place, once.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from aqueduct_grpc.accounting.usage_record import UsageRecord

__all__ = ["REQUEST_ID_KEY", "CallRecord", "current_call", "current_request_id"]

REQUEST_ID_KEY = "x-request-id"
"""The metadata key (and HTTP header) of a request's id, in and out."""


@dataclass
class CallRecord:
    """What one call did, filled in as it runs."""

    request_id: str
    method: str
    # The usage row of an image request (model, images, cost, error reason).
    usage: UsageRecord | None = None
    # The last upstream call's HTTP status and seconds (None: none was made).
    upstream_status: int | None = None
    upstream_seconds: float | None = None
    upstream_host: str | None = None
    # Bytes of images stored for response_format url.
    stored_bytes: int = 0
    # W3C trace context from the caller, passed on to the upstream as it came.
    trace_headers: dict[str, str] = field(default_factory=dict)
    # The call's server span, when tracing is on (`tracing`).
    span: Span | None = None

    def upstream_answered(self, host: str, status: int, seconds: float) -> None:
        """Notes an upstream call (the last one counts, after failovers)."""
        self.upstream_host, self.upstream_status, self.upstream_seconds = host, status, seconds


_call: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar(
    "aqueduct_call", default=None
)


def current_call() -> CallRecord | None:
    """The record of the call being handled; None outside one (e.g. in a unit test)."""
    return _call.get()


def current_request_id() -> str | None:
    """The id of the call being handled, if any."""
    call = _call.get()
    return None if call is None else call.request_id


def open_call(record: CallRecord) -> contextvars.Token[CallRecord | None]:
    """Makes `record` the current call's (until `close_call`)."""
    return _call.set(record)


def close_call(token: contextvars.Token[CallRecord | None]) -> None:
    """Ends `open_call`."""
    _call.reset(token)
