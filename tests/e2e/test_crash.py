"""`kill -9` of `serve` under load: every request it took has exactly one usage row."""

from __future__ import annotations

import asyncio
import collections
import pathlib
import sqlite3

import aiohttp

from aqueduct_grpc.accounting.usage_journal import INTERRUPTED
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.accounting import IMAGE_PRICE
from tests.e2e.test_serve import Served

ANSWERED = 200  # answers before the kill
IN_FLIGHT = 6


def usage_by_status(data_dir: pathlib.Path) -> dict[str, list[tuple[str, float | None]]]:
    with sqlite3.connect(data_dir / "aqueduct.db") as database:
        found = collections.defaultdict(list)
        for status, key, cost in database.execute(
            "SELECT status, request_key, cost FROM usage WHERE requested_model = 'priced'"
        ):
            found[status].append((key, cost))
        return dict(found)


async def test_kill_9_loses_no_answered_request_and_shows_the_interrupted(
    tmp_path: pathlib.Path,
):
    config = tmp_path / "config.yaml"
    async with FakeUpstream() as upstream:
        config.write_text(
            "model_list:\n"
            "  - model_name: priced\n"
            f"    litellm_params: {{model: openai/dall-e-3, api_base: {upstream.base_url}}}\n"
            "    model_info:\n"
            f"      cost_per_image: {{1024x1024: {{standard: {IMAGE_PRICE}}}}}\n"
        )
        data_dir = tmp_path / "data"
        served = Served(data_dir, "--config", str(config))
        try:
            secret = (await asyncio.to_thread(served.wait_for, r"^\s+(aqk-\S+)\s*$")).group(1)
            found = await asyncio.to_thread(served.wait_for, r"HTTP door listening on (http://\S+)")
            url = f"{found.group(1)}/v1/images/generations"
            body = {"model": "priced", "prompt": "x", "size": "1024x1024", "quality": "standard"}
            headers = {"Authorization": f"Bearer {secret}"}
            answered = 0
            async with aiohttp.ClientSession() as session:

                async def generate() -> int:
                    try:
                        async with session.post(url, json=body, headers=headers) as response:
                            await response.read()
                            return response.status
                    except aiohttp.ClientError:
                        return 0  # the process died under it

                enough = asyncio.Event()

                async def keep_generating() -> None:
                    nonlocal answered
                    while await generate() == 200:
                        answered += 1
                        if answered >= ANSWERED:
                            enough.set()

                # These never come back: the upstream holds them until the kill.
                upstream.plan(*[Succeed(delay=120)] * IN_FLIGHT)
                held = [asyncio.ensure_future(generate()) for _ in range(IN_FLIGHT)]
                async with asyncio.timeout(60):
                    await upstream.wait_for_requests(IN_FLIGHT)
                # Then a steady load, killed while answers are leaving.
                load = [asyncio.ensure_future(keep_generating()) for _ in range(16)]
                async with asyncio.timeout(60):
                    await enough.wait()
                served.process.kill()
                await asyncio.gather(*load)
                # Cut off (0) or refused by the door that outlived its core (503).
                assert 200 not in await asyncio.gather(*held)
        finally:
            served.close()

    # Each answer left after its row was committed (some rows were
    # committed just before the kill cut their answers off).
    before = usage_by_status(data_dir)
    assert len(before["OK"]) >= answered and INTERRUPTED not in before

    # The next start claims the dead process's journal.
    restarted = Served(data_dir, "--config", str(config))
    try:
        await asyncio.to_thread(restarted.wait_for, r"HTTP door listening on")
        after = usage_by_status(data_dir)
        assert restarted.stop() == 0
    finally:
        restarted.close()
    assert after["OK"] == before["OK"]
    # The held ones, and any of the load that the kill caught in flight.
    interrupted = after[INTERRUPTED]
    assert len(interrupted) >= IN_FLIGHT
    # Budgets count them: each at its known price.
    assert {cost for _, cost in interrupted} == {IMAGE_PRICE}
    keys = [key for rows in after.values() for key, _ in rows]
    assert len(keys) == len(set(keys))
