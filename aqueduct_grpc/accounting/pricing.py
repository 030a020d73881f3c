"""Prices per model and the cost of one request.

Two ways to price, as the upstreams bill: per image by size and quality (as
OpenAI prices DALL-E), or per input/output token when the upstream reports
token usage (GPT image models). A model with no prices has no cost (None),
never a guess; a model with a per-image table charges its highest price for
a size or quality the table does not list, never nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ANY", "ModelPrices", "PriceTable", "parse_prices"]

# Matches any size or quality (including an unset one) not listed explicitly.
ANY = "*"


@dataclass(frozen=True)
class ModelPrices:
    """USD prices of one model."""

    per_image: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    input_per_token: float | None = None
    output_per_token: float | None = None

    @property
    def per_token(self) -> bool:
        """Whether the model is priced by upstream tokens."""
        return self.input_per_token is not None and self.output_per_token is not None

    def image_price(self, size: str | None, quality: str | None) -> float | None:
        """The price of one image of that size and quality; None with no per-image table.

        When the table has no entry for the size or quality asked for (or the
        request left them out), the highest price it lists applies: a request
        must never become free, and so slip past a budget, by omitting them.
        """
        if not self.per_image:
            return None
        by_quality = self.per_image.get(size or ANY) or self.per_image.get(ANY)
        if by_quality is None:
            return max(p for prices in self.per_image.values() for p in prices.values())
        price = by_quality.get(quality or ANY)
        if price is None:
            price = by_quality.get(ANY)
        return price if price is not None else max(by_quality.values())


def parse_prices(info: Mapping[str, Any], where: str) -> ModelPrices | None:
    """Prices from a model's `model_info` (None when it sets none); raises ValueError."""
    raw_images = info.get("cost_per_image")
    token_prices = [info.get("input_cost_per_token"), info.get("output_cost_per_token")]
    if raw_images is None and all(p is None for p in token_prices):
        return None
    per_image: dict[str, dict[str, float]] = {}
    if raw_images is not None:
        if not isinstance(raw_images, dict):
            raise ValueError(f"{where}.cost_per_image must map sizes to {{quality: price}}")
        for size, by_quality in raw_images.items():
            if isinstance(by_quality, int | float) and not isinstance(by_quality, bool):
                by_quality = {ANY: by_quality}  # one price for every quality
            if not isinstance(by_quality, dict) or not by_quality:
                raise ValueError(f"{where}.cost_per_image.{size} must map qualities to prices")
            per_image[str(size)] = {
                str(q): _price(p, f"{where}.cost_per_image.{size}.{q}")
                for q, p in by_quality.items()
            }
    if (token_prices[0] is None) != (token_prices[1] is None):
        raise ValueError(f"{where}: set both input_cost_per_token and output_cost_per_token")
    return ModelPrices(
        per_image=per_image,
        input_per_token=None
        if token_prices[0] is None
        else _price(token_prices[0], f"{where}.input_cost_per_token"),
        output_per_token=None
        if token_prices[1] is None
        else _price(token_prices[1], f"{where}.output_cost_per_token"),
    )


def _price(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ValueError(f"{where} must be a non-negative number (USD)")
    return float(value)


class PriceTable:
    """Prices by public model name."""

    def __init__(self, prices: Iterable[tuple[str, ModelPrices | None]]) -> None:
        """Creates the PriceTable.

        Args:
            prices: (model name, its prices or None) pairs.
        """
        self._prices = {name: p for name, p in prices if p is not None}

    def cost(
        self,
        model: str | None,
        *,
        succeeded: bool,
        images: int,
        size: str | None,
        quality: str | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> float | None:
        """USD cost of one request, or None when its price is not known."""
        prices = self._prices.get(model) if model is not None else None
        if prices is None:
            return None
        if not succeeded and not images and input_tokens is None:
            return 0.0  # upstreams bill generated images, not failed requests
        # A stream cut off after delivering images still cost them.
        if prices.per_token and input_tokens is not None and output_tokens is not None:
            return input_tokens * prices.input_per_token + output_tokens * prices.output_per_token  # type: ignore[operator]
        price = prices.image_price(size, quality)
        return None if price is None else images * price

    def estimate(self, model: str, n: int, size: str | None, quality: str | None) -> float | None:
        """The cost known before calling the upstream (per-image prices only), else None."""
        prices = self._prices.get(model)
        if prices is None or prices.per_token:
            return None
        price = prices.image_price(size, quality)
        return None if price is None else n * price
