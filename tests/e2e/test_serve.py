"""`aqueduct-grpc serve` as a user runs it: a real process, both doors, clean shutdown."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import pathlib
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


def test_a_taken_port_is_a_clear_error_not_a_traceback(tmp_path: pathlib.Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "aqueduct_grpc",
                "serve",
                "--grpc-port",
                str(port),
                "--data-dir",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


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
