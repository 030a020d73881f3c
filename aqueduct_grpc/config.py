"""Gateway configuration: a YAML file in LiteLLM's router format plus a `gateway` section.

An existing Aqueduct/LiteLLM router config works unchanged: entries of
`model_list` whose `model_info.mode` is `image_generation` (LiteLLM's
spelling), `image_generations` (Aqueduct's) or unset become image models;
others (chat, embeddings) are skipped. `api_key`/`api_base`
values of the form `os.environ/NAME` are read from the environment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from aqueduct_grpc.accounting.policy import Budgets, Limits, parse_budgets, parse_limits
from aqueduct_grpc.accounting.pricing import ModelPrices, parse_prices
from aqueduct_grpc.accounting.rate_limits import redis_url
from aqueduct_grpc.images.image_fetcher import AllowedHost, parse_allowed_host

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "IMAGE_MODES",
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "ModelConfig",
    "load_config",
    "parse_config",
]

Provider = Literal["openai", "azure", "builtin"]
UnknownParameters = Literal["reject", "forward"]

# What `serve` runs with no --config: the offline demo model only, so a fresh
# machine with no API key can generate images at once.
DEFAULT_CONFIG_YAML = """\
model_list:
  - model_name: aqueduct-demo
    litellm_params:
      model: builtin/demo
    model_info:
      mode: image_generation
      aliases: [demo]
      description: Offline demo/test backend that renders placeholder PNGs locally.
"""

MIB = 1024 * 1024

# `model_info.mode` of an image model: LiteLLM writes the singular, Aqueduct's
# router configs (its example_router_config.yaml) the plural.
IMAGE_MODES = ("image_generation", "image_generations")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class Deployment:
    """One upstream that serves a model (LiteLLM's `litellm_params`)."""

    provider: Provider
    upstream_model: str
    api_base: str | None = None
    api_key: str | None = field(default=None, repr=False)
    api_version: str | None = None
    timeout: float = 600.0


@dataclass(frozen=True)
class ModelConfig:
    """A public model name, its aliases and the deployments behind it."""

    name: str
    deployments: tuple[Deployment, ...]
    aliases: tuple[str, ...] = ()
    unknown_parameters: UnknownParameters = "reject"
    owned_by: str = "aqueduct"
    # OpenAI's model `created` (Unix time); None: when the gateway first served it.
    created: int | None = None
    # Aqueduct's meaning: this model gets N times the limits, so each of its
    # requests (and images) counts 1/N toward them.
    request_limit_multiplier: float = 1.0
    prices: ModelPrices | None = None
    # Whether the upstream can stream partial images (gpt-image models can).
    supports_streaming: bool = False

    @property
    def limit_weight(self) -> float:
        """What one request or image of this model counts toward the limits (1/multiplier)."""
        return 1.0 / self.request_limit_multiplier


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the core needs at start-up."""

    models: tuple[ModelConfig, ...]
    default_model: str | None = None
    max_message_bytes: int = 64 * MIB
    max_upstream_response_bytes: int = 256 * MIB
    upstream_max_connections: int = 4096
    token_cache_seconds: float = 5.0
    usage_flush_rows: int = 500
    # Default limits and budgets of every token (overridable per token).
    limits: Limits = field(default_factory=Limits)
    budgets: Budgets = field(default_factory=Budgets)
    # Where rate-limit counters live: `memory://`, or `redis://host:6379/0` shared by replicas.
    rate_limit_storage: str = "memory://"
    # Images returned by URL (response_format "url").
    public_base_url: str | None = None
    image_url_ttl_seconds: float = 3600.0
    image_sweep_seconds: float = 60.0
    # `file:///path` or `s3://bucket/prefix`; None: files in the data dir.
    image_store_url: str | None = None
    # "serve": the gateway sends an image URL's bytes; "presigned": it redirects
    # to the object store's own presigned URL (s3:// stores only).
    image_redirect: str = "serve"
    image_url_secret: str | None = field(default=None, repr=False)
    # Hosts whose http(s) image URLs edits may reference; empty: no URL is fetched.
    fetch_image_hosts: tuple[AllowedHost, ...] = ()
    fetch_image_timeout_seconds: float = 30.0


def load_config(path: str | os.PathLike[str] | None) -> GatewayConfig:
    """Reads the YAML file at `path`, or the embedded default when None."""
    if path is None:
        return parse_config(yaml.safe_load(DEFAULT_CONFIG_YAML), source="<embedded default>")
    text = pathlib.Path(path).read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(raw, source=str(path))


def parse_config(raw: Any, *, source: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Builds the config from parsed YAML; `environ` resolves `os.environ/` references."""
    env = dict(os.environ) if environ is None else environ
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a model_list")
    entries = raw.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: model_list must be a non-empty list")
    grouped: dict[str, dict[str, Any]] = {}
    for index, entry in enumerate(entries):
        where = f"{source}: model_list[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            raise ConfigError(f"{where}: needs a model_name")
        info = entry.get("model_info") or {}
        if not isinstance(info, dict):
            raise ConfigError(f"{where}: model_info must be a mapping")
        if info.get("mode", "image_generation") not in IMAGE_MODES:
            continue
        name = entry["model_name"]
        group = grouped.setdefault(name, {"deployments": [], "info": {}})
        group["deployments"].append(_deployment(entry.get("litellm_params"), where, env))
        group["info"].update(info)
    if not grouped:
        raise ConfigError(
            f"{source}: model_list has no image_generation model "
            "(model_info.mode image_generation, image_generations or unset)"
        )
    models = tuple(_model(name, g["deployments"], g["info"], source) for name, g in grouped.items())
    _check_names_unique(models, source)
    settings = raw.get("gateway") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: gateway must be a mapping")
    if "image_url_secret" in settings:  # may be os.environ/NAME, like api keys
        secret = _resolve(settings["image_url_secret"], f"{source}: gateway.image_url_secret", env)
        settings = {**settings, "image_url_secret": secret}
    gateway = _gateway(models, settings, source)
    return _accounting(gateway, raw, source)


def _accounting(gateway: GatewayConfig, raw: dict[str, Any], source: str) -> GatewayConfig:
    """The top-level `limits` and `budgets` sections (token defaults)."""
    if not isinstance(raw.get("limits") or {}, dict):
        raise ConfigError(f"{source}: limits must be a mapping")
    limits = dict(raw.get("limits") or {})
    storage = limits.pop("storage", gateway.rate_limit_storage)
    if not isinstance(storage, str):
        raise ConfigError(f"{source}: limits.storage must be a URL (memory:// or redis://…)")
    try:
        redis_url(storage)  # checked now, so that a typo stops the start, not a request
    except ValueError as error:
        raise ConfigError(f"{source}: limits.storage {error}") from None
    try:
        return dataclasses.replace(
            gateway,
            limits=parse_limits(limits, f"{source}: limits"),
            budgets=parse_budgets(raw.get("budgets"), f"{source}: budgets"),
            rate_limit_storage=storage,
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None


def _deployment(params: Any, where: str, env: dict[str, str]) -> Deployment:
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"{where}: litellm_params.model is required (e.g. openai/gpt-image-1)")
    provider, _, upstream_model = params["model"].partition("/")
    if provider not in ("openai", "azure", "builtin") or not upstream_model:
        raise ConfigError(
            f"{where}: litellm_params.model {params['model']!r} must be "
            "openai/<model>, azure/<deployment> or builtin/demo"
        )
    api_base = _resolve(params.get("api_base"), f"{where}: api_base", env)
    api_key = _resolve(params.get("api_key"), f"{where}: api_key", env)
    if provider == "openai":
        api_base = api_base or "https://api.openai.com/v1"
    if provider == "azure" and not api_base:
        raise ConfigError(f"{where}: azure deployments need api_base")
    timeout = params.get("timeout", 600)
    if not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{where}: timeout must be a positive number of seconds")
    return Deployment(
        provider=provider,  # type: ignore[arg-type]
        upstream_model=upstream_model,
        api_base=api_base.rstrip("/") if api_base else None,
        api_key=api_key,
        api_version=params.get("api_version") or ("2024-10-21" if provider == "azure" else None),
        timeout=float(timeout),
    )


def _resolve(value: Any, where: str, env: dict[str, str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string")
    if value.startswith("os.environ/"):
        name = value.removeprefix("os.environ/")
        if name not in env:
            raise ConfigError(f"{where} refers to environment variable {name}, which is not set")
        return env[name]
    return value


def _model(
    name: str, deployments: list[Deployment], info: dict[str, Any], source: str
) -> ModelConfig:
    aliases = info.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ConfigError(f"{source}: model {name!r}: aliases must be a list of names")
    unknown = info.get("unknown_parameters", "reject")
    if unknown not in ("reject", "forward"):
        raise ConfigError(f"{source}: model {name!r}: unknown_parameters must be reject or forward")
    builtin = any(d.provider == "builtin" for d in deployments)
    multiplier = info.get("request_limit_multiplier", 1)
    if (
        isinstance(multiplier, bool)
        or not isinstance(multiplier, int | float)
        or not 0 < multiplier < math.inf  # NaN fails this too
    ):
        raise ConfigError(
            f"{source}: model {name!r}: request_limit_multiplier must be a positive, finite number"
        )
    try:
        prices = parse_prices(info, f"{source}: model {name!r}")
    except ValueError as error:
        raise ConfigError(str(error)) from None
    # Known to stream: the demo and OpenAI's GPT image models. Others answer
    # `stream: true` too, from one unary call (see upstreams/dispatch.py).
    streaming = info.get(
        "supports_streaming",
        builtin or all(d.upstream_model.startswith("gpt-image") for d in deployments),
    )
    if not isinstance(streaming, bool):
        raise ConfigError(f"{source}: model {name!r}: supports_streaming must be true or false")
    return ModelConfig(
        name=name,
        deployments=tuple(deployments),
        aliases=tuple(aliases),
        unknown_parameters=unknown,
        owned_by=str(info.get("owned_by", "aqueduct" if builtin else deployments[0].provider)),
        # OpenAI lists a creation time; without one configured, its first sighting
        # (images/model_times.py), so that it is the same across restarts.
        created=None if info.get("created") is None else int(info["created"]),
        request_limit_multiplier=float(multiplier),
        prices=prices,
        supports_streaming=streaming,
    )


def _check_names_unique(models: tuple[ModelConfig, ...], source: str) -> None:
    seen: dict[str, str] = {}
    for model in models:
        for name in (model.name, *model.aliases):
            if name in seen and seen[name] != model.name:
                raise ConfigError(
                    f"{source}: name {name!r} is used by both {seen[name]!r} and {model.name!r}"
                )
            seen[name] = model.name


def _gateway(
    models: tuple[ModelConfig, ...], settings: dict[str, Any], source: str
) -> GatewayConfig:
    known = {
        "default_model",
        "max_message_bytes",
        "max_upstream_response_bytes",
        "upstream_max_connections",
        "token_cache_seconds",
        "usage_flush_rows",
        "image_url_ttl_seconds",
        "image_sweep_seconds",
        "fetch_image_timeout_seconds",
    }
    texts = {
        "public_base_url",
        "image_store_url",
        "image_store_dir",
        "image_url_secret",
        "image_redirect",
    }
    unknown = sorted(set(settings) - known - texts - {"fetch_image_hosts"})
    if unknown:
        raise ConfigError(f"{source}: gateway: unknown setting(s) {', '.join(unknown)}")
    default_model = settings.get("default_model")
    names = {n for m in models for n in (m.name, *m.aliases)}
    if default_model is not None and default_model not in names:
        raise ConfigError(f"{source}: gateway.default_model {default_model!r} is not a model")
    config = GatewayConfig(models=models, default_model=default_model or models[0].name)
    overrides = {k: settings[k] for k in known - {"default_model"} if k in settings}
    for key, value in overrides.items():
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{source}: gateway.{key} must be a positive number")
    if "fetch_image_hosts" in settings:
        overrides["fetch_image_hosts"] = _fetch_image_hosts(settings["fetch_image_hosts"], source)
    for key in texts & set(settings):
        value = settings[key]
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{source}: gateway.{key} must be a non-empty string")
        overrides[key] = value
    secret = overrides.get("image_url_secret")
    if secret is not None and len(secret) < 16:
        # A short HMAC key could be found by trying keys against one URL.
        raise ConfigError(f"{source}: gateway.image_url_secret must be at least 16 characters")
    base = overrides.get("public_base_url")
    if base is not None and not base.startswith(("http://", "https://")):
        raise ConfigError(f"{source}: gateway.public_base_url must start with http:// or https://")
    if base is not None:
        overrides["public_base_url"] = base.rstrip("/")
    store_url = _image_store_url(
        overrides.pop("image_store_url", None), overrides.pop("image_store_dir", None), source
    )
    if store_url is not None:
        overrides["image_store_url"] = store_url
    redirect = overrides.get("image_redirect", "serve")
    if redirect not in ("serve", "presigned"):
        raise ConfigError(f"{source}: gateway.image_redirect must be serve or presigned")
    if redirect == "presigned" and not (store_url or "").startswith("s3://"):
        raise ConfigError(
            f"{source}: gateway.image_redirect: presigned needs an s3:// gateway.image_store_url"
        )
    ttl = overrides.get("image_url_ttl_seconds", config.image_url_ttl_seconds)
    if redirect == "presigned" and ttl > _MAX_PRESIGNED_SECONDS:
        # S3 refuses a presigned URL valid for longer (X-Amz-Expires).
        raise ConfigError(
            f"{source}: gateway.image_url_ttl_seconds must be at most {_MAX_PRESIGNED_SECONDS}"
            " (7 days) with image_redirect: presigned"
        )
    return GatewayConfig(**{**config.__dict__, **overrides})


_MAX_PRESIGNED_SECONDS = 7 * 24 * 3600


def _fetch_image_hosts(value: Any, source: str) -> tuple[AllowedHost, ...]:
    """`gateway.fetch_image_hosts`, checked now so that a typo stops the start, not an edit."""
    where = f"{source}: gateway.fetch_image_hosts"
    if value is None:  # the key written with nothing after it: no hosts
        return ()
    if not isinstance(value, list):
        raise ConfigError(
            f"{where} must be a list of hosts (host, host:port, [IPv6]:port or *.domain)"
        )
    hosts = []
    for index, entry in enumerate(value):
        if not isinstance(entry, str):
            # YAML reads an unquoted [::1]:9000 as a list: quote IPv6 entries.
            raise ConfigError(f'{where}[{index}] must be a string (quote IPv6: "[::1]:9000")')
        try:
            hosts.append(parse_allowed_host(entry))
        except ValueError as error:
            raise ConfigError(f"{where}[{index}]: {error}") from None
    return tuple(dict.fromkeys(hosts))


def _image_store_url(url: str | None, directory: str | None, source: str) -> str | None:
    """`gateway.image_store_url`, checked; the older `image_store_dir` is its file:// form."""
    if directory is not None:
        if url is not None:
            raise ConfigError(
                f"{source}: gateway.image_store_dir is the older spelling of "
                "image_store_url: set one of them, not both"
            )
        return pathlib.Path(directory).absolute().as_uri()
    if url is None:
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(f"{source}: gateway.image_store_url takes no query or fragment")
    if parts.scheme == "file" and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
        return url
    # S3's bucket naming rules: this also keeps credentials (user:secret@) out of the URL.
    if parts.scheme == "s3" and re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", parts.netloc):
        return url
    raise ConfigError(
        f"{source}: gateway.image_store_url must be file:///absolute/path or s3://bucket/prefix "
        "(credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, not the URL)"
    )
