"""`serve` as operators run it: access logs, both metrics endpoints, the console, CORS, workers."""

from __future__ import annotations

import json
import pathlib
import urllib.request
from typing import Any

import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.serve_process import Served


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=30) as answer:
        text = answer.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def access_lines(served: Served, logger: str) -> list[dict[str, Any]]:
    lines = []
    for line in served.output:
        if line.startswith("{") and f'"logger": "{logger}"' in line:
            lines.append(json.loads(line))
    return lines


def test_access_logs_metrics_console_and_cors_as_serve_wires_them(tmp_path: pathlib.Path):
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: demo\n"
        "    litellm_params: {model: builtin/demo}\n"
        "    model_info: {mode: image_generation}\n"
        "gateway:\n"
        "  cors_allow_origins: ['https://app.example']\n"
    )
    served = Served(tmp_path / "data", "--config", str(config), "--metrics-port", "0")
    try:
        secret = served.wait_for(r"^\s+(aqk-\S+)\s*$").group(1)
        metrics_url = served.wait_for(r"core metrics on (http://\S+)").group(1)
        http_url = served.wait_for(r"serving .*, HTTP on (\S+)$").group(1)
        sdk = openai.OpenAI(base_url=f"{http_url}/v1", api_key=secret, max_retries=0)
        for _ in range(3):
            sdk.images.generate(model="demo", prompt="x", size="256x256")
        sdk.close()
        core = scrape(metrics_url)
        key = (
            "aqueduct_requests_total",
            (("code", "OK"), ("method", "ImageService/GenerateImages"), ("model", "demo")),
        )
        assert core[key] == 3
        door = scrape(f"{http_url}/metrics")
        route = (("method", "POST"), ("route", "/v1/images/generations"), ("status", "200"))
        assert door[("gateway_http_requests_total", route)] == 3
        # The console, and CORS from the config (this origin only, not any).
        with urllib.request.urlopen(f"{http_url}/", timeout=30) as page:
            assert page.url.endswith("/console/") and b"<html" in page.read().lower()
        preflight = urllib.request.Request(
            f"{http_url}/v1/images/generations",
            method="OPTIONS",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST"},
        )
        with urllib.request.urlopen(preflight, timeout=30) as answer:
            assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert served.stop() == 0
    finally:
        served.close()
    served.output.extend(served.lines.get() for _ in range(served.lines.qsize()))
    door_lines = access_lines(served, "gateway_http.access")
    core_lines = access_lines(served, "aqueduct_grpc.access")
    generations = [line for line in core_lines if line["rpc"] == "ImageService/GenerateImages"]
    assert len(generations) == 3, [line["rpc"] for line in core_lines]
    assert all(line["images"] == 1 for line in generations)
    posted = [
        line
        for line in door_lines
        if line["path"] == "/v1/images/generations" and line["method"] == "POST"
    ]
    assert [line["request_id"] for line in posted] == [line["request_id"] for line in generations]
    # The secret is printed once, at start; no log line ever has it.
    assert not any(secret in json.dumps(line) for line in door_lines + core_lines)
    assert sum(secret in line for line in served.output) == 1


def test_no_access_log_no_metrics_and_no_console(tmp_path: pathlib.Path):
    served = Served(tmp_path / "data", "--no-access-log", "--no-metrics", "--no-console")
    try:
        secret = served.wait_for(r"^\s+(aqk-\S+)\s*$").group(1)
        http_url = served.wait_for(r"serving .*, HTTP on (\S+)$").group(1)
        sdk = openai.OpenAI(base_url=f"{http_url}/v1", api_key=secret, max_retries=0)
        assert [m.id for m in sdk.models.list()] == ["aqueduct-demo"]
        sdk.close()
        for path in ("/console/", "/metrics"):
            try:
                urllib.request.urlopen(f"{http_url}{path}", timeout=30)
                raise AssertionError(f"{path} is served")
            except urllib.error.HTTPError as error:
                assert error.code == 404
        assert served.stop() == 0
    finally:
        served.close()
    served.output.extend(served.lines.get() for _ in range(served.lines.qsize()))
    assert not any(".access" in line for line in served.output)


def test_several_workers_report_their_metrics_together(tmp_path: pathlib.Path):
    served = Served(tmp_path / "data", "--http-workers", "2")
    try:
        secret = served.wait_for(r"^\s+(aqk-\S+)\s*$").group(1)
        http_url = served.wait_for(r"serving .*, HTTP on (\S+)$").group(1)
        sdk = openai.OpenAI(base_url=f"{http_url}/v1", api_key=secret, max_retries=0)
        for _ in range(8):
            sdk.models.list()
        sdk.close()
        # Whichever process answers, it reports both: every listing is counted once.
        key = (
            "gateway_http_requests_total",
            (("method", "GET"), ("route", "/v1/models"), ("status", "200")),
        )
        for _ in range(4):
            assert scrape(f"{http_url}/metrics")[key] == 8
        assert served.stop() == 0
    finally:
        served.close()
