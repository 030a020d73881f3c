"""`serve`'s HTTP door processes: started, known to listen, watched, and stopped.

Each door is a `gateway-http` child process. `serve` relays its stdout and
reads there the line in which it announces the address it listens on, so
that nothing is said to be serving before every door is, a door that cannot
listen (a port in use) stops `serve` with the door's own one-line reason, and
with port 0 the first door's port is the one the others share.

The doors run in a session of their own: a Ctrl-C or a signal to `serve`'s
process group reaches `serve` alone, which then stops its doors (SIGTERM).
A door that got the signal while still importing would otherwise die with
a KeyboardInterrupt traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Mapping, Sequence

from aqueduct_grpc.cli import child_process
from gateway_http.cli import LISTENING_ANNOUNCEMENT

__all__ = ["DoorFailed", "HttpDoor", "start_http_doors", "stop_http_doors"]

# A door that dies of one of these while `serve` is asked to stop was stopped
# with it (the signal went to every process), not a failure.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long a door's death waits for `serve`'s own stop signal to be handled.
_SIGNAL_SETTLE_SECONDS = 0.5
# The longest line of a door's stdout relayed (it prints only its announcement).
_LINE_LIMIT = 1024 * 1024


class DoorFailed(Exception):
    """A door exited before it listened, or while serving; `returncode` is its exit code."""

    def __init__(self, returncode: int, *, listening: bool) -> None:
        """Creates the DoorFailed.

        Args:
            returncode: the door's exit code (negative: the signal that killed it).
            listening: whether it had started listening.
        """
        when = "while serving" if listening else "before it listened"
        super().__init__(f"the HTTP door exited with code {returncode} {when}")
        self.returncode = returncode
        self.listening = listening


class HttpDoor:
    """One door process and what it announced."""

    def __init__(self, process: subprocess.Popen[bytes], output: asyncio.StreamReader) -> None:
        """Starts relaying the process's stdout (see `start`).

        Args:
            process: the door.
            output: its stdout.
        """
        self.process = process
        self.url: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._output = output
        self._relay = asyncio.create_task(self._relay_output(), name="http-door-output")
        self._stopping = False

    @classmethod
    async def start(
        cls, command: Sequence[str], environ: Mapping[str, str] | None = None
    ) -> HttpDoor:
        """Starts a door process that exits when this process does (see `child_process`).

        `environ`: its environment (default: this process's).
        """
        with_parent = [sys.executable, "-m", child_process.__name__, str(os.getpid())]
        # subprocess, not asyncio's (uvloop's) own: it spawns with vfork, so
        # gRPC's fork handlers never run in a child while its threads are busy
        # (and a vfork returns at once: nothing here blocks the loop).
        process = subprocess.Popen(  # noqa: ASYNC220
            [*with_parent, *command],
            stdout=subprocess.PIPE,
            start_new_session=True,
            env=None if environ is None else dict(environ),
        )
        assert process.stdout is not None
        output = asyncio.StreamReader(limit=_LINE_LIMIT)
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output), process.stdout)
        return cls(process, output)

    async def _relay_output(self) -> None:
        # Its stdout, line by line, onto ours; the announcement resolves `url`.
        try:
            async for raw in self._output:
                line = raw.decode(errors="replace")
                _relay(line)
                if not self.url.done() and line.startswith(LISTENING_ANNOUNCEMENT):
                    self.url.set_result(line.removeprefix(LISTENING_ANNOUNCEMENT).strip())
        except ValueError:  # a line over the limit: the rest goes on as it comes
            while chunk := await self._output.read(_LINE_LIMIT):
                _relay(chunk.decode(errors="replace"))
        # The end of its output is its exit (it holds the pipe as long as it runs).
        if not self.url.done():
            self.url.set_exception(DoorFailed(await self._returncode(), listening=False))

    async def _returncode(self) -> int:
        return await asyncio.to_thread(self.process.wait)

    @property
    def port(self) -> int:
        """The port it announced (after `url` is done)."""
        port = urllib.parse.urlsplit(self.url.result()).port
        assert port is not None, "a door announces host:port"
        return port

    async def listening(self, stop: asyncio.Event) -> bool:
        """Waits until it listens (True) or a stop is asked for (False).

        Raises:
            DoorFailed: it exited first, unless a stop signal killed it as
                `serve` itself was being stopped (then False).
        """
        stopping: asyncio.Future[object] = asyncio.ensure_future(stop.wait())
        waiting: list[asyncio.Future[object]] = [self.url, stopping]  # type: ignore[list-item]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if stop.is_set():
            return False
        failure = self.url.exception()
        if isinstance(failure, DoorFailed):
            if await _stopped_with_serve(failure.returncode, stop):
                return False
            raise failure
        return True

    async def exited(self, stop: asyncio.Event) -> DoorFailed | None:
        """Waits for the process to end while serving; None when that was a stop."""
        await asyncio.shield(self._relay)  # its output ends when it exits
        returncode = await self._returncode()
        if stop.is_set() or await _stopped_with_serve(returncode, stop):
            return None
        return DoorFailed(returncode, listening=True)

    def terminate(self) -> None:
        """Asks it to stop (SIGTERM: it finishes what it is answering, then exits).

        Once: a second SIGTERM reaching a door past its own shutdown (its
        handlers gone) would end it there, with its last log lines unwritten.
        """
        if self._stopping:
            return
        self._stopping = True
        with contextlib.suppress(ProcessLookupError):
            self.process.terminate()

    async def wait(self) -> None:
        """Waits until it has exited and its output is relayed."""
        await self._returncode()
        with contextlib.suppress(asyncio.CancelledError):
            await self._relay
        if self.url.done():
            self.url.exception()  # seen: a door stopped before it listened is no error now


def _relay(text: str) -> None:
    # Our stdout may be gone (a closed pipe): the door's output is still read to
    # its end, so that the door never blocks on a full pipe.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.write(text)
        sys.stdout.flush()


async def _stopped_with_serve(returncode: int, stop: asyncio.Event) -> bool:
    """Whether a door's death by `returncode` is part of a stop signal sent to `serve` too."""
    if -returncode not in [int(s) for s in _STOP_SIGNALS]:
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), _SIGNAL_SETTLE_SECONDS)
    return stop.is_set()


async def start_http_doors(
    command_for: Callable[[int], Sequence[str]],
    *,
    workers: int,
    port: int,
    stop: asyncio.Event,
    environ: Mapping[str, str] | None = None,
) -> list[HttpDoor]:
    """Starts `workers` doors on `port` and returns once all listen (or a stop is asked for).

    With port 0 the first door's port (the one the OS picked) is given to the
    others, so all share it.

    Args:
        command_for: the door's command line for a port.
        workers: how many doors.
        port: their port (0: one the OS picks).
        stop: set when `serve` is asked to stop.
        environ: the doors' environment (default: this process's).

    Raises:
        DoorFailed: a door exited before it listened (the others are stopped).
    """
    doors: list[HttpDoor] = []
    try:
        if workers == 0:
            return doors
        doors.append(await HttpDoor.start(command_for(port), environ))
        if not await doors[0].listening(stop):
            return doors
        for _ in range(workers - 1):
            doors.append(await HttpDoor.start(command_for(doors[0].port), environ))
        for door in doors[1:]:
            if not await door.listening(stop):
                return doors
        return doors
    except BaseException:
        await stop_http_doors(doors)
        raise


async def stop_http_doors(doors: Sequence[HttpDoor]) -> None:
    """Stops every door and waits until they have exited."""
    for door in doors:
        door.terminate()
    for door in doors:
        await door.wait()
