"""The processes' log layouts: JSON lines and logfmt carry a line's structured fields."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import time
from collections.abc import Iterator

import hypothesis
import pytest
from hypothesis import strategies as st

from gateway_http.log_format import JsonLineFormatter, LoopBatchedStreamHandler, configure_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    switches = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")
    saved = {name: getattr(logging, name) for name in switches}
    yield
    root.handlers[:], root.level = handlers, level
    for name, value in saved.items():
        setattr(logging, name, value)


def test_a_logger_set_up_already_is_left_alone(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    root.handlers[:] = [logging.NullHandler()]
    configure_logging("INFO", "json")
    emit()
    assert capsys.readouterr().err == "" and isinstance(root.handlers[0], logging.NullHandler)


def emit() -> None:
    logging.getLogger("gateway_http.access").info(
        "GET %s %d", "/v1/models", 200, extra={"request_id": "req_1", "status": 200}
    )
    logging.getLogger("other").debug("not shown at INFO")


def test_json_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", replace=True)
    emit()
    [line] = capsys.readouterr().err.splitlines()
    record = json.loads(line)
    assert (record["message"], record["request_id"], record["status"]) == (
        "GET /v1/models 200",
        "req_1",
        200,
    )
    assert (record["level"], record["logger"]) == ("INFO", "gateway_http.access")


def test_json_lines_carry_a_traceback_and_values_json_cannot_hold(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", replace=True)
    try:
        raise KeyError("lost")
    except KeyError:
        logging.getLogger("x").exception("failed", extra={"where": pathlib.PurePosixPath("/a")})
    record = json.loads(capsys.readouterr().err)
    assert record["message"] == "failed" and record["level"] == "ERROR"
    assert record["where"] == "/a"
    assert "KeyError: 'lost'" in record["exc_info"]
    stamp = time.strptime(record["time"].partition(",")[0], "%Y-%m-%d %H:%M:%S")
    assert abs(time.mktime(stamp) - time.time()) < 120 and len(record["time"]) == 23


# What makeRecord refuses as `extra` (it would overwrite the record's own attributes).
RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
}


@hypothesis.settings(max_examples=200, deadline=None)
@hypothesis.given(
    fields=st.dictionaries(
        st.text(min_size=1).filter(lambda key: key not in RECORD_ATTRIBUTES),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text()),
    ),
    message=st.text(),
)
def test_any_extra_fields_come_out_as_one_json_line(
    fields: dict[str, object], message: str
) -> None:
    record = logging.getLogger("y").makeRecord(
        "y", logging.INFO, "", 0, "%s", (message,), None, extra=fields
    )
    line = JsonLineFormatter().format(record)
    assert "\n" not in line  # one line, whatever the texts hold
    parsed = json.loads(line)
    assert parsed["message"] == message and parsed["logger"] == "y"
    assert {key: parsed[key] for key in fields} == fields


def test_logfmt_pairs_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "logfmt", replace=True)
    emit()
    [line] = capsys.readouterr().err.splitlines()
    assert 'msg="GET /v1/models 200"' in line and "request_id=req_1" in line
    assert "status=200" in line and "level=INFO" in line


def test_auto_is_json_when_stderr_is_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", replace=True)
    emit()
    assert json.loads(capsys.readouterr().err)["request_id"] == "req_1"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="json, logfmt"):
        configure_logging("INFO", "xml", replace=True)


async def written(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The messages of the lines written next (waits for a batch, up to 10 s)."""
    for _ in range(1000):
        err = capsys.readouterr().err
        if err:
            return [json.loads(line)["message"] for line in err.splitlines()]
        await asyncio.sleep(0.01)
    raise AssertionError("nothing was written")


async def test_lines_logged_in_a_loop_are_written_together_a_little_later(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", replace=True)
    log = logging.getLogger("gateway_http.access")
    for number in range(3):
        log.info("line %d", number)
    await asyncio.sleep(0)
    assert capsys.readouterr().err == ""  # queued: one write for the batch, later
    assert await written(capsys) == ["line 0", "line 1", "line 2"]


async def test_a_warning_is_written_at_once_after_what_is_queued(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json", replace=True)
    logging.getLogger("gateway_http.access").info("queued")
    logging.getLogger("gateway_http.app").warning("at once")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["message"] for line in lines] == ["queued", "at once"]


def test_lines_outside_a_loop_are_written_at_once(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", "json", replace=True)
    logging.getLogger("gateway_http.access").info("now")
    assert json.loads(capsys.readouterr().err)["message"] == "now"


class Writes:
    """A stream that records each write."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        self.writes.append(text)

    def flush(self) -> None:
        pass


async def test_a_batch_is_written_in_whole_lines_no_write_over_a_pipe_buffer() -> None:
    handler = LoopBatchedStreamHandler(delay=3600)
    stream = Writes()
    handler.setStream(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))
    lines = [f"{n:04d} " + "x" * 95 for n in range(100)]
    for text in lines:
        handler.handle(logging.LogRecord("a", logging.INFO, "", 0, text, (), None))
    assert stream.writes == []  # queued: the delay is an hour
    handler.close()  # a handler replaced or closed writes what it holds
    assert "".join(stream.writes).splitlines() == lines
    assert len(stream.writes) > 1
    assert all(len(write) <= 4096 // 2 and write.endswith("\n") for write in stream.writes)


def test_a_loop_closed_before_its_batch_was_written_does_not_hold_later_ones() -> None:
    handler = LoopBatchedStreamHandler(delay=0.01)
    stream = Writes()
    handler.setStream(stream)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(message)s"))

    def log(text: str) -> None:
        handler.handle(logging.LogRecord("a", logging.INFO, "", 0, text, (), None))

    async def first() -> None:
        log("first")  # its loop ends before the batch's timer

    async def second() -> None:
        log("second")
        for _ in range(500):
            if stream.writes:
                return
            await asyncio.sleep(0.01)

    asyncio.run(first())
    asyncio.run(second())
    assert "".join(stream.writes).splitlines() == ["first", "second"]
