"""The `gateway-http` command line."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gateway_http import cli
from gateway_http.app import DEFAULT_MAX_BODY_BYTES
from gateway_http.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    args = build_parser().parse_args(["--grpc-target", "127.0.0.1:50051"])
    assert (args.grpc_target, args.host, args.port) == ("127.0.0.1:50051", "127.0.0.1", 8080)
    assert args.max_body_bytes == DEFAULT_MAX_BODY_BYTES
    assert args.max_part_bytes is None  # the body limit
    assert args.call_timeout is None


def test_options() -> None:
    args = build_parser().parse_args(
        [
            "--grpc-target",
            "core:1",
            "--port",
            "9",
            "--max-body-bytes",
            "10",
            "--max-part-bytes",
            "4",
            "--call-timeout",
            "2.5",
        ]
    )
    assert (args.port, args.max_body_bytes, args.max_part_bytes, args.call_timeout) == (
        9,
        10,
        4,
        2.5,
    )


def test_the_limits_reach_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run", lambda **kwargs: seen.update(kwargs))
    cli.main(["--grpc-target", "core:1", "--max-body-bytes", "100", "--max-part-bytes", "7"])
    assert (seen["max_body_bytes"], seen["max_part_bytes"]) == (100, 7)


@pytest.mark.parametrize(
    ("flags", "services"),
    [
        # The command's default (every aqueduct service), not the library's.
        ([], {"aqueduct.images.v1.ImageService", "aqueduct.admin.v1.AdminService"}),
        # --proto-package replaces it.
        (["--proto-package", "aqueduct.images"], {"aqueduct.images.v1.ImageService"}),
    ],
)
def test_proto_packages_choose_the_services_of_the_app(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], services: set[str]
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "run", lambda **kwargs: seen.update(kwargs))
    cli.main(["--grpc-target", "core:1", *flags])
    assert {service.full_name for service in seen["services"]} == services


@pytest.mark.parametrize(
    ("package", "complaint"),
    [
        ("no_such_package", "no generated package 'no_such_package'"),
        ("json", "no service with google.api.http rules in json"),
    ],
)
def test_a_package_with_nothing_to_serve_is_a_clear_exit(
    monkeypatch: pytest.MonkeyPatch, package: str, complaint: str
) -> None:
    monkeypatch.setattr(cli, "run", lambda **kwargs: pytest.fail("must not serve"))
    with pytest.raises(SystemExit) as exited:
        cli.main(["--grpc-target", "core:1", "--proto-package", package])
    assert complaint in str(exited.value.code)


def test_python_dash_m_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway_http", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "--grpc-target" in done.stdout


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--port", "70000"],
            "argument --port: '70000' is not a port (0-65535; 0: one the OS picks)",
        ),
        (["--port", "-1"], "argument --port: '-1' is not a port"),
        (["--max-body-bytes", "0"], "argument --max-body-bytes: '0' is not a number of bytes"),
        (["--max-part-bytes", "x"], "argument --max-part-bytes: 'x' is not a number of bytes"),
        (["--call-timeout", "0"], "argument --call-timeout: '0' is not a number of seconds"),
        (["--call-timeout", "inf"], "argument --call-timeout: 'inf' is not a number of seconds"),
        (["--log-level", "loud"], "argument --log-level: 'loud' is not one of DEBUG, INFO"),
    ],
)
def test_invalid_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--grpc-target", "core:1", *flags])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()  # one line: no usage block
    assert line.startswith(f"gateway-http: error: {message}")
    assert line.endswith("(see gateway-http --help)")


@pytest.mark.parametrize("target", ["core", "core:", "core:http", ":50051", "core:70000"])
def test_a_grpc_target_must_be_host_and_port(
    capsys: pytest.CaptureFixture[str], target: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--grpc-target", target])
    assert exited.value.code == 2
    assert "is not HOST:PORT (e.g. 127.0.0.1:50051)" in capsys.readouterr().err


@pytest.mark.parametrize("target", ["[::1]:50051", "unix:/run/core.sock", "dns:core:50051"])
def test_grpc_naming_forms_are_accepted(target: str) -> None:
    assert build_parser().parse_args(["--grpc-target", target]).grpc_target == target


def test_help_shows_each_default() -> None:
    shown = " ".join(build_parser().format_help().split())
    assert "listen port (0: one the OS picks, announced) (default: 8080)" in shown
    assert f"largest accepted request body (default: {DEFAULT_MAX_BODY_BYTES})" in shown
    assert "(default: None)" not in shown


def test_a_taken_port_is_one_line_not_a_traceback() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "gateway_http", "--grpc-target", "127.0.0.1:1",
             "--port", str(port), "--log-level", "warning"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"gateway-http: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"
    ]
    assert done.stdout == ""  # never announced as listening
