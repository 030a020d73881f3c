"""Config for limits, budgets and prices; the pricing rules; the schema upgrade."""

from __future__ import annotations

import pathlib
import sqlite3
from typing import Any

import pytest
import sqlalchemy as sa

from aqueduct_grpc.accounting.policy import Budgets, Limits
from aqueduct_grpc.accounting.pricing import ModelPrices, PriceTable
from aqueduct_grpc.config import ConfigError, parse_config
from aqueduct_grpc.storage.database import open_engine, sqlite_url


def raw(**sections: Any) -> dict[str, Any]:
    info = sections.pop("model_info", {})
    return {
        "model_list": [
            {
                "model_name": "demo",
                "litellm_params": {"model": "builtin/demo"},
                "model_info": {"mode": "image_generation", **info},
            }
        ],
        **sections,
    }


def test_limits_budgets_and_prices_are_read():
    config = parse_config(
        raw(
            limits={"storage": "async+redis://127.0.0.1:6379", "requests_per_minute": 60},
            budgets={"per_month_usd": 100},
            model_info={
                "request_limit_multiplier": 0.5,
                "cost_per_image": {"1024x1024": {"standard": 0.04, "hd": 0.08}, "*": 0.1},
                "input_cost_per_token": 5e-6,
                "output_cost_per_token": 4e-5,
            },
        ),
        source="t",
    )
    assert config.limits == Limits(requests_per_minute=60)
    assert config.budgets == Budgets(per_month_usd=100.0)
    assert config.rate_limit_storage == "async+redis://127.0.0.1:6379"
    model = config.models[0]
    # Aqueduct's meaning: half the limits, so each request counts 2 toward them.
    assert (model.request_limit_multiplier, model.limit_weight) == (0.5, 2.0)
    assert model.prices is not None and model.prices.image_price("1024x1024", "hd") == 0.08
    assert model.prices.image_price("512x512", None) == 0.1  # "*" covers the rest


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"limits": {"storage": "memcached://host"}}, "limits.storage"),
        ({"limits": ["requests_per_minute"]}, "mapping"),
        ({"limits": {"requests_per_hour": 5}}, "unknown key"),
        ({"limits": {"images_per_day": -1}}, "non-negative"),
        ({"budgets": {"per_day_usd": "ten"}}, "non-negative"),
        ({"model_info": {"request_limit_multiplier": 0}}, "request_limit_multiplier"),
        ({"model_info": {"request_limit_multiplier": float("nan")}}, "request_limit_multiplier"),
        ({"model_info": {"request_limit_multiplier": float("inf")}}, "request_limit_multiplier"),
        ({"model_info": {"request_limit_multiplier": "2"}}, "request_limit_multiplier"),
        ({"model_info": {"cost_per_image": {"1024x1024": {"hd": -2}}}}, "non-negative"),
        ({"model_info": {"input_cost_per_token": 1e-6}}, "both"),
        # A size with no price at all would fail every request of that size.
        ({"model_info": {"cost_per_image": {"1024x1024": {}}}}, "map qualities to prices"),
    ],
)
def test_bad_accounting_config_is_refused(sections, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw(**sections), source="t")


def test_prices_never_guess_and_never_make_a_priced_model_free():
    table = PriceTable(
        [
            ("per-image", ModelPrices(per_image={"1024x1024": {"standard": 0.04}})),
            ("per-token", ModelPrices(input_per_token=1e-6, output_per_token=1e-5)),
            ("free-for-all", None),
        ]
    )
    common = {"size": "1024x1024", "quality": "standard", "input_tokens": 10, "output_tokens": 100}
    assert table.cost("per-image", succeeded=True, images=3, **common) == pytest.approx(0.12)
    assert table.cost("per-token", succeeded=True, images=1, **common) == pytest.approx(0.00101)
    assert table.cost("free-for-all", succeeded=True, images=1, **common) is None
    assert table.cost("per-image", succeeded=False, images=0, **common) == 0.0
    # Not in the table (or not sent): the table's highest price, so omitting
    # quality or size can never slip a request past a budget for free.
    hd = {**common, "quality": "hd"}
    assert table.cost("per-image", succeeded=True, images=1, **hd) == pytest.approx(0.04)
    assert table.estimate("per-image", 1, None, None) == pytest.approx(0.04)
    # A stream cut off after delivering images still costs them.
    assert table.cost("per-image", succeeded=False, images=2, **common) == pytest.approx(0.08)
    assert table.estimate("per-image", 2, "1024x1024", "standard") == pytest.approx(0.08)
    assert table.estimate("per-token", 2, "1024x1024", "standard") is None


async def test_an_older_database_gets_the_new_columns(tmp_path: pathlib.Path):
    folder = tmp_path / "old"
    folder.mkdir()
    with sqlite3.connect(folder / "aqueduct.db") as old:
        old.execute(
            "CREATE TABLE usage (id INTEGER PRIMARY KEY, created_at FLOAT NOT NULL, "
            "status VARCHAR(32) NOT NULL, latency_ms FLOAT NOT NULL, images INTEGER NOT NULL)"
        )
        old.execute(
            "INSERT INTO usage (created_at, status, latency_ms, images) VALUES (1, 'OK', 2, 1)"
        )
    engine = await open_engine(sqlite_url(folder))
    try:
        async with engine.connect() as connection:
            row = (await connection.execute(sa.text("SELECT team_id, cost FROM usage"))).one()
        assert tuple(row) == (None, None)
    finally:
        await engine.dispose()
