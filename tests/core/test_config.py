"""Loading the YAML config in LiteLLM's router format."""

from __future__ import annotations

import pathlib
import textwrap

import pytest
import yaml

from aqueduct_grpc.cli import commands as cli
from aqueduct_grpc.config import ConfigError, load_config, load_model_names, parse_config
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
            r"environment variables not set: NOPE \(model_list\[0\]\.litellm_params\.api_key\)",
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
            r"cfg\.yaml: gateway\.bogus: unknown key$",
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


# One typo at every level the gateway reads, and a key of LiteLLM's at several.
TYPOS = textwrap.dedent(
    """
    model_list:
      - model_name: gpt-4o
        litellm_params: {model: openai/gpt-4o, temperature: 0.2, api_key: os.environ/CHAT_KEY}
        model_info: {mode: chat, supports_vision: true}
      - model_name: gpt-image-1
        litellm_params:
          model: openai/gpt-image-1
          api_bsae: https://images.example/v1
          api_key: os.environ/OPENAI_API_KEY
          rpm: 60
        model_info:
          alias: [image]
          supports_vision: false
      - model_name: dall-e-3
        litellm_params:
          model: azure/dall-e-3
          api_base: https://a.example
          api_key: os.environ/AZURE_KEY
        modle_info: {mode: image_generation}
    gateway:
      public_base_ur: https://gw.example
    limitz:
      requests_per_minute: 5
    limits:
      request_per_minute: 5
    budgets:
      per_dya_usd: 3
    router_settings: {routing_strategy: simple-shuffle}
    """
)


def test_unknown_keys_are_all_reported_with_their_path_and_a_suggestion():
    with pytest.raises(ConfigError) as caught:
        parse_config(yaml.safe_load(TYPOS), source="cfg.yaml", environ={})
    assert caught.value.problems == (
        "cfg.yaml: limitz: unknown key (did you mean 'limits'?)",
        "cfg.yaml: model_list[1].litellm_params.api_bsae (model 'gpt-image-1'): unknown key"
        " (did you mean 'api_base'?)",
        "cfg.yaml: model_list[1].model_info.alias (model 'gpt-image-1'): unknown key"
        " (did you mean 'aliases'?)",
        "cfg.yaml: model_list[2].modle_info (model 'dall-e-3'): unknown key"
        " (did you mean 'model_info'?)",
        "cfg.yaml: gateway.public_base_ur: unknown key (did you mean 'public_base_url'?)",
        "cfg.yaml: limits.request_per_minute: unknown key (did you mean 'requests_per_minute'?)",
        "cfg.yaml: budgets.per_dya_usd: unknown key (did you mean 'per_day_usd'?)",
        # Every missing variable at once; the chat entry's key is LiteLLM's business.
        "cfg.yaml: environment variables not set: OPENAI_API_KEY"
        " (model_list[1].litellm_params.api_key), AZURE_KEY (model_list[2].litellm_params.api_key)",
    )
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_litellm_keys_that_are_not_acted_on_are_warnings():
    raw = yaml.safe_load(TYPOS)
    image = raw["model_list"][1]
    image["litellm_params"]["api_base"] = image["litellm_params"].pop("api_bsae")
    image["model_info"] = {"aliases": ["image"], "supports_vision": False, "id": "dep-1"}
    image["model_info"]["output_cost_per_image"] = 0.04
    del raw["model_list"][2], raw["gateway"], raw["limitz"], raw["limits"], raw["budgets"]
    config = parse_config(raw, source="cfg.yaml", environ={"OPENAI_API_KEY": "sk-x"})
    assert [m.name for m in config.models] == ["gpt-image-1"]
    where = "cfg.yaml: model_list[1]"
    assert config.warnings == (
        "cfg.yaml: router_settings is LiteLLM's, ignored here: deployments of one model_name"
        " are used in turn, failing over to the next",
        f"{where}.litellm_params.rpm (model 'gpt-image-1') is LiteLLM's, ignored here:"
        " deployments have no limits of their own here: limits apply per token and team"
        " (the top-level `limits`, or the CLI and admin API)",
        f"{where}.model_info.supports_vision (model 'gpt-image-1') is LiteLLM's, ignored here:"
        " LiteLLM's capability flags",
        f"{where}.model_info.id (model 'gpt-image-1') is LiteLLM's, ignored here:"
        " LiteLLM's deployment id",
        f"{where}.model_info.output_cost_per_image (model 'gpt-image-1') is LiteLLM's, ignored"
        " here: prices are read from model_info: cost_per_image (by size and quality), or"
        " input_cost_per_token and output_cost_per_token",
    )
    assert config.models[0].prices is None  # the LiteLLM price was not taken for ours


def test_api_version_may_come_from_the_environment():
    config = parse_config(
        {
            "model_list": [
                {
                    "model_name": "m",
                    "litellm_params": {
                        "model": "azure/d",
                        "api_base": "https://a.example",
                        "api_version": "os.environ/AZURE_API_VERSION",
                    },
                }
            ]
        },
        source="t",
        environ={"AZURE_API_VERSION": "2025-04-01-preview"},
    )
    assert config.models[0].deployments[0].api_version == "2025-04-01-preview"


def test_model_names_are_read_without_the_environment(tmp_path: pathlib.Path):
    path = tmp_path / "router.yaml"
    path.write_text(ROUTER_CONFIG)  # its keys are in variables this test does not set
    assert load_model_names(path) == ("gpt-image-1", "image", "gpt-image")
    assert load_model_names(None) == ("aqueduct-demo", "demo")
    with pytest.raises(ConfigError, match="cannot read the config"):
        load_model_names(tmp_path / "missing.yaml")


GOOD = textwrap.dedent(
    """
    model_list:
      - model_name: gpt-image-1
        litellm_params:
          model: openai/gpt-image-1
          api_key: os.environ/OPENAI_API_KEY
          timeout: 120
        model_info:
          aliases: [image]
          input_cost_per_token: 0.000005
          output_cost_per_token: 0.00004
      - model_name: gpt-image-1
        litellm_params:
          model: azure/eu-images
          api_base: https://eu.example
          api_version: "2025-04-01-preview"
      - model_name: dall-e-3
        litellm_params: {model: openai/dall-e-3, api_base: "https://bob:hunter2@dalle.example/v1"}
        model_info:
          cost_per_image: {1024x1024: {standard: 0.04, hd: 0.08}, "*": 0.12}
    limits: {requests_per_minute: 60, storage: "redis://:redis-secret@cache:6379/0"}
    budgets: {per_day_usd: 20}
    router_settings: {routing_strategy: simple-shuffle}
    """
)


def test_config_check_prints_the_config_as_read_and_never_a_secret(
    tmp_path: pathlib.Path, capsys, monkeypatch
):
    path = tmp_path / "gateway.yaml"
    path.write_text(GOOD)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-very-secret")
    cli.main(["config", "check", str(path)])
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        f"{path}: valid (2 models, 3 deployments)",
        "default model: gpt-image-1",
        "",
        "gpt-image-1 (aliases: image)",
        # One of its upstreams is not a GPT image model: it is not taken to stream.
        "  unknown parameters: reject; streams: no (answered as completed events);"
        " limit multiplier: 1",
        "  prices per token (USD): input 0.000005, output 0.00004",
        "  deployment 1: openai/gpt-image-1 at https://api.openai.com/v1, api key set,"
        " timeout 120 s",
        "  deployment 2: azure/eu-images at https://eu.example, api version 2025-04-01-preview,"
        " no api key, timeout 600 s",
        "",
        "dall-e-3",
        "  unknown parameters: reject; streams: no (answered as completed events);"
        " limit multiplier: 1",
        "  prices per image (USD; * is any other): 1024x1024: standard 0.04, hd 0.08; *: 0.12",
        "  deployment 1: openai/dall-e-3 at https://bob:***@dalle.example/v1, no api key,"
        " timeout 600 s",
        "",
        "limits (each token's default; counters in redis://:***@cache:6379/0):"
        " requests_per_minute=60",
        "budgets (each token's default): per_day_usd=20",
    ]
    for secret in ("sk-very-secret", "hunter2", "redis-secret"):
        assert secret not in out + err
    assert err.splitlines() == [
        f"aqueduct-grpc: warning: {path}: router_settings is LiteLLM's, ignored here:"
        " deployments of one model_name are used in turn, failing over to the next"
    ]


def test_config_check_of_a_bad_config_lists_every_problem_and_exits_1(
    tmp_path: pathlib.Path, capsys
):
    path = tmp_path / "typos.yaml"
    path.write_text(TYPOS)
    with pytest.raises(SystemExit) as exited:
        cli.main(["config", "check", str(path)], environ={})
    assert exited.value.code == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 8 and all(line.startswith(f"aqueduct-grpc: {path}: ") for line in lines)
    assert "(did you mean 'aliases'?)" in lines[2]
    assert "Traceback" not in err
