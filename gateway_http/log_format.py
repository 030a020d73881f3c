"""How the processes' logs look: JSON lines, logfmt, or plain text; one choice per process.

`auto` (the default) is JSON when stderr is not a terminal (a container, a
service manager, a pipe: what log shippers read) and logfmt on a terminal
(what a person reads). Structured fields a line carries as `extra` (the
access logs' request id, status, latency...) become JSON keys or logfmt
pairs; plain text shows the message alone. Both formatters are the
ecosystem's (python-json-logger, logfmter), on the standard `logging`.
"""

from __future__ import annotations

import asyncio
import logging
import sys

from logfmter import Logfmter
from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "LoopBatchedStreamHandler", "configure_logging"]

LOG_FORMATS = ("auto", "json", "logfmt", "text")


def configure_logging(level: str, log_format: str = "auto", *, replace: bool = False) -> None:
    """Sends the root logger's records to stderr at `level`, laid out as `log_format`.

    Like `logging.basicConfig`, it does nothing when the root logger has
    handlers already, unless `replace`.

    Raises:
        ValueError: `log_format` is not one of `LOG_FORMATS`.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    if log_format == "auto":
        log_format = "logfmt" if sys.stderr.isatty() else "json"
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(
            "{asctime}{levelname}{name}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            json_default=str,
        )
    elif log_format == "logfmt":
        formatter = Logfmter(
            keys=["time", "level", "logger"],
            mapping={"time": "asctime", "level": "levelname", "logger": "name"},
        )
    else:
        formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = LoopBatchedStreamHandler()
    handler.setFormatter(formatter)
    # As basicConfig: a no-op where logging is set up already (a host
    # application, pytest's capture), so only a process's own start decides.
    logging.basicConfig(handlers=[handler], level=level.upper(), force=replace)
    if handler in logging.getLogger().handlers:
        # No layout here shows a record's source line, thread or process, and
        # finding them is a good part of what a record costs (an access line
        # per request): the logging HOWTO's "Optimization" switches.
        logging._srcfile = None  # type: ignore[attr-defined]
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, written once per turn of the event loop rather than once per line.

    With an access line per request on each door, a write (a system call)
    per line was a good part of what logging cost. Lines logged in one turn
    of a running event loop now go out together at its end, before the loop
    waits again; a line logged outside a running loop (start-up, shutdown,
    another thread) is written at once, with any waiting before it. What a
    SIGKILL can lose is one turn's lines.
    """

    def __init__(self) -> None:
        """A handler for `sys.stderr` as it is now."""
        super().__init__()
        self._lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Queues the formatted line; writes it now when no loop is running here."""
        try:
            self._lines.append(self.format(record) + self.terminator)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            if len(self._lines) == 1:  # the turn's first line: write them all after it
                loop.call_soon(self._flush_queued)
        except Exception:
            self.handleError(record)

    def _flush_queued(self) -> None:
        try:
            self.flush()
        except Exception:  # stderr itself failed: there is nowhere to say so
            pass

    def flush(self) -> None:
        """Writes the queued lines (also on `logging.shutdown`, at exit)."""
        with self.lock:  # type: ignore[union-attr]
            if self._lines:
                text = "".join(self._lines)
                self._lines.clear()
                self.stream.write(text)
            super().flush()
