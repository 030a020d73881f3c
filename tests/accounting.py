"""Helpers for the accounting tests: a priced config, tokens with policies, usage rows."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from aqueduct.images.v1 import images_pb2, images_pb2_grpc
from aqueduct_grpc.accounting.policy import Budgets, Limits, TokenPolicy
from aqueduct_grpc.accounting.usage_record import UsageRecord
from aqueduct_grpc.config import GatewayConfig, parse_config
from aqueduct_grpc.server import Core
from aqueduct_grpc.testing.fake_upstream import FakeUpstream
from tests.conftest import UPSTREAM_KEY, bearer, router_config

IMAGE_PRICE = 0.04  # priced-image, 1024x1024 standard
HD_PRICE = 0.08
INPUT_TOKEN_PRICE = 0.000005  # gpt-image-1
OUTPUT_TOKEN_PRICE = 0.00004


def priced_config(upstream: FakeUpstream, **sections: Any) -> GatewayConfig:
    """The router config plus prices, models with limit multipliers and the given sections."""
    raw = router_config(upstream)
    gpt = raw["model_list"][0]
    gpt["model_info"].update(
        input_cost_per_token=INPUT_TOKEN_PRICE, output_cost_per_token=OUTPUT_TOKEN_PRICE
    )

    def model(name: str, **info: Any) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": "openai/dall-e-3",
                "api_base": upstream.base_url,
                "api_key": "os.environ/TEST_UPSTREAM_KEY",
            },
            "model_info": {"mode": "image_generation", **info},
        }

    raw["model_list"] += [
        model(
            "priced-image",
            cost_per_image={"1024x1024": {"standard": IMAGE_PRICE, "hd": HD_PRICE}},
        ),
        # Aqueduct's meaning: N times the limits (each request counts 1/N).
        model("roomy-image", request_limit_multiplier=2),
        model("tight-image", request_limit_multiplier=0.5),
    ]
    raw.update(sections)
    return parse_config(raw, source="test", environ={"TEST_UPSTREAM_KEY": UPSTREAM_KEY})


async def token_with(
    gateway: Core,
    name: str,
    *,
    team_id: str | None = None,
    limits: Limits | None = None,
    budgets: Budgets | None = None,
    admin: bool = False,
) -> str:
    """Creates a token with that policy; returns its secret."""
    token, secret = await gateway.tokens.create(name)
    await gateway.policies.set_token_policy(
        TokenPolicy(
            token_id=token.id,
            team_id=team_id,
            admin=admin,
            limits=limits or Limits(),
            budgets=budgets or Budgets(),
        )
    )
    return secret


def usage_recorded(gateway: Core, monkeypatch: pytest.MonkeyPatch) -> asyncio.Event:
    """Set once the core commits a usage row (a call cut off is accounted as it unwinds)."""
    recorded = asyncio.Event()
    commit = gateway.usage.commit

    async def commit_and_signal(row: UsageRecord, *, wait: bool = True) -> None:
        await commit(row, wait=wait)
        recorded.set()

    monkeypatch.setattr(gateway.usage, "commit", commit_and_signal)
    return recorded


async def grpc_generate(
    stub: images_pb2_grpc.ImageServiceStub, secret: str, **fields: Any
) -> grpc.StatusCode:
    """One GenerateImages call (gpt-image-1 unless `fields` say otherwise); its status code."""
    request = images_pb2.GenerateImagesRequest(prompt="x", model="gpt-image-1")
    for key, value in fields.items():
        setattr(request, key, value)
    try:
        await stub.GenerateImages(request, metadata=bearer(secret))
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK
