"""Which keys a config may hold, and what an unknown one is taken for.

A key this gateway reads is fine. A key of LiteLLM's that it knowingly does
not act on (`rpm`, `router_settings`, …) is a warning, with what to do
instead: the same file still serves LiteLLM. Any other key is an error with
its path and a "did you mean", since a typo (`alias:`, `api_bsae:`,
`limitz:`) would otherwise silently drop a setting.

Only image-model entries of `model_list` are checked: chat and embedding
entries are LiteLLM's alone.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aqueduct_grpc.accounting.policy import Budgets, Limits
from aqueduct_grpc.suggestions import did_you_mean

__all__ = [
    "GATEWAY_NUMBER_KEYS",
    "GATEWAY_TEXT_KEYS",
    "IMAGE_MODES",
    "KeyReport",
    "check_keys",
    "image_entries",
]

# `model_info.mode` of an image model: LiteLLM writes the singular, Aqueduct's
# router configs (its example_router_config.yaml) the plural.
IMAGE_MODES = ("image_generation", "image_generations")

# `gateway:` settings, by the kind of value each takes (and `default_model`, a
# model's name, and `fetch_image_hosts`, a list).
GATEWAY_NUMBER_KEYS = frozenset(
    {
        "max_message_bytes",
        "max_upstream_response_bytes",
        "upstream_max_connections",
        "token_cache_seconds",
        "usage_flush_rows",
        "image_url_ttl_seconds",
        "image_sweep_seconds",
        "fetch_image_timeout_seconds",
    }
)
GATEWAY_TEXT_KEYS = frozenset(
    {"public_base_url", "image_store_url", "image_store_dir", "image_url_secret", "image_redirect"}
)

_PRICES_HINT = "prices are read from model_info: cost_per_image (by size and quality), "
_PRICES_HINT += "or input_cost_per_token and output_cost_per_token"
_DEPLOYMENT_LIMITS_HINT = "deployments have no limits of their own here: limits apply per token "
_DEPLOYMENT_LIMITS_HINT += "and team (the top-level `limits`, or the CLI and admin API)"
_AUTH_HINT = "the upstream is called with litellm_params.api_key only"

# Keys of LiteLLM's that this gateway does not act on, and what to do instead.
_LITELLM_TOP_LEVEL = {
    "litellm_settings": "LiteLLM's library settings",
    "router_settings": "deployments of one model_name are used in turn, failing over to the next",
    "general_settings": "LiteLLM proxy's own settings: this gateway's are its command-line flags",
    "environment_variables": "set them in the environment, which os.environ/NAME values read",
    "callback_settings": "LiteLLM's callbacks",
    "credential_list": "give each deployment its key in litellm_params.api_key",
    "guardrails": "LiteLLM's guardrails",
    "include": "the config is one file",
    "mcp_servers": "LiteLLM's MCP servers",
    "files_settings": "LiteLLM's Files API",
    "finetune_settings": "LiteLLM's fine-tuning API",
    "assistant_settings": "LiteLLM's Assistants API",
    "vector_store_registry": "LiteLLM's vector stores",
    "search_tools": "LiteLLM's search tools",
}
_LITELLM_PARAMS = {
    "rpm": _DEPLOYMENT_LIMITS_HINT,
    "tpm": _DEPLOYMENT_LIMITS_HINT,
    "max_parallel_requests": _DEPLOYMENT_LIMITS_HINT,
    "stream_timeout": "timeout bounds streamed calls too",
    "max_retries": "a failed call fails over to the model's next deployment, not retried",
    "num_retries": "a failed call fails over to the model's next deployment, not retried",
    "cooldown_time": "an unreachable deployment is skipped per call, not cooled down",
    "weight": "deployments of one model are used in turn, equally",
    "order": "deployments of one model are used in turn, equally",
    "tags": "LiteLLM's tag routing",
    "input_cost_per_token": _PRICES_HINT,
    "output_cost_per_token": _PRICES_HINT,
    "input_cost_per_second": _PRICES_HINT,
    "output_cost_per_second": _PRICES_HINT,
    "input_cost_per_pixel": _PRICES_HINT,
    "output_cost_per_pixel": _PRICES_HINT,
    "max_budget": "budgets apply per token and team (the top-level `budgets`)",
    "budget_duration": "budgets apply per token and team (the top-level `budgets`)",
    "organization": "no OpenAI-Organization header is sent",
    "custom_llm_provider": "the provider is the prefix of litellm_params.model",
    "base_model": "LiteLLM's cost lookup",
    "drop_params": "parameters are forwarded or refused per model (model_info.unknown_parameters)",
    "additional_drop_params": "parameters are forwarded or refused per model "
    "(model_info.unknown_parameters)",
    "headers": "no extra headers are sent upstream",
    "extra_headers": "no extra headers are sent upstream",
    "extra_body": "no extra body fields are sent upstream",
    "mock_response": "the builtin/demo model answers without an upstream",
    "use_in_pass_through": "LiteLLM's pass-through endpoints",
    "merge_reasoning_content_in_choices": "a chat setting",
    "litellm_credential_name": "give the deployment its key in api_key",
    "azure_ad_token": _AUTH_HINT,
    "azure_ad_token_provider": _AUTH_HINT,
    "tenant_id": _AUTH_HINT,
    "client_id": _AUTH_HINT,
    "client_secret": _AUTH_HINT,
    "azure_username": _AUTH_HINT,
    "azure_password": _AUTH_HINT,
    "region_name": "only openai/, azure/ and builtin/ models are served",
    "aws_access_key_id": "only openai/, azure/ and builtin/ models are served",
    "aws_secret_access_key": "only openai/, azure/ and builtin/ models are served",
    "aws_session_token": "only openai/, azure/ and builtin/ models are served",
    "aws_region_name": "only openai/, azure/ and builtin/ models are served",
    "vertex_project": "only openai/, azure/ and builtin/ models are served",
    "vertex_location": "only openai/, azure/ and builtin/ models are served",
    "vertex_credentials": "only openai/, azure/ and builtin/ models are served",
    "watsonx_region_name": "only openai/, azure/ and builtin/ models are served",
}
_MODEL_INFO = {
    "id": "LiteLLM's deployment id",
    "base_model": "LiteLLM's cost lookup",
    "max_tokens": "a chat setting",
    "max_input_tokens": "a chat setting",
    "max_output_tokens": "a chat setting",
    "input_cost_per_image": _PRICES_HINT,
    "output_cost_per_image": _PRICES_HINT,
    "input_cost_per_pixel": _PRICES_HINT,
    "output_cost_per_pixel": _PRICES_HINT,
    "input_cost_per_second": _PRICES_HINT,
    "output_cost_per_second": _PRICES_HINT,
    "litellm_provider": "the provider is the prefix of litellm_params.model",
    "access_groups": "which models a token may use is set per token (tokens create --models)",
    "team_id": "teams are set per token (the CLI or the admin API)",
    "tier": "LiteLLM's model tiers",
    "db_model": "LiteLLM's database models",
    "supported_environments": "LiteLLM's environments",
    "metadata": "LiteLLM's metadata",
}
# LiteLLM's capability flags (supports_vision, supports_function_calling, …);
# supports_streaming is this gateway's own.
_CAPABILITY_PREFIX = "supports_"


@dataclass(frozen=True)
class _Level:
    """The keys of one mapping in the config."""

    used: frozenset[str]
    ignored: Mapping[str, str] = field(default_factory=dict)
    ignored_prefix: str | None = None

    def hint(self, key: str) -> str | None:
        """What to do instead of an ignored key, or None when the key is not LiteLLM's."""
        if key in self.ignored:
            return self.ignored[key]
        if self.ignored_prefix and key.startswith(self.ignored_prefix):
            return "LiteLLM's capability flags"
        return None


def _names(kind: type) -> frozenset[str]:
    return frozenset(f.name for f in dataclasses.fields(kind))


_TOP = _Level(frozenset({"model_list", "gateway", "limits", "budgets"}), _LITELLM_TOP_LEVEL)
_ENTRY = _Level(frozenset({"model_name", "litellm_params", "model_info"}))
_PARAMS = _Level(
    frozenset({"model", "api_base", "api_key", "api_version", "timeout"}), _LITELLM_PARAMS
)
_INFO = _Level(
    frozenset(
        {
            "mode",
            "aliases",
            "description",  # for people reading the file
            "unknown_parameters",
            "supports_streaming",
            "owned_by",
            "created",
            "request_limit_multiplier",
            "cost_per_image",
            "input_cost_per_token",
            "output_cost_per_token",
        }
    ),
    _MODEL_INFO,
    _CAPABILITY_PREFIX,
)
_GATEWAY = _Level(
    GATEWAY_NUMBER_KEYS
    | GATEWAY_TEXT_KEYS
    | {"default_model", "fetch_image_hosts", "cors_allow_origins", "admin_cors_allow_origins"}
)
_LIMITS = _Level(_names(Limits) | {"storage"})
_BUDGETS = _Level(_names(Budgets))


@dataclass
class KeyReport:
    """What `check_keys` found: errors (unknown keys) and warnings (LiteLLM's, ignored)."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def check(self, raw: Any, level: _Level, path: str, source: str, about: str = "") -> None:
        """Checks the keys of one mapping (anything else is left to the parser)."""
        if not isinstance(raw, Mapping):
            return
        for key in raw:
            name = str(key)
            where = f"{path}.{name}" if path else name
            if name in level.used:
                continue
            hint = level.hint(name)
            if hint is not None:
                self.warnings.append(f"{source}: {where}{about} is LiteLLM's, ignored here: {hint}")
                continue
            choices = [*level.used, *level.ignored]
            self.errors.append(
                f"{source}: {where}{about}: unknown key{did_you_mean(name, choices)}"
            )


def image_entries(entries: Iterable[Any]) -> list[tuple[int, Mapping[str, Any]]]:
    """The (index, entry) of `model_list` entries that are image models.

    An entry is one when its `model_info.mode` is an image mode or unset;
    malformed entries are kept, for the parser to say what is wrong with them.
    """
    found = []
    for index, entry in enumerate(entries):
        info = entry.get("model_info") if isinstance(entry, Mapping) else None
        mode = info.get("mode", IMAGE_MODES[0]) if isinstance(info, Mapping) else IMAGE_MODES[0]
        if mode in IMAGE_MODES:
            found.append((index, entry))
    return found


def check_keys(raw: Mapping[str, Any], source: str) -> KeyReport:
    """Every unknown key of a parsed config, with its path.

    Args:
        raw: the parsed YAML (a mapping).
        source: the file's name, which starts each message.
    """
    report = KeyReport()
    report.check(raw, _TOP, "", source)
    entries = raw.get("model_list")
    for index, entry in image_entries(entries if isinstance(entries, list) else []):
        path = f"model_list[{index}]"
        name = entry.get("model_name") if isinstance(entry, Mapping) else None
        about = f" (model {name!r})" if isinstance(name, str) else ""
        report.check(entry, _ENTRY, path, source, about)
        if isinstance(entry, Mapping):
            params = entry.get("litellm_params")
            report.check(params, _PARAMS, f"{path}.litellm_params", source, about)
            report.check(entry.get("model_info"), _INFO, f"{path}.model_info", source, about)
    report.check(raw.get("gateway"), _GATEWAY, "gateway", source)
    report.check(raw.get("limits"), _LIMITS, "limits", source)
    report.check(raw.get("budgets"), _BUDGETS, "budgets", source)
    return report
