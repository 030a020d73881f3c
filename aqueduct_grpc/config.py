"""Gateway configuration: a YAML file in LiteLLM's router format plus a `gateway` section.

An existing Aqueduct/LiteLLM router config works unchanged: entries of
`model_list` whose `model_info.mode` is `image_generation` (LiteLLM's
spelling), `image_generations` (Aqueduct's) or unset become image models;
others (chat, embeddings) are skipped. `api_key`/`api_base`/`api_version`
values of the form `os.environ/NAME` are read from the environment.

Mistakes are reported before anything starts: every unknown key (with its
path and a "did you mean", see `config_keys`) and every missing environment
variable at once; LiteLLM's keys that are not acted on here become the
config's `warnings`.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import yaml

from aqueduct_grpc.accounting.policy import Budgets, Limits, parse_budgets, parse_limits
from aqueduct_grpc.accounting.pricing import ModelPrices, parse_prices
from aqueduct_grpc.accounting.rate_limits import redis_url
from aqueduct_grpc.config_keys import (
    GATEWAY_NUMBER_KEYS,
    GATEWAY_TEXT_KEYS,
    IMAGE_MODES,
    check_keys,
    image_entries,
)
from aqueduct_grpc.images.image_fetcher import AllowedHost, parse_allowed_host

__all__ = [
    "DEFAULT_CONFIG_YAML",
    "EMBEDDED_DEFAULT",
    "IMAGE_MODES",
    "ConfigError",
    "Deployment",
    "GatewayConfig",
    "ModelConfig",
    "load_config",
    "load_model_names",
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

# How messages name the embedded default config.
EMBEDDED_DEFAULT = "<embedded default>"

MIB = 1024 * 1024

# Where `os.environ/NAME` values are read.
_FROM_ENVIRONMENT = ("api_key", "api_base", "api_version")


class ConfigError(ValueError):
    """The configuration cannot be used; each problem says where and why.

    Attributes:
        problems: one message per problem (the error's text is them, a line each).
    """

    def __init__(self, *problems: str) -> None:
        """Creates the ConfigError.

        Args:
            problems: what is wrong, one message each (each names the file and the key).
        """
        super().__init__("\n".join(problems))
        self.problems = problems


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
    # Origins whose web pages may call the image API, and the admin API (CORS).
    cors_allow_origins: tuple[str, ...] = ("*",)
    admin_cors_allow_origins: tuple[str, ...] = ()
    fetch_image_timeout_seconds: float = 30.0
    # Keys of LiteLLM's the file holds that are not acted on here, one message
    # each (serve logs them; `config check` prints them).
    warnings: tuple[str, ...] = ()


def load_config(path: str | os.PathLike[str] | None) -> GatewayConfig:
    """Reads the YAML file at `path`, or the embedded default when None."""
    raw, source = _read(path)
    return parse_config(raw, source=source)


def load_model_names(path: str | os.PathLike[str] | None) -> tuple[str, ...]:
    """The names a config serves (its image models and their aliases), in file order.

    Read without resolving environment variables or checking settings, so a
    command that only needs the names (`tokens create --models`) works on a
    machine without the upstream keys.
    """
    raw, source = _read(path)
    names: dict[str, None] = {}
    for _, entry in _entries(raw, source):
        names[entry["model_name"]] = None
        aliases = (entry.get("model_info") or {}).get("aliases")
        for alias in aliases if isinstance(aliases, list) else ():
            names[str(alias)] = None
    return tuple(names)


def _read(path: str | os.PathLike[str] | None) -> tuple[Any, str]:
    """The parsed YAML of `path` (the embedded default when None) and how to name it."""
    if path is None:
        return yaml.safe_load(DEFAULT_CONFIG_YAML), EMBEDDED_DEFAULT
    try:
        text = pathlib.Path(path).read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror}") from None
    try:
        return yaml.safe_load(text), str(path)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None


def _entries(raw: Any, source: str) -> list[tuple[int, dict[str, Any]]]:
    """The image-model entries of `model_list`; raises ConfigError when it has none."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping with a model_list")
    entries = raw.get("model_list")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{source}: model_list must be a non-empty list")
    for index, entry in enumerate(entries):
        where = f"{source}: model_list[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("model_name"), str):
            raise ConfigError(f"{where}: needs a model_name")
        if not isinstance(entry.get("model_info") or {}, dict):
            raise ConfigError(f"{where}: model_info must be a mapping")
    found = [(index, cast(dict[str, Any], entry)) for index, entry in image_entries(entries)]
    if not found:
        raise ConfigError(
            f"{source}: model_list has no image_generation model "
            "(model_info.mode image_generation, image_generations or unset)"
        )
    return found


def parse_config(raw: Any, *, source: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    """Builds the config from parsed YAML; `environ` resolves `os.environ/` references.

    Raises:
        ConfigError: with every unknown key and missing environment variable
            at once, or else the first bad value.
    """
    env = dict(os.environ) if environ is None else environ
    entries = _entries(raw, source)
    keys = check_keys(raw, source)
    missing = _missing_variables(raw, entries, env)
    if missing:
        keys.errors.append(f"{source}: environment variables not set: {', '.join(missing)}")
    if keys.errors:
        raise ConfigError(*keys.errors)
    grouped: dict[str, dict[str, Any]] = {}
    for index, entry in entries:
        where = f"{source}: model_list[{index}]"
        info = entry.get("model_info") or {}
        name = entry["model_name"]
        group = grouped.setdefault(name, {"deployments": [], "info": {}})
        group["deployments"].append(_deployment(entry.get("litellm_params"), where, env))
        group["info"].update(info)
    models = tuple(_model(name, g["deployments"], g["info"], source) for name, g in grouped.items())
    _check_names_unique(models, source)
    settings = raw.get("gateway") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{source}: gateway must be a mapping")
    if "image_url_secret" in settings:  # may be os.environ/NAME, like api keys
        secret = _resolve(settings["image_url_secret"], f"{source}: gateway.image_url_secret", env)
        settings = {**settings, "image_url_secret": secret}
    gateway = _gateway(models, settings, source)
    return dataclasses.replace(_accounting(gateway, raw, source), warnings=tuple(keys.warnings))


def _missing_variables(
    raw: dict[str, Any], entries: list[tuple[int, dict[str, Any]]], env: dict[str, str]
) -> list[str]:
    """Each `os.environ/NAME` reference whose variable is not set: "NAME (where)"."""
    references: list[tuple[Any, str]] = []
    for index, entry in entries:
        params = entry.get("litellm_params")
        if isinstance(params, dict):
            where = f"model_list[{index}].litellm_params"
            references += [(params.get(key), f"{where}.{key}") for key in _FROM_ENVIRONMENT]
    settings = raw.get("gateway")
    if isinstance(settings, dict):
        references.append((settings.get("image_url_secret"), "gateway.image_url_secret"))
    missing = []
    for value, where in references:
        if isinstance(value, str) and value.startswith("os.environ/"):
            name = value.removeprefix("os.environ/")
            if name not in env:
                missing.append(f"{name} ({where})")
    return missing


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
    api_version = _resolve(params.get("api_version"), f"{where}: api_version", env)
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
        api_version=api_version or ("2024-10-21" if provider == "azure" else None),
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
    # Unknown keys were refused by check_keys already.
    default_model = settings.get("default_model")
    names = {n for m in models for n in (m.name, *m.aliases)}
    if default_model is not None and default_model not in names:
        raise ConfigError(f"{source}: gateway.default_model {default_model!r} is not a model")
    config = GatewayConfig(models=models, default_model=default_model or models[0].name)
    overrides = {k: settings[k] for k in GATEWAY_NUMBER_KEYS if k in settings}
    for key, value in overrides.items():
        if not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{source}: gateway.{key} must be a positive number")
    if "fetch_image_hosts" in settings:
        overrides["fetch_image_hosts"] = _fetch_image_hosts(settings["fetch_image_hosts"], source)
    for key in ("cors_allow_origins", "admin_cors_allow_origins"):
        if key in settings:
            overrides[key] = _origins(settings[key], f"{source}: gateway.{key}")
    for key in GATEWAY_TEXT_KEYS & set(settings):
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


_ORIGIN = re.compile(r"https?://[^/\s]+")


def _origins(value: Any, where: str) -> tuple[str, ...]:
    """A list of web origins (`https://host[:port]`), or `*` for any."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f'{where} must be a list of origins (https://host[:port]) or ["*"]')
    for origin in value:
        if origin != "*" and not _ORIGIN.fullmatch(origin):
            raise ConfigError(
                f"{where}: {origin!r} is not an origin: write scheme://host[:port], no path"
            )
    return tuple(dict.fromkeys(value))


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
