"""Loading the YAML config in LiteLLM's router format."""

from __future__ import annotations

import pathlib
import textwrap

import pytest

from aqueduct_grpc.config import ConfigError, load_config, parse_config
from aqueduct_grpc.images.image_fetcher import AllowedHost

ROUTER_CONFIG = textwrap.dedent(
    """
    model_list:
      - model_name: gpt-4o
        litellm_params:
          model: openai/gpt-4o
          api_key: os.environ/OPENAI_API_KEY
        model_info: {mode: chat}
      - model_name: gpt-image-1
        litellm_params:
          model: openai/gpt-image-1
          api_base: https://images.internal.example/v1/
          api_key: os.environ/OPENAI_API_KEY
          timeout: 90
        model_info:
          mode: image_generation
          aliases: [image, gpt-image]
      - model_name: gpt-image-1
        litellm_params:
          model: azure/gpt-image-1-eu
          api_base: https://eu.openai.azure.example
          api_key: os.environ/AZURE_KEY
          api_version: "2025-04-01-preview"
        model_info: {mode: image_generation}
      - model_name: text-embedding-3-small
        litellm_params: {model: openai/text-embedding-3-small}
        model_info: {mode: embedding}
    router_settings:
      routing_strategy: simple-shuffle
    """
)
ENV = {"OPENAI_API_KEY": "sk-openai", "AZURE_KEY": "azure-key"}


def test_router_config_image_models_work_unchanged(tmp_path: pathlib.Path, monkeypatch):
    path = tmp_path / "router.yaml"
    path.write_text(ROUTER_CONFIG)
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    config = load_config(path)
    [model] = config.models  # chat and embedding entries are skipped
    assert model.name == "gpt-image-1" and model.aliases == ("image", "gpt-image")
    openai, azure = model.deployments
    assert (openai.provider, openai.upstream_model, openai.api_key) == (
        "openai",
        "gpt-image-1",
        "sk-openai",
    )
    assert openai.api_base == "https://images.internal.example/v1" and openai.timeout == 90
    assert (azure.provider, azure.upstream_model, azure.api_key) == (
        "azure",
        "gpt-image-1-eu",
        "azure-key",
    )
    assert azure.api_version == "2025-04-01-preview"
    assert config.default_model == "gpt-image-1"


# As Aqueduct's own router configs (example_router_config.yaml) write image models.
AQUEDUCT_CONFIG = textwrap.dedent(
    """
    model_list:
      - model_name: Qwen-Chat
        litellm_params: {model: openai/qwen, api_base: http://vllm:8000/v1}
        model_info: {mode: chat}
      - model_name: dall-e-3
        litellm_params:
          model: openai/dall-e-3
          api_key: os.environ/OPENAI_API_KEY
        model_info:
          mode: image_generations
          request_limit_multiplier: 2
      - model_name: gpt-image-1
        litellm_params:
          model: openai/gpt-image-1
          api_key: os.environ/OPENAI_API_KEY
        model_info: {mode: image_generation}
    """
)


def test_aqueducts_plural_image_mode_is_an_image_model(tmp_path: pathlib.Path, monkeypatch):
    path = tmp_path / "aqueduct.yaml"
    path.write_text(AQUEDUCT_CONFIG)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    config = load_config(path)  # what `serve --config` does
    assert [m.name for m in config.models] == ["dall-e-3", "gpt-image-1"]
    assert config.models[0].request_limit_multiplier == 2
    assert config.default_model == "dall-e-3"
    # A config whose only image models use the plural is served, not refused.
    only_plural = AQUEDUCT_CONFIG.split("  - model_name: gpt-image-1")[0]
    path.write_text(only_plural)
    assert [m.name for m in load_config(path).models] == ["dall-e-3"]


def test_api_keys_are_not_in_the_repr():
    config = parse_config(
        {
            "model_list": [
                {"model_name": "m", "litellm_params": {"model": "openai/x", "api_key": "sk-hidden"}}
            ]
        },
        source="t",
    )
    assert "sk-hidden" not in repr(config)


def test_embedded_default_serves_the_demo_model():
    config = load_config(None)
    assert [m.name for m in config.models] == ["aqueduct-demo"]
    assert config.models[0].deployments[0].provider == "builtin"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "model_list"),
        ({"model_list": []}, "model_list"),
        ({"model_list": [{"litellm_params": {"model": "openai/x"}}]}, "model_name"),
        ({"model_list": [{"model_name": "m"}]}, "litellm_params.model"),
        (
            {"model_list": [{"model_name": "m", "litellm_params": {"model": "bedrock/x"}}]},
            "must be",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "openai/x", "api_key": "os.environ/NOPE"},
                    }
                ]
            },
            "NOPE, which is not set",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "openai/x"},
                        "model_info": {"mode": "chat"},
                    }
                ]
            },
            "no image_generation model",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "a",
                        "litellm_params": {"model": "builtin/demo"},
                        "model_info": {"aliases": ["x"]},
                    },
                    {"model_name": "x", "litellm_params": {"model": "builtin/demo"}},
                ]
            },
            "used by both",
        ),
        (
            {"model_list": [{"model_name": "m", "litellm_params": {"model": "azure/d"}}]},
            "need api_base",
        ),
        (
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
                "gateway": {"bogus": 1},
            },
            "unknown setting",
        ),
        (
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
                "gateway": {"default_model": "n"},
            },
            "not a model",
        ),
        (
            {
                "model_list": [
                    {
                        "model_name": "m",
                        "litellm_params": {"model": "builtin/demo"},
                        "model_info": {"unknown_parameters": "maybe"},
                    }
                ]
            },
            "reject or forward",
        ),
        (
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
                "gateway": {"image_redirect": "presigned"},
            },
            "presigned needs an s3:// gateway.image_store_url",
        ),
        (
            {
                "model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}],
                "gateway": {"image_redirect": "bounce", "image_store_url": "s3://bucket/p"},
            },
            "image_redirect must be serve or presigned",
        ),
    ],
)
def test_bad_configs_say_what_is_wrong(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw, source="cfg.yaml", environ={})


def test_gateway_settings_override_defaults():
    config = parse_config(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {"model": "builtin/demo"},
                    "model_info": {"aliases": ["d"]},
                }
            ],
            "gateway": {"default_model": "d", "max_message_bytes": 1024, "token_cache_seconds": 1},
        },
        source="t",
    )
    assert (config.default_model, config.max_message_bytes, config.token_cache_seconds) == (
        "d",
        1024,
        1,
    )


def test_invalid_yaml_is_a_config_error(tmp_path: pathlib.Path):
    path = tmp_path / "bad.yaml"
    path.write_text("model_list: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


DEMO_ONLY = {"model_list": [{"model_name": "m", "litellm_params": {"model": "builtin/demo"}}]}


def test_fetching_image_urls_is_off_by_default():
    config = parse_config(DEMO_ONLY, source="t")
    assert (config.fetch_image_hosts, config.fetch_image_timeout_seconds) == ((), 30.0)


def test_fetch_image_hosts_are_read_in_every_form(tmp_path: pathlib.Path):
    path = tmp_path / "gateway.yaml"
    path.write_text(
        textwrap.dedent(
            """
            model_list:
              - model_name: m
                litellm_params: {model: builtin/demo}
            gateway:
              fetch_image_hosts:
                - Images.Example.COM
                - images.example.com:8443
                - 127.0.0.1:9000
                - "[::1]:9000"
                - "*.cdn.example.com"
                - images.example.com
              fetch_image_timeout_seconds: 5
            """
        )
    )
    config = load_config(path)
    assert config.fetch_image_hosts == (
        AllowedHost(host="images.example.com"),
        AllowedHost(host="images.example.com", port=8443),
        AllowedHost(host="127.0.0.1", port=9000),
        AllowedHost(host="::1", port=9000),
        AllowedHost(host="cdn.example.com", subdomains=True),
    )  # lowercased, and the repeated entry kept once
    assert config.fetch_image_timeout_seconds == 5


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ("images.example.com", r"gateway\.fetch_image_hosts must be a list"),
        ([""], r"gateway\.fetch_image_hosts\[0\]: an entry is empty"),
        (["ok.example", "  "], r"gateway\.fetch_image_hosts\[1\]: an entry is empty"),
        (["https://images.example.com"], "without a scheme, path or user"),
        (["images.example.com/v1"], "without a scheme, path or user"),
        (["user@images.example.com"], "without a scheme, path or user"),
        (["images.example.com:0"], "port must be a number from 1 to 65535"),
        (["images.example.com:65536"], "port must be a number from 1 to 65535"),
        (["images.example.com:https"], "port must be a number from 1 to 65535"),
        (["images.example.com:²"], "port must be a number from 1 to 65535"),
        (["::1"], "IPv6 address in brackets"),
        (["[::1"], r"write an IPv6 address as \[address\]"),
        (["[not-v6]:80"], "is not an IPv6 address"),
        (["*.127.0.0.1"], "takes a domain name, not an address"),
        (["img*.example.com"], "not a valid host name"),
        ([["::1"]], r"gateway\.fetch_image_hosts\[0\] must be a string"),
    ],
)
def test_bad_fetch_image_hosts_say_what_is_wrong(hosts, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config({**DEMO_ONLY, "gateway": {"fetch_image_hosts": hosts}}, source="cfg.yaml")
    assert "cfg.yaml: gateway.fetch_image_hosts" in str(caught.value)


@pytest.mark.parametrize("timeout", [0, -1, "30"])
def test_the_fetch_timeout_must_be_positive(timeout):
    with pytest.raises(
        ConfigError, match=r"gateway\.fetch_image_timeout_seconds must be a positive"
    ):
        parse_config({**DEMO_ONLY, "gateway": {"fetch_image_timeout_seconds": timeout}}, source="t")
