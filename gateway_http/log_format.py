"""How the processes' logs look: JSON lines, logfmt, or plain text; one choice per process.

`auto` (the default) is JSON when stderr is not a terminal (a container, a
service manager, a pipe: what log shippers read) and logfmt on a terminal
(what a person reads). Structured fields a line carries as `extra` (the
access logs' request id, status, latency...) become JSON keys or logfmt
pairs; plain text shows the message alone. All are formatters on the
standard `logging` (logfmt is logfmter's), so every library's lines come
out in the same layout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time

from logfmter import Logfmter

__all__ = [
    "LOG_FORMATS",
    "JsonLineFormatter",
    "LoopBatchedStreamHandler",
    "configure_logging",
    "write_queued_lines",
]

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
        formatter = JsonLineFormatter()
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


def write_queued_lines() -> None:
    """Writes the lines the root logger's handlers hold: when a command's loop has ended.

    Else they would follow what the interpreter prints on the way out (an
    exit message), since `logging.shutdown` runs after it.
    """
    for handler in logging.getLogger().handlers:
        handler.flush()


# Lines are written in batches of at most this many characters, within PIPE_BUF
# (4096 bytes on Linux): JSON lines are ASCII (json.dumps escapes the rest), and
# the margin covers the UTF-8 a terminal's logfmt or text line may hold.
_ATOMIC_WRITE = 2048

# What every LogRecord has: anything else on a record came as `extra`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, then the record's `extra`.

    Small on purpose: it formats an access line per request on each door,
    where python-json-logger's general machinery (renames, reserved-field
    scans) was a third of the line's cost. Values JSON cannot hold are
    written as their `str`; an exception's traceback is `exc_info`.
    """

    def __init__(self) -> None:
        """A formatter with the standard time layout (`2026-12-01 19:18:23,042`)."""
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        line: dict[str, object] = {
            "time": self._time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES:
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str)

    def _time(self, record: logging.LogRecord) -> str:
        # The same text as Formatter.formatTime, its seconds part made once a second.
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._stamp},{int(record.msecs):03d}"


class LoopBatchedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, written in batches from an event loop rather than a system call per line.

    With an access line per request on each door, the write per line was the
    largest part of what logging cost (system time, which a profile of the
    Python code does not show). Lines logged in a running event loop are
    written together `delay` seconds after the first of them; a warning or
    worse is written at once, with the lines queued before it, and so is a
    line logged outside a running loop (start-up, shutdown, another thread).
    What a SIGKILL can lose is the last `delay` seconds of INFO lines.
    """

    def __init__(self, delay: float = 0.05) -> None:
        """A handler for `sys.stderr` as it is now; lines wait at most `delay` seconds."""
        super().__init__()
        self._delay = delay
        self._lines: list[str] = []
        # The loop whose timer will write the queue (another loop plans its own:
        # one closed before its timer fired would leave the queue waiting).
        self._planned_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        """Queues the formatted line; writes the queue now for a warning or outside a loop."""
        try:
            self._lines.append(self.format(record) + self.terminator)
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is None or record.levelno >= logging.WARNING:
                self.flush()
            elif self._planned_on is not loop:
                self._planned_on = loop
                loop.call_later(self._delay, self._flush_queued)
        except Exception:
            self.handleError(record)

    def _flush_queued(self) -> None:
        try:
            self.flush()
        except Exception:  # stderr itself failed: there is nowhere to say so
            pass

    def flush(self) -> None:
        """Writes the queued lines (also on `logging.shutdown`, at exit).

        In writes of at most `PIPE_BUF` bytes ending with a line: the core and
        its doors share one stderr, often a pipe, where only writes that size
        are never interleaved with another process's.
        """
        with self.lock:  # type: ignore[union-attr]
            self._planned_on = None
            batch: list[str] = []
            size = 0
            for line in self._lines:
                if batch and size + len(line) > _ATOMIC_WRITE:
                    self.stream.write("".join(batch))
                    batch, size = [], 0
                batch.append(line)
                size += len(line)
            self._lines.clear()
            if batch:
                self.stream.write("".join(batch))
            super().flush()

    def close(self) -> None:
        """Writes what is queued, then closes (as `configure_logging(replace=True)` does)."""
        self.flush()
        super().close()
