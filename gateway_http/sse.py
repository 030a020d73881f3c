"""Server-Sent Events framing for server-streaming methods.

Each streamed message is one event: an optional `event:` line (the value of
the field the method's streaming_twin option names) and one `data:` line
holding the message's JSON, which is compact and so never spans lines. An
error after the stream started cannot change the HTTP status any more: it is
sent as an event too, named and shaped by the dialect
(`Dialect.stream_error_event`, data: the same body as an HTTP error).
"""

from __future__ import annotations

__all__ = ["CONTENT_TYPE", "event_frame"]

CONTENT_TYPE = "text/event-stream"


def event_frame(name: str, data: bytes) -> bytes:
    """One event; `name` may be empty (an unnamed `message` event).

    Args:
        name: The event's name.
        data: The event's data: one line (compact JSON).

    Returns:
        The framed event, blank line included.
    """
    if name:
        # A name is a single line by construction: drop anything that is not.
        clean = name.replace("\r", "").replace("\n", "")
        return b"event: " + clean.encode("utf-8") + b"\ndata: " + data + b"\n\n"
    return b"data: " + data + b"\n\n"
