"""The `aqueduct-grpc` command line: every flag checked, helped and defaulted; the data dir said."""

from __future__ import annotations

import argparse
import pathlib
from collections.abc import Iterator

import pytest

from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.cli.database_location import DATABASE_FILE
from aqueduct_grpc.storage.database import sqlite_url


def refusal(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """The one line `aqueduct-grpc ARGV` exits 2 with."""
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv), environ={})
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1, err  # one line, no usage block, no traceback
    return err.strip()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["serve", "--grpc-port", "99999"],
            "aqueduct-grpc serve: error: argument --grpc-port: '99999' is not a port"
            " (0-65535; 0: one the OS picks) (see aqueduct-grpc serve --help)",
        ),
        (["serve", "--http-port", "-1"], "argument --http-port: '-1' is not a port"),
        (["serve", "--http-port", "http"], "argument --http-port: 'http' is not a port"),
        (
            ["serve", "--http-workers", "-1"],
            "argument --http-workers: '-1' is not a whole number of 0 or more",
        ),
        (
            ["serve", "--grace", "-1"],
            "argument --grace: not a duration: '-1' (e.g. 90s, 15m, 12h, 30d, 2w; a bare"
            " number is seconds)",
        ),
        (["serve", "--grace", "10y"], "argument --grace: not a duration: '10y'"),
        (["serve", "--call-timeout", "0"], "argument --call-timeout: not a duration: '0' must"),
        (
            ["serve", "--max-body-bytes", "0"],
            "argument --max-body-bytes: '0' is not a whole number of 1 or more",
        ),
        (["serve", "--log-level", "loud"], "argument --log-level: 'loud' is not a log level"),
        (
            ["serve", "--no-metrics", "--metrics-port", "0"],
            "argument --metrics-port: not allowed with argument --no-metrics",
        ),
        (["tokens", "create", "--name", "x", "--expires-in", "0"], "must be more than 0"),
        (
            ["tokens", "create", "--name", "x", "--images-per-day", "-1"],
            "argument --images-per-day: '-1' is not a limit (a whole number of 0 or more)",
        ),
        (
            ["tokens", "create", "--name", "x", "--images-per-day", "none"],
            "argument --images-per-day: 'none' is not a limit",  # none only where it clears
        ),
        (
            ["tokens", "set-policy", "x", "--budget-per-day-usd", "nan"],
            "argument --budget-per-day-usd: 'nan' is not a budget (a number of USD, 0 or"
            " more), or none",
        ),
        (
            ["tokens", "set-policy", "x", "--team", "t", "--no-team"],
            "argument --no-team: not allowed with argument --team",
        ),
        (["usage", "--since", "yesterday"], "argument --since: not a period bound: 'yesterday'"),
        (["serve", "--bogus"], "aqueduct-grpc: error: unrecognized arguments: --bogus"),
    ],
)
def test_invalid_flags_exit_2_with_one_line(capsys, argv, message):
    assert message in refusal(capsys, *argv)


@pytest.mark.parametrize(
    "argv",
    [
        ["--log-level", "debug", "usage"],
        ["usage", "--log-level", "DEBUG"],
        ["tokens", "--log-level", "debug", "list"],
        ["tokens", "list", "--log-level", "Debug"],
    ],
)
def test_the_log_level_goes_before_or_after_the_subcommand(argv):
    args = cli.build_parser({}).parse_args(argv)
    assert args.log_level == "DEBUG"


def test_the_log_level_defaults_to_the_environment_and_the_command_line_wins():
    parser = cli.build_parser({"AQUEDUCT_LOG_LEVEL": "warning"})
    assert parser.parse_args(["usage"]).log_level == "WARNING"
    assert parser.parse_args(["usage", "--log-level", "error"]).log_level == "ERROR"
    assert parser.parse_args(["--log-level", "error", "usage"]).log_level == "ERROR"


def _parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield parser.prog, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_flag_has_help_and_shows_its_default():
    parsers = dict(_parsers(cli.build_parser({})))
    assert "aqueduct-grpc config check" in parsers and "aqueduct-grpc tokens set-policy" in parsers
    for prog, parser in parsers.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"{prog} {action.option_strings or action.dest} has no help"
    serve = " ".join(parsers["aqueduct-grpc serve"].format_help().split())  # unwrapped
    for shown in ("(default: 50051)", "(default: 8080)", "(default: 1)", "(default: 10.0)"):
        assert shown in serve
    assert "$AQUEDUCT_DATA_DIR, else ./data" in serve and "(default: None)" not in serve


def test_serve_takes_every_flag_of_the_http_door_it_passes_on():
    args = cli.build_parser({}).parse_args(
        ["serve", "--call-timeout", "5m", "--grace", "0", "--http-workers", "0"]
    )
    assert (args.call_timeout, args.grace, args.http_workers) == (300.0, 0.0, 0)


def test_unknown_models_are_refused_with_the_known_ones(capsys, tmp_path: pathlib.Path):
    data = ["--data-dir", str(tmp_path / "data")]
    line = refusal(capsys, "tokens", "create", "--name", "x", "--models", "demo,dmeo,nope", *data)
    assert line == (
        "aqueduct-grpc tokens create: error: --models: no model 'dmeo' (did you mean 'demo'?)"
        " (nor 'nope'); the models of <embedded default> are aqueduct-demo, demo (give the"
        " server's config: --config or $AQUEDUCT_CONFIG) (see aqueduct-grpc tokens create --help)"
    )
    config = tmp_path / "models.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: gpt-image-1\n"
        "    litellm_params: {model: openai/gpt-image-1, api_key: os.environ/UNSET_KEY}\n"
        "    model_info: {aliases: [image]}\n"
    )
    line = refusal(capsys, "tokens", "create", "--name", "x", "--models", "demo", "--config",
                   str(config), *data)  # fmt: skip
    assert f"the models of {config} are gpt-image-1, image (see" in line
    assert not (tmp_path / "data").exists()  # refused before any database was touched
    # The config's names are enough: its upstream key need not be set here.
    cli.main(["tokens", "create", "--name", "x", "--models", "image", "--config", str(config),
              *data], environ={})  # fmt: skip
    assert capsys.readouterr().out.startswith("aqk-")


def test_the_database_file_is_the_embedded_one(tmp_path: pathlib.Path):
    assert sqlite_url(tmp_path).endswith(f"/{DATABASE_FILE}")


def test_a_reading_command_on_a_data_dir_without_a_database_creates_none(
    capsys, tmp_path: pathlib.Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cli.main(["tokens", "list"], environ={})
    out, err = capsys.readouterr()
    assert out.splitlines()[0].split()[:2] == ["ID", "NAME"] and len(out.splitlines()) == 1
    database = tmp_path / "data" / DATABASE_FILE
    assert err.splitlines() == [
        f"aqueduct-grpc: database: {database} (the default data dir ./data)",
        f"aqueduct-grpc: warning: no database in {database} yet: tokens list sees none"
        " (nothing was created). Is this the server's data dir? Set --data-dir,"
        " $AQUEDUCT_DATA_DIR or --database-url.",
    ]
    cli.main(
        ["usage", "--format", "json"], environ={"AQUEDUCT_DATA_DIR": str(tmp_path / "elsewhere")}
    )
    out, err = capsys.readouterr()
    assert out.replace(" ", "").replace("\n", "") == '{"by":"token","groups":[]}'
    assert f"(${'AQUEDUCT_DATA_DIR'}={tmp_path / 'elsewhere'})" in err.splitlines()[0]
    assert not (tmp_path / "data").exists() and not (tmp_path / "elsewhere").exists()


def test_a_creating_command_warns_that_it_makes_a_new_database(capsys, tmp_path: pathlib.Path):
    data = tmp_path / "data"
    cli.main(["tokens", "create", "--name", "first", "--data-dir", str(data)], environ={})
    err = capsys.readouterr().err.splitlines()
    assert err[:2] == [
        f"aqueduct-grpc: database: {data / DATABASE_FILE} (--data-dir {data})",
        f"aqueduct-grpc: warning: no database in {data / DATABASE_FILE} yet: creating one."
        " A server using another data dir or --database-url will not know what this"
        " command makes.",
    ]
    assert (data / DATABASE_FILE).exists()
    cli.main(["tokens", "create", "--name", "second", "--data-dir", str(data)], environ={})
    err = capsys.readouterr().err.splitlines()
    assert not any("warning" in line for line in err)  # it exists now


def test_a_database_url_is_named_without_its_password(capsys, tmp_path: pathlib.Path):
    url = f"sqlite:///{tmp_path / 'x.db'}"
    cli.main(["teams", "list"], environ={"AQUEDUCT_DATABASE_URL": url})
    assert capsys.readouterr().err.splitlines()[0] == (
        f"aqueduct-grpc: database: {url} ($AQUEDUCT_DATABASE_URL)"
    )
    with pytest.raises(SystemExit) as exited:
        cli.main(["usage", "--database-url", "postgresql://ops:hunter2@127.0.0.1:1/db"], environ={})
    assert exited.value.code not in (0, None)
    err = capsys.readouterr().err
    assert "postgresql://ops:***@127.0.0.1:1/db (--database-url)" in err
    assert "hunter2" not in err
