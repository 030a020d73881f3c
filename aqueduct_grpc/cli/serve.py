"""`aqueduct-grpc serve`: runs the gRPC core and supervises its HTTP door processes.

Start-up binds the gRPC port, then starts the doors and waits until each
listens (`http_doors`); only then is the first token made (on an empty
database) and "serving" printed, with the ports really bound. A port that is
taken, on either door, stops it there with one line saying so (exit 1).

SIGTERM/SIGINT: health goes NOT_SERVING, the doors are stopped, and in-flight
calls get `--grace` seconds. A door that dies stops `serve`; `serve` killed
outright takes its doors with it (see `child_process`).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Sequence

from aqueduct_console import STATIC_DIR
from aqueduct_grpc.accounting.policy import TokenPolicy
from aqueduct_grpc.admin.service import ADMIN_SERVICE
from aqueduct_grpc.auth.tokens import TokenExists
from aqueduct_grpc.cli.database_location import DatabaseLocation
from aqueduct_grpc.cli.http_doors import DoorFailed, HttpDoor, start_http_doors, stop_http_doors
from aqueduct_grpc.config import GatewayConfig, load_config
from aqueduct_grpc.server import IMAGE_SERVICE, Core, open_core, serve_metrics, start_grpc_server
from gateway_http.log_format import write_queued_lines
from gateway_http.tracing import install_tracing

__all__ = ["run_serve"]

log = logging.getLogger("aqueduct_grpc")


async def run_serve(args: argparse.Namespace, location: DatabaseLocation) -> None:
    """Serves until a stop signal, then shuts down gracefully.

    Args:
        args: the parsed `serve` flags.
        location: the database, and the data dir (journal and image files).
    """
    config = load_config(args.config)
    for warning in config.warnings:
        log.warning("%s", warning)
    _check_port_free(args.host, args.grpc_port, "gRPC")  # before the database is touched
    install_tracing("aqueduct-grpc")  # when the OTEL_ variables name an exporter
    door_environ = _door_environment(args.http_workers)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with open_core(
        config,
        database_url=location.url(),
        image_dir=location.data_dir / "images",
        journal_dir=location.data_dir / "journal",
    ) as core:
        grpc_server = await start_grpc_server(
            core,
            host=args.host,
            port=args.grpc_port,
            access_log=args.access_log,
            metrics=args.metrics,
        )
        if args.metrics_port is not None:
            metrics_port = serve_metrics(core, args.host, args.metrics_port)
            log.info("core metrics on http://%s:%d/metrics", args.host, metrics_port)
        doors: list[HttpDoor] = []
        try:
            try:
                doors = await start_http_doors(
                    lambda port: _door_command(args, config, grpc_server.port, port),
                    workers=args.http_workers,
                    port=args.http_port,
                    stop=stop,
                    environ=door_environ,
                )
            except DoorFailed as failure:
                # Exit code 1 is a door's own refusal (a port in use), said on stderr already.
                code = 1 if failure.returncode == 1 else f"aqueduct-grpc: {failure}"
                raise SystemExit(code) from None
            if not stop.is_set():
                await _first_token(core)
                http = f", HTTP on {doors[0].url.result()}" if doors else ""
                models = ", ".join(m.name for m in config.models)
                print(
                    f"aqueduct-grpc serving {models}: gRPC on {args.host}:{grpc_server.port}{http}",
                    flush=True,
                )
                await _wait(stop, doors)
        finally:
            log.info("shutting down")
            for door in doors:
                door.terminate()
            await grpc_server.stop(args.grace)
            await stop_http_doors(doors)
            if "PROMETHEUS_MULTIPROC_DIR" in door_environ:
                shutil.rmtree(door_environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
            write_queued_lines()  # while a second stop signal is still handled


def _check_port_free(host: str, port: int, door: str) -> None:
    """Raises OSError, in one line, when something listens on host:port already.

    gRPC says so too, but in a log line of its own and a message that cannot
    tell a taken port from a bad address; this check comes first (a port
    taken between it and the bind is still gRPC's error).
    """
    if port == 0:
        return
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return  # not an address: gRPC's error says so
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            # As servers bind: a port whose old connections linger is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise OSError(
                        f"cannot listen for {door} on {host}:{port}: address already in use"
                    ) from None
                return  # another problem: gRPC's error says which


async def _first_token(core: Core) -> None:
    """On a database with no tokens, makes the operator's first one and prints it once."""
    if await core.tokens.count() != 0:
        return
    try:
        token, secret = await core.tokens.create("default")
    except TokenExists:
        return  # a replica starting at the same time on the same database made it
    # The operator's first token: it may use the admin API to make others.
    await core.policies.set_token_policy(TokenPolicy(token_id=token.id, admin=True))
    print(
        f"\nNo tokens yet: created token {token.id} ('default'). "
        f"Its secret, shown only once:\n\n    {secret}\n\n"
        "Create more with `aqueduct-grpc tokens create --name NAME`.\n",
        flush=True,
    )


def _door_environment(workers: int) -> dict[str, str]:
    """The doors' environment: with several, a folder they share their metrics through.

    prometheus_client's multi-process mode keeps each process's values in
    files there, so whichever door answers a scrape reports them all.
    """
    if workers <= 1:
        return dict(os.environ)
    folder = tempfile.mkdtemp(prefix="aqueduct-door-metrics-")
    return {**os.environ, "PROMETHEUS_MULTIPROC_DIR": folder}


def _door_command(
    args: argparse.Namespace, config: GatewayConfig, grpc_port: int, http_port: int
) -> Sequence[str]:
    """The `gateway-http` command of one door, with every door flag of `serve`."""
    # The HTTP door runs in its own process(es): on a multi-core machine the
    # JSON work and the gRPC core then do not share one event loop.
    target_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    if ":" in target_host:
        target_host = f"[{target_host}]"
    command = [
        sys.executable,
        "-m",
        "gateway_http",
        "--grpc-target",
        f"{target_host}:{grpc_port}",
        "--host",
        args.host,
        "--port",
        str(http_port),
        "--log-level",
        args.log_level,
        "--max-body-bytes",
        str(args.max_body_bytes),
        "--max-part-bytes",
        str(args.max_part_bytes),
        "--max-body-bytes-in-flight",
        str(args.max_body_bytes_in_flight),
    ]
    if args.call_timeout is not None:
        command += ["--call-timeout", repr(args.call_timeout)]
    command += ["--log-format", args.log_format]
    if not args.access_log:
        command.append("--no-access-log")
    if not args.metrics:
        command.append("--no-metrics")
    for service, origins in (
        (IMAGE_SERVICE, config.cors_allow_origins),
        (ADMIN_SERVICE, config.admin_cors_allow_origins),
    ):
        command += ["--cors-allow-origin", f"{service}={','.join(origins)}"]
    if args.console:
        command += ["--static", f"/console/={STATIC_DIR}", "--root-redirect", "/console/"]
    if args.http_workers > 1:
        command.append("--reuse-port")
    return command


async def _wait(stop: asyncio.Event, doors: list[HttpDoor]) -> None:
    """Returns on a stop signal; raises SystemExit when an HTTP door dies meanwhile."""
    stopping = asyncio.ensure_future(stop.wait())
    watching = [asyncio.ensure_future(door.exited(stop)) for door in doors]
    try:
        pending = {stopping, *watching}
        while not stop.is_set():
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                failure = None if task is stopping else task.result()
                if failure is not None:
                    raise SystemExit(f"aqueduct-grpc: {failure}")
    finally:
        for task in (stopping, *watching):
            task.cancel()
