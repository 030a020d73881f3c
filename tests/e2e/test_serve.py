"""`aqueduct-grpc serve` as a user runs it: a real process, both doors, clean shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import aiohttp
import grpc
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.serve_process import Served


@pytest.fixture
def served(tmp_path: pathlib.Path) -> Iterator[Served]:
    process = Served(tmp_path / "data")
    yield process
    process.close()


def test_serve_on_embedded_defaults_answers_both_doors_and_stops_cleanly(served: Served):
    secret = served.wait_for(r"^\s+(aqk-\S+)\s*$").group(1)
    grpc_port = int(served.wait_for(r"gRPC on 127\.0\.0\.1:(\d+)").group(1))
    http_url = served.wait_for(r"HTTP door listening on (http://\S+)").group(1)
    # Asked for port 0, it says the ports it really has.
    serving = served.wait_for(r"serving aqueduct-demo: gRPC on 127\.0\.0\.1:(\d+), HTTP on (\S+)$")
    assert (int(serving.group(1)), serving.group(2)) == (grpc_port, http_url)
    assert grpc_port != 0 and not http_url.endswith(":0")

    sdk = openai.OpenAI(base_url=f"{http_url}/v1", api_key=secret, max_retries=0)
    result = sdk.images.generate(model="demo", prompt="a lighthouse", size="256x256")
    assert base64.b64decode(result.data[0].b64_json).startswith(b"\x89PNG")
    assert [m.id for m in sdk.models.list()] == ["aqueduct-demo"]
    sdk.close()

    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        reply = images_pb2_grpc.ImageServiceStub(channel).GenerateImages(
            images_pb2.GenerateImagesRequest(prompt="a lighthouse", size="256x256"),
            metadata=[("authorization", f"Bearer {secret}")],
        )
        assert reply.data[0].b64_json.startswith(b"\x89PNG")

    assert served.stop() == 0


def test_second_start_keeps_the_first_token(tmp_path: pathlib.Path):
    first = Served(tmp_path / "data")
    try:
        first.wait_for(r"gRPC on")
        assert any("aqk-" in line for line in first.output)
        assert first.stop() == 0
    finally:
        first.close()
    second = Served(tmp_path / "data")
    try:
        second.wait_for(r"HTTP door listening on")
        assert not any("aqk-" in line for line in second.output)
        assert second.stop() == 0
    finally:
        second.close()


def serve_once(*options: str) -> subprocess.CompletedProcess[str]:
    """`serve` run to its end (it must stop by itself), its output apart."""
    return subprocess.run(
        [sys.executable, "-m", "aqueduct_grpc", "serve", *options],
        capture_output=True,
        text=True,
        timeout=120,
    )


def said(stderr: str) -> list[str]:
    """What a process said on stderr, its log lines left out."""
    return [
        line
        for line in stderr.splitlines()
        if not re.match(r"\d{4}-\d\d-\d\d |[IWE]\d{4} |\{\"time\": ", line)
    ]


@pytest.mark.parametrize("door", ["gRPC", "HTTP"])
def test_a_taken_port_is_one_line_and_nothing_is_said_to_serve(tmp_path: pathlib.Path, door):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ports = ["--grpc-port", str(port), "--http-port", "0"]
        if door == "HTTP":
            ports = ["--grpc-port", "0", "--http-port", str(port)]
        result = serve_once(*ports, "--data-dir", str(tmp_path))
    assert result.returncode == 1
    if door == "gRPC":
        expected = (
            f"aqueduct-grpc: cannot listen for gRPC on 127.0.0.1:{port}: address already in use"
        )
    else:
        expected = (
            f"gateway-http: cannot listen for HTTP on 127.0.0.1:{port}: Address already in use"
        )
    assert said(result.stderr) == [expected]
    assert "Traceback" not in result.stderr
    # Nothing announced as serving, and no first token made for a server that never ran.
    assert "serving" not in result.stdout and "aqk-" not in result.stdout


def test_http_door_does_not_outlive_a_killed_serve(served: Served):
    served.wait_for(r"HTTP door listening on (http://\S+)")
    children = pathlib.Path(f"/proc/{served.process.pid}/task/{served.process.pid}/children")
    [door_pid] = [int(pid) for pid in children.read_text().split()]
    served.process.kill()
    served.process.wait()
    deadline = 600  # polls of 0.1 s; the kernel signals the child at once
    while pathlib.Path(f"/proc/{door_pid}").exists() and deadline:
        status = pathlib.Path(f"/proc/{door_pid}/status").read_text()
        if "State:\tZ" in status:
            break
        time.sleep(0.1)
        deadline -= 1
    assert deadline, "the HTTP door kept running after serve was killed"


async def test_a_caller_hanging_up_cancels_the_upstream_call(tmp_path: pathlib.Path):
    async with FakeUpstream() as upstream:
        upstream.plan(Succeed(delay=60))
        config = tmp_path / "config.yaml"
        config.write_text(
            "model_list:\n"
            "  - model_name: slow\n"
            f"    litellm_params: {{model: openai/gpt-image-1, api_base: {upstream.base_url}}}\n"
        )
        served = Served(tmp_path / "data", "--config", str(config))
        try:
            secret = (await asyncio.to_thread(served.wait_for, r"^\s+(aqk-\S+)\s*$")).group(1)
            found = await asyncio.to_thread(served.wait_for, r"HTTP door listening on (http://\S+)")
            async with aiohttp.ClientSession() as session:
                call = asyncio.ensure_future(
                    session.post(
                        f"{found.group(1)}/v1/images/generations",
                        json={"model": "slow", "prompt": "x"},
                        headers={"Authorization": f"Bearer {secret}"},
                    )
                )
                # Hang up only once the upstream is working on it.
                async with asyncio.timeout(60):
                    await upstream.wait_for_requests(1)
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
            async with asyncio.timeout(30):
                await upstream.wait_until(
                    lambda: bool(upstream.requests) and upstream.requests[0].outcome == "cancelled"
                )
            assert await asyncio.to_thread(served.stop) == 0
        finally:
            await asyncio.to_thread(served.close)


def command_line(pid: int) -> bytes:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it exited meanwhile
        return b""


def door_pids(pid: int) -> list[int]:
    children = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in children.read_text().split()]


def test_several_http_workers_share_the_port_the_os_picked(tmp_path: pathlib.Path):
    served = Served(tmp_path / "data", "--http-workers", "2")
    try:
        secret = served.wait_for(r"^\s+(aqk-\S+)\s*$").group(1)
        http_url = served.wait_for(r"serving .*, HTTP on (\S+)$").group(1)
        announced = [line.split()[-1] for line in served.output if "HTTP door listening on" in line]
        assert announced == [http_url, http_url]
        assert len(door_pids(served.process.pid)) == 2
        sdk = openai.OpenAI(base_url=f"{http_url}/v1", api_key=secret, max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["aqueduct-demo"]
        sdk.close()
        assert served.stop() == 0
    finally:
        served.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.parametrize("when", ["door starting", "serving"])
def test_a_signal_to_the_process_group_stops_it_without_a_traceback(
    tmp_path: pathlib.Path, stop_signal, when
):
    # As Ctrl-C in a terminal (or a supervisor) does: every process of the group gets it.
    process = subprocess.Popen(
        [sys.executable, "-m", "aqueduct_grpc", "serve", "--grpc-port", "0", "--http-port", "0",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        if when == "serving":
            for line in process.stdout:
                if "aqueduct-grpc serving" in line:
                    break
        else:
            # Once its door process runs gateway_http it is still importing (a second or
            # so): a signal then used to end the door with a KeyboardInterrupt traceback.
            for _ in range(6000):
                if process.poll() is not None or any(
                    b"gateway_http" in command_line(pid) for pid in door_pids(process.pid)
                ):
                    break
                time.sleep(0.01)
            assert door_pids(process.pid), "serve never started its HTTP door"
            time.sleep(0.1)  # past the interpreter's start, into the imports
        os.killpg(process.pid, stop_signal)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, rest
        assert "Traceback" not in rest and "KeyboardInterrupt" not in rest
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_a_door_that_dies_while_serving_stops_serve_saying_so(served: Served):
    served.wait_for(r"aqueduct-grpc serving")
    [door] = door_pids(served.process.pid)
    os.kill(door, signal.SIGKILL)
    assert served.process.wait(timeout=60) == 1
    served.wait_for(r"^aqueduct-grpc: the HTTP door exited with code -9 while serving$")
