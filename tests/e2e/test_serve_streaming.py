"""`serve` as a process: a streaming client that leaves cancels the upstream, even in silence."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import subprocess

import aiohttp

from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.serve_process import Served


async def test_leaving_before_the_first_event_cancels_the_upstream(
    tmp_path: pathlib.Path, upstream: FakeUpstream
):
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "model_list": [
                    {
                        "model_name": "gpt-image-1",
                        "litellm_params": {
                            "model": "openai/gpt-image-1",
                            "api_base": upstream.base_url,
                            "api_key": "sk-test",
                        },
                        "model_info": {"supports_streaming": True},
                    }
                ]
            }
        )
    )
    served = Served(tmp_path / "data", "--config", str(config))
    try:
        found = await asyncio.to_thread(served.wait_for, r"^\s+(aqk-\S+)\s*$")
        secret = found.group(1)
        found = await asyncio.to_thread(served.wait_for, r"HTTP door listening on (http://\S+)")
        http_url = found.group(1)
        # The upstream says nothing for 30 s: no event is written, so only the
        # disconnect itself can tell the door that the client left.
        upstream.plan(Succeed(delay=30))
        async with aiohttp.ClientSession() as session:
            posting = asyncio.create_task(
                session.post(
                    f"{http_url}/v1/images/generations",
                    json={"model": "gpt-image-1", "prompt": "x", "stream": True},
                    headers={"Authorization": f"Bearer {secret}"},
                )
            )
            async with asyncio.timeout(20):
                await upstream.wait_for_requests(1)
            posting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await posting
        async with asyncio.timeout(20):
            await upstream.wait_until(lambda: upstream.requests[0].outcome == "cancelled")
        assert upstream.requests[0].json["stream"] is True
        assert await asyncio.to_thread(served.stop) == 0
    finally:
        # SIGTERM first: serve then stops its HTTP door processes too (a bare
        # kill would orphan them, holding the output pipe open).
        if served.process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(served.stop)
        served.close()
