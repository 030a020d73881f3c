"""The deploy/ folder is consistent.

HAProxy accepts its config, the gateway its config, and the compose file wires
what the gateway reads.
"""

from __future__ import annotations

import pathlib
import subprocess

import yaml

from aqueduct_grpc.config import load_config
from tests.servers import find_binary

DEPLOY = pathlib.Path(__file__).parents[2] / "deploy"


def test_haproxy_accepts_the_load_balancer_config():
    haproxy = find_binary("haproxy", "haproxy", [pathlib.Path("/usr/sbin")])
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_replicas_config_shares_every_store():
    config = load_config(DEPLOY / "gateway.yaml")
    assert config.rate_limit_storage.startswith("redis://")
    assert config.image_store_url is not None and config.image_store_url.startswith("s3://")
    assert config.public_base_url == "http://localhost:8080"


def test_compose_wires_the_services_the_gateway_needs():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    gateway = services["gateway"]
    for needed in gateway["depends_on"]:
        assert needed in services
    environment = gateway["environment"]
    assert environment["AQUEDUCT_DATABASE_URL"].startswith("postgresql://")
    assert {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(environment)
    # The bucket the gateway's config names is the one the compose file creates.
    bucket = load_config(DEPLOY / "gateway.yaml").image_store_url.split("/")[2]  # type: ignore[union-attr]
    assert f"m/{bucket}" in " ".join(services["bucket"]["entrypoint"])
    assert (DEPLOY / "haproxy.cfg").name in services["haproxy"]["volumes"][0]
