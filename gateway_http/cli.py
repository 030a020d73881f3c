"""Command line: `gateway-http --grpc-target host:port [--host H] [--port P] [--proto-package P]`.

The command serves the aqueduct product's services unless told otherwise:
`DEFAULT_PROTO_PACKAGES` is the one place the door names a product, and only
as a default of this command (the library takes the packages as arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

from gateway_http.app import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES_IN_FLIGHT, create_app
from gateway_http.routes import discover_services
from gateway_http.server import serve

__all__ = ["DEFAULT_PROTO_PACKAGES", "build_parser", "main", "run"]

_log = logging.getLogger(__name__)

# The generated package of the product this door ships with.
DEFAULT_PROTO_PACKAGES: tuple[str, ...] = ("aqueduct",)


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
    access_log: bool = False,
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
        access_log: Whether to write aiohttp's access log (costs throughput).
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
                access_log=logging.getLogger("aiohttp.access") if access_log else None,
            )
        )
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def _announce(where: str) -> None:
    # The bound port, which matters when port 0 was asked for.
    print(f"gateway-http: HTTP door listening on {where}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gateway-http`."""
    parser = argparse.ArgumentParser(
        prog="gateway-http",
        description="HTTP/JSON front for gRPC services, routed by their google.api.http options.",
    )
    parser.add_argument("--grpc-target", required=True, help="gRPC core address, host:port")
    parser.add_argument("--host", default="127.0.0.1", help="listen address")
    parser.add_argument("--port", type=int, default=8080, help="listen port")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest accepted request body (default: %(default)s)",
    )
    parser.add_argument(
        "--max-part-bytes",
        type=int,
        default=None,
        help="largest part of a multipart/form-data body (default: the body limit)",
    )
    parser.add_argument(
        "--max-body-bytes-in-flight",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES_IN_FLIGHT,
        help="bytes of large request bodies (over 256 KiB) held at once; further ones "
        "wait their turn (default: %(default)s)",
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
        "--call-timeout", type=float, default=None, help="deadline of each gRPC call, seconds"
    )
    parser.add_argument("--access-log", action="store_true", help="write an access log")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="share the port with other gateway-http processes (SO_REUSEPORT)",
    )
    parser.add_argument("--log-level", default="INFO", help="logging level")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `gateway-http` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
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
    )
