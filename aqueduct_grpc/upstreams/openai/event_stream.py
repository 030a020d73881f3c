"""Reads Server-Sent Events from a byte stream (an upstream's streaming answer)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass

__all__ = ["ServerSentEvent", "read_events"]


@dataclass(frozen=True)
class ServerSentEvent:
    """One event: its `event:` name ("message" when none) and its joined `data:` lines."""

    event: str
    data: str


async def read_events(
    chunks: AsyncIterable[bytes], *, max_event_bytes: int
) -> AsyncIterator[ServerSentEvent]:
    """Yields each event as soon as its closing blank line arrives.

    Raises ValueError when one event grows past `max_event_bytes` (a
    misbehaving upstream must not make us buffer without bound).
    """
    # One growing buffer, searched only where new bytes arrived: a multi-MB
    # event in small chunks stays linear (re-splitting it per chunk was not).
    buffer = bytearray()
    searched = 0
    for_event: list[bytes] = []
    size = 0
    async for chunk in chunks:
        buffer += chunk
        while (newline := buffer.find(b"\n", searched)) >= 0:
            line = bytes(buffer[:newline]).rstrip(b"\r")
            del buffer[: newline + 1]
            searched = 0
            if line:
                size += len(line)
                if size > max_event_bytes:
                    raise ValueError("a Server-Sent Event is larger than the gateway accepts")
                for_event.append(line)
                continue
            event = _parse(for_event)
            for_event, size = [], 0
            if event is not None:
                yield event
        searched = len(buffer)
        if size + len(buffer) > max_event_bytes:
            raise ValueError("a Server-Sent Event is larger than the gateway accepts")
    if buffer:
        for_event.append(bytes(buffer))
    event = _parse(for_event)
    if event is not None:
        yield event


def _parse(lines: list[bytes]) -> ServerSentEvent | None:
    name = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            continue  # a comment (keep-alive)
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            name = value
        elif field == "data":
            data.append(value)
    if not data:
        return None
    return ServerSentEvent(event=name, data="\n".join(data))
