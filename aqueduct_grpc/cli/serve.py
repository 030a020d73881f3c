"""`aqueduct-grpc serve`: runs the gRPC core and supervises its HTTP door processes.

SIGTERM/SIGINT: health goes NOT_SERVING, the doors are stopped, and in-flight
calls get `--grace` seconds. A door that dies stops `serve`; `serve` killed
outright takes its doors with it (see `child_process`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import pathlib
import signal
import subprocess
import sys

from aqueduct_grpc.accounting.policy import TokenPolicy
from aqueduct_grpc.config import load_config
from aqueduct_grpc.server import open_core, start_grpc_server

__all__ = ["run_serve"]

log = logging.getLogger("aqueduct_grpc")


async def run_serve(args: argparse.Namespace, database_url: str) -> None:
    """Serves until a stop signal, then shuts down gracefully."""
    config = load_config(args.config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    image_dir = pathlib.Path(args.data_dir) / "images"
    journal_dir = pathlib.Path(args.data_dir) / "journal"
    async with open_core(
        config, database_url=database_url, image_dir=image_dir, journal_dir=journal_dir
    ) as core:
        if await core.tokens.count() == 0:
            token, secret = await core.tokens.create("default")
            # The operator's first token: it may use the admin API to make others.
            await core.policies.set_token_policy(TokenPolicy(token_id=token.id, admin=True))
            print(
                f"\nNo tokens yet: created token {token.id} ('default'). "
                f"Its secret, shown only once:\n\n    {secret}\n\n"
                "Create more with `aqueduct-grpc tokens create --name NAME`.\n",
                flush=True,
            )
        grpc_server = await start_grpc_server(core, host=args.host, port=args.grpc_port)
        doors = _start_http_doors(args, grpc_server.port)
        models = ", ".join(m.name for m in config.models)
        print(
            f"aqueduct-grpc serving {models}: gRPC on {args.host}:{grpc_server.port}"
            + (f", HTTP on http://{args.host}:{args.http_port}" if doors else ""),
            flush=True,
        )
        try:
            await _wait(stop, doors)
        finally:
            log.info("shutting down")
            for door in doors:
                with contextlib.suppress(ProcessLookupError):
                    door.terminate()
            await grpc_server.stop(args.grace)
            for door in doors:
                await asyncio.to_thread(door.wait)


def _start_http_doors(args: argparse.Namespace, grpc_port: int) -> list[subprocess.Popen[bytes]]:
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
        str(args.http_port),
        "--log-level",
        args.log_level,
        "--max-body-bytes",
        str(args.max_body_bytes),
        "--max-part-bytes",
        str(args.max_part_bytes),
        "--max-body-bytes-in-flight",
        str(args.max_body_bytes_in_flight),
    ]
    if args.http_workers > 1:
        command.append("--reuse-port")
    # Each door exits with `serve`, even if `serve` is killed outright.
    with_parent = [sys.executable, "-m", "aqueduct_grpc.cli.child_process", str(os.getpid())]
    return [subprocess.Popen([*with_parent, *command]) for _ in range(args.http_workers)]


async def _wait(stop: asyncio.Event, doors: list[subprocess.Popen[bytes]]) -> None:
    """Returns on a stop signal, or when an HTTP door process dies."""
    while not stop.is_set():
        for door in doors:
            if door.poll() is not None:
                raise SystemExit(f"aqueduct-grpc: the HTTP door exited with code {door.returncode}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
