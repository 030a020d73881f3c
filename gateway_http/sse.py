"""Server-Sent Events framing for server-streaming methods.

Each streamed message is one event: an optional `event:` line (the value of
the field the method's streaming_twin option names) and one `data:` line
holding the message's JSON, which is compact and so never spans lines. An
error after the stream started cannot change the HTTP status any more: it
is sent as an `error` event carrying the same OpenAI error envelope as an
HTTP error body, which is what OpenAI's SDKs raise from.
"""

from __future__ import annotations

from gateway_http.errors import ApiError

__all__ = ["CONTENT_TYPE", "error_frame", "event_frame"]

CONTENT_TYPE = "text/event-stream"


def event_frame(name: str, data: bytes) -> bytes:
    """One event; `name` may be empty (an unnamed `message` event)."""
    if name:
        # A name is a single line by construction: drop anything that is not.
        clean = name.replace("\r", "").replace("\n", "")
        return b"event: " + clean.encode("utf-8") + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"


def error_frame(error: ApiError) -> bytes:
    """The `error` event for a failure after the stream started."""
    return event_frame("error", error.body())
