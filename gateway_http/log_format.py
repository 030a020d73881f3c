"""How the processes' logs look: JSON lines, logfmt, or plain text; one choice per process.

`auto` (the default) is JSON when stderr is not a terminal (a container, a
service manager, a pipe: what log shippers read) and logfmt on a terminal
(what a person reads). Structured fields a line carries as `extra` (the
access logs' request id, status, latency...) become JSON keys or logfmt
pairs; plain text shows the message alone. Both formatters are the
ecosystem's (python-json-logger, logfmter), on the standard `logging`.
"""

from __future__ import annotations

import logging
import sys

from logfmter import Logfmter
from pythonjsonlogger.json import JsonFormatter

__all__ = ["LOG_FORMATS", "configure_logging"]

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
    handler = logging.StreamHandler()
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
