"""`kill -9` of `serve` under load: every request it took has exactly one usage row."""

from __future__ import annotations

import asyncio
import collections
import pathlib

import aiohttp
import sqlalchemy as sa

from aqueduct_grpc.accounting.usage_journal import INTERRUPTED
from aqueduct_grpc.storage.database import new_engine, usage_table
from aqueduct_grpc.testing.fake_upstream import FakeUpstream, Succeed
from tests.accounting import IMAGE_PRICE
from tests.serve_process import Served

ANSWERED = 200  # answers before the kill
IN_FLIGHT = 6


async def usage_by_status(database_url: str) -> dict[str, list[tuple[str, float | None]]]:
    engine = new_engine(database_url)
    try:
        async with engine.connect() as connection:
            result = await connection.execute(
                sa.select(usage_table.c.status, usage_table.c.request_key, usage_table.c.cost)
            )
            found = collections.defaultdict(list)
            for status, key, cost in result:
                found[status].append((key, cost))
            return dict(found)
    finally:
        await engine.dispose()


async def test_kill_9_loses_no_answered_request_and_shows_the_interrupted(
    tmp_path: pathlib.Path, database_url: str
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
        options = ("--config", str(config), "--database-url", database_url)
        served = Served(data_dir, *options)
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

    before = await usage_by_status(database_url)
    if not database_url.startswith("sqlite"):
        # On a database server each answer left after its row's commit (and
        # some rows were committed just before the kill cut their answers off).
        assert len(before["OK"]) >= answered
    assert INTERRUPTED not in before

    # The next start claims the dead process's journal.
    restarted = Served(data_dir, *options)
    try:
        await asyncio.to_thread(restarted.wait_for, r"HTTP door listening on")
        after = await usage_by_status(database_url)
        assert restarted.stop() == 0
    finally:
        restarted.close()
    # Every answered request has its row: on SQLite its journal line made it
    # durable before the answer left, and the restart wrote it.
    assert len(after["OK"]) >= answered
    assert set(before.get("OK", [])) <= set(after["OK"])
    # The held ones, and any of the load that the kill caught in flight.
    interrupted = after[INTERRUPTED]
    assert len(interrupted) >= IN_FLIGHT
    # Budgets count the admitted ones at their known price (the held ones
    # reached the upstream; one the kill caught before admission costs nothing).
    costs = [cost for _, cost in interrupted]
    assert set(costs) <= {IMAGE_PRICE, None} and costs.count(IMAGE_PRICE) >= IN_FLIGHT
    keys = [key for rows in after.values() for key, _ in rows]
    assert len(keys) == len(set(keys))
