"""Command line: `gateway-http --grpc-target host:port [--host H] [--port P] [--proto-package P]`.

The command serves the aqueduct product's services unless told otherwise:
`DEFAULT_PROTO_PACKAGES` is the one place the door names a product, and only
as a default of this command (the library takes the packages as arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gateway_http.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES_IN_FLIGHT, create_app
from gateway_http.command_line import LOG_LEVELS, Parser, checked, port
from gateway_http.log_format import LOG_FORMATS, configure_logging, write_queued_lines
from gateway_http.routes import discover_services
from gateway_http.server import serve
from gateway_http.tracing import install_tracing

__all__ = ["DEFAULT_PROTO_PACKAGES", "LISTENING_ANNOUNCEMENT", "build_parser", "main", "run"]

_log = logging.getLogger(__name__)

# The generated package of the product this door ships with.
DEFAULT_PROTO_PACKAGES: tuple[str, ...] = ("aqueduct",)

# What the door prints on stdout, followed by its URL, once it listens: a
# supervisor (the core's `serve`) reads it to know the door is up, and on
# which port when port 0 was asked for.
LISTENING_ANNOUNCEMENT = "gateway-http: HTTP door listening on "

# What a failure to listen looks like (OSError's errno), and so a clear exit.
_CANNOT_LISTEN = (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES)


def _new_loop() -> asyncio.AbstractEventLoop:
    """A uvloop event loop when uvloop is installed, else the default one."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(
    *,
    grpc_target: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    proto_packages: Sequence[str] = DEFAULT_PROTO_PACKAGES,
    access_log: bool = True,
    reuse_port: bool = False,
    **app_options: Any,
) -> None:
    """Serves the HTTP front until interrupted (blocking).

    Meant to be the target of a child process started by the core's `serve`
    command, as well as of `main()`.

    Args:
        grpc_target: Address of the gRPC core.
        host: Interface to listen on.
        port: TCP port to listen on.
        max_body_bytes: Largest accepted request body.
        proto_packages: Packages whose services (with http rules) are served.
        access_log: Whether to write the access log (`gateway_http.access`).
        reuse_port: Set SO_REUSEPORT so several processes share the port.
        **app_options: Further keyword arguments for `create_app`.
    """
    app = create_app(
        grpc_target=grpc_target,
        max_body_bytes=max_body_bytes,
        proto_packages=proto_packages,
        **app_options,
    )
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            serve(
                app,
                host=host,
                port=port,
                reuse_port=reuse_port,
                announce=_announce,
                # A caller that hangs up cancels its gRPC call, and through it the
                # core's own work: nobody pays for an answer nobody reads.
                handler_cancellation=True,
                access_log=access_log,
            )
        )
    finally:
        asyncio.set_event_loop(None)
        loop.close()
        write_queued_lines()


def _announce(where: str) -> None:
    # The bound port, which matters when port 0 was asked for.
    print(f"{LISTENING_ANNOUNCEMENT}{where}", flush=True)


def _grpc_target(text: str) -> str:
    if text.startswith(_TARGET_SCHEMES):
        return text  # gRPC's own naming (unix:/path, dns:host:port, …), checked by gRPC
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    return text


_TARGET_SCHEMES = ("unix:", "unix-abstract:", "dns:", "ipv4:", "ipv6:", "vsock:")
_byte_count = checked("byte_count", int, lambda v: v >= 1, "a number of bytes (1 or more)")
_seconds = checked(
    "seconds", float, lambda v: 0 < v < float("inf"), "a number of seconds (more than 0)"
)
_log_level = checked(
    "log_level", str.upper, lambda v: v in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"
)


def _cors_entry(text: str) -> tuple[str, tuple[str, ...]]:
    service, equals, origins = text.partition("=")
    if not equals or not service:
        raise argparse.ArgumentTypeError(f"{text!r} is not SERVICE=ORIGIN[,ORIGIN] (or SERVICE=)")
    return service, tuple(o for o in origins.split(",") if o)


def _cors_origins(entries: Sequence[tuple[str, tuple[str, ...]]]) -> dict[str, tuple[str, ...]]:
    origins: dict[str, tuple[str, ...]] = {}
    for service, allowed in entries:
        origins[service] = origins.get(service, ()) + allowed
    return origins


def _static_entry(text: str) -> tuple[str, str]:
    prefix, equals, folder = text.partition("=")
    if not equals or not prefix.startswith("/") or not prefix.endswith("/") or not folder:
        raise argparse.ArgumentTypeError(f"{text!r} is not /PREFIX/=FOLDER")
    return prefix, folder


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gateway-http`."""
    parser = Parser(
        prog="gateway-http",
        description="HTTP/JSON front for gRPC services, routed by their google.api.http options.",
    )
    parser.add_argument(
        "--grpc-target", type=_grpc_target, required=True, help="gRPC core address, host:port"
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument(
        "--port", type=port, default=8080, help="listen port (0: one the OS picks, announced)"
    )
    parser.add_argument(
        "--max-body-bytes",
        type=_byte_count,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest accepted request body",
    )
    parser.add_argument(
        "--max-part-bytes",
        type=_byte_count,
        default=None,
        help="largest part of a multipart/form-data body (default: the body limit)",
    )
    parser.add_argument(
        "--max-body-bytes-in-flight",
        type=_byte_count,
        default=DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        help="bytes of large request bodies (over 256 KiB) held at once; further ones "
        "wait their turn",
    )
    parser.add_argument(
        "--proto-package",
        action="append",
        dest="proto_packages",
        metavar="PACKAGE",
        help="generated package whose services are served; repeatable "
        f"(default: {', '.join(DEFAULT_PROTO_PACKAGES)})",
    )
    parser.add_argument(
        "--call-timeout",
        type=_seconds,
        default=None,
        help="deadline of each gRPC call, seconds (default: none)",
    )
    parser.add_argument(
        "--no-access-log",
        dest="access_log",
        action="store_false",
        help="write no access log (one structured line per request, by default)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default="auto",
        help="log layout (auto: JSON when stderr is not a terminal, else logfmt)",
    )
    parser.add_argument(
        "--cors-allow-origin",
        action="append",
        type=_cors_entry,
        default=[],
        metavar="SERVICE=ORIGIN[,ORIGIN]",
        help="origins (or *) whose pages may call the routes of a gRPC service "
        "(full name); repeatable; no CORS answers without one",
    )
    parser.add_argument(
        "--static",
        action="append",
        type=_static_entry,
        default=[],
        metavar="/PREFIX/=FOLDER",
        help="a folder of static files served under a URL prefix; repeatable",
    )
    parser.add_argument("--root-redirect", help="where GET / redirects (e.g. /console/)")
    parser.add_argument(
        "--no-metrics",
        dest="metrics",
        action="store_false",
        help="count nothing and serve no /metrics",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other gateway-http processes (SO_REUSEPORT)",
    )
    parser.add_argument("--log-level", type=_log_level, default="INFO", help="logging level")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `gateway-http` console script."""
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format)
    install_tracing("gateway-http")  # when the OTEL_ variables name an exporter
    # argparse's "append" would add to a list default instead of replacing it.
    packages = args.proto_packages or DEFAULT_PROTO_PACKAGES
    # Checked before serving: a mistyped package is a clear exit, not a traceback
    # or a door that answers 404 to everything.
    try:
        found = discover_services(packages)
    except ModuleNotFoundError as error:
        sys.exit(f"gateway-http: no generated package {error.name!r} (--proto-package)")
    if not found:
        sys.exit(f"gateway-http: no service with google.api.http rules in {', '.join(packages)}")
    _log.info("HTTP front on %s:%d -> gRPC %s", args.host, args.port, args.grpc_target)
    try:
        run(
            grpc_target=args.grpc_target,
            host=args.host,
            port=args.port,
            max_body_bytes=args.max_body_bytes,
            max_part_bytes=args.max_part_bytes,
            max_body_bytes_in_flight=args.max_body_bytes_in_flight,
            services=found,  # found once, above
            call_timeout=args.call_timeout,
            access_log=args.access_log,
            reuse_port=args.reuse_port,
            cors_allow_origins=_cors_origins(args.cors_allow_origin)
            if args.cors_allow_origin
            else None,
            metrics=args.metrics,
            static_folders=dict(args.static),
            root_redirect=args.root_redirect,
        )
    except OSError as error:
        if error.errno not in _CANNOT_LISTEN:
            raise
        # A port in use is the operator's to fix: one line, not a traceback.
        reason = os.strerror(error.errno) if error.errno else str(error)
        sys.exit(f"gateway-http: cannot listen for HTTP on {args.host}:{args.port}: {reason}")
    except KeyboardInterrupt:
        # A second Ctrl-C while shutting down (the first one stops it gracefully).
        sys.exit(130)
