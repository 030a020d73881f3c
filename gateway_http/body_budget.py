"""How many request-body bytes the door holds at once: large bodies wait their turn.

A large body is held whole in the door while it is decoded, encoded for gRPC
and answered (a unary call holds its message), so sixteen 10 MB bodies at
once would make the process hold several copies of 160 MB. (A form streamed
to an upload twin is not held, and claims nothing here.) Past the budget a
request waits, in arrival order, before its body is read: the bytes stay in
the client's socket, and the client simply sees a slower answer. The door
bounds both the wait and the body's arrival while it is held, so one slow
(or hostile) client cannot keep every upload waiting.

Small bodies (JSON requests) never wait: they are what a loaded door serves
most, and they cost it little. A body of unknown length (chunked) claims the
door's body limit, the most it may carry. A claim larger than the budget
waits until nothing else is held, so every body the door accepts can run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

__all__ = ["SMALL_BODY_BYTES", "BodyBudget", "WaitedTooLong"]

SMALL_BODY_BYTES = 256 * 1024
"""Bodies up to this size are not counted: they never wait."""


class WaitedTooLong(Exception):
    """The body's bytes were not granted within the wait allowed."""


class BodyBudget:
    """A byte count shared by the requests in flight, granted first come, first served."""

    def __init__(self, limit: int) -> None:
        """Creates the BodyBudget.

        Args:
            limit: The bytes of large bodies held at once.
        """
        self.limit = limit
        self.held_bytes = 0
        self._waiting: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    @property
    def waiting(self) -> int:
        """How many requests wait for their bytes."""
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def holding(
        self, length: int | None, max_body_bytes: int, wait_seconds: float | None = None
    ) -> AsyncIterator[bool]:
        """Holds the bytes of one body while the block runs (after waiting for them).

        Yields whether the body is a large one (counted). Raises `WaitedTooLong`
        when `wait_seconds` pass before the bytes are granted.

        Args:
            length: The body's Content-Length; None when it is not known.
            max_body_bytes: What a body of unknown length may grow to.
            wait_seconds: The longest wait for the bytes; None: no limit.
        """
        size = max_body_bytes if length is None else length
        if size <= SMALL_BODY_BYTES:
            yield False
            return
        claim = min(size, self.limit)
        try:
            async with asyncio.timeout(wait_seconds):
                await self._acquire(claim)
        except TimeoutError:
            raise WaitedTooLong from None
        try:
            yield True
        finally:
            self._release(claim)

    async def _acquire(self, claim: int) -> None:
        if not self._waiting and self.held_bytes + claim <= self.limit:
            self.held_bytes += claim
            return
        granted = asyncio.get_running_loop().create_future()
        entry = (claim, granted)
        self._waiting.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(claim)  # granted as the caller went away
            else:
                self._waiting.remove(entry)
                self._grant()  # a large claim may have kept smaller ones waiting
            raise

    def _release(self, claim: int) -> None:
        self.held_bytes -= claim
        self._grant()

    def _grant(self) -> None:
        """Grants waiting claims in order, while the head fits."""
        while self._waiting:
            claim, granted = self._waiting[0]
            if self.held_bytes + claim > self.limit:
                return
            self._waiting.popleft()
            self.held_bytes += claim
            granted.set_result(None)
