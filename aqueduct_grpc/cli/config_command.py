"""`aqueduct-grpc config check FILE`: the config as the gateway reads it, without starting anything.

Prints the resolved models with their aliases, deployments, prices and
streaming, then the default limits and budgets; LiteLLM keys that are not
acted on are warnings (stderr). An invalid config prints every problem found
and exits 1. Secrets never appear: a deployment says whether it has an API
key, and URLs lose their passwords.
"""

from __future__ import annotations

import argparse
import sys
import urllib.parse
from collections.abc import Mapping

from aqueduct_grpc.accounting.pricing import ANY, ModelPrices
from aqueduct_grpc.config import Deployment, GatewayConfig, ModelConfig, load_config

__all__ = ["run_config"]


def run_config(args: argparse.Namespace) -> None:
    """`config check FILE`; a ConfigError propagates (the caller prints it and exits 1)."""
    config = load_config(args.file)
    for warning in config.warnings:
        print(f"aqueduct-grpc: warning: {warning}", file=sys.stderr)
    deployments = sum(len(m.deployments) for m in config.models)
    print(f"{args.file}: valid ({len(config.models)} models, {deployments} deployments)")
    print(f"default model: {config.default_model}")
    for model in config.models:
        print()
        _print_model(model)
    print()
    _print_accounting(config)


def _print_model(model: ModelConfig) -> None:
    aliases = f" (aliases: {', '.join(model.aliases)})" if model.aliases else ""
    print(f"{model.name}{aliases}")
    print(
        f"  unknown parameters: {model.unknown_parameters}; "
        f"streams: {'yes' if model.supports_streaming else 'no (answered as completed events)'}; "
        f"limit multiplier: {model.request_limit_multiplier:g}"
    )
    for line in _prices(model.prices):
        print(f"  {line}")
    for index, deployment in enumerate(model.deployments, 1):
        print(f"  deployment {index}: {_deployment(deployment)}")


def _deployment(deployment: Deployment) -> str:
    parts = [f"{deployment.provider}/{deployment.upstream_model}"]
    if deployment.api_base:
        parts[0] += f" at {_without_password(deployment.api_base)}"
    if deployment.api_version:
        parts.append(f"api version {deployment.api_version}")
    if deployment.provider != "builtin":
        parts.append("api key set" if deployment.api_key else "no api key")
    parts.append(f"timeout {deployment.timeout:g} s")
    return ", ".join(parts)


def _prices(prices: ModelPrices | None) -> list[str]:
    if prices is None:
        return ["prices: none (its usage has no cost)"]
    lines = []
    if prices.per_image:
        sizes = "; ".join(
            f"{size}: {_by_quality(by_quality)}" for size, by_quality in prices.per_image.items()
        )
        lines.append(f"prices per image (USD; * is any other): {sizes}")
    if prices.input_per_token is not None and prices.output_per_token is not None:
        lines.append(
            f"prices per token (USD): input {_usd(prices.input_per_token)}, "
            f"output {_usd(prices.output_per_token)}"
        )
    return lines


def _by_quality(prices: Mapping[str, float]) -> str:
    if list(prices) == [ANY]:
        return _usd(prices[ANY])  # one price for every quality
    return ", ".join(f"{quality} {_usd(price)}" for quality, price in prices.items())


def _usd(amount: float) -> str:
    # Decimals as written in the config (0.000005, not 5e-06).
    return f"{amount:.10f}".rstrip("0").rstrip(".")


def _print_accounting(config: GatewayConfig) -> None:
    limits = ", ".join(f"{k}={v:g}" for k, v in config.limits.as_dict().items()) or "none"
    budgets = ", ".join(f"{k}={v:g}" for k, v in config.budgets.as_dict().items()) or "none"
    storage = _without_password(config.rate_limit_storage)
    print(f"limits (each token's default; counters in {storage}): {limits}")
    print(f"budgets (each token's default): {budgets}")


def _without_password(url: str) -> str:
    """`url` with any password in it replaced by ***."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
