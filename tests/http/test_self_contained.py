"""The door stands alone: it imports nothing of the product, whose protos import the door's."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from aqueduct.images.v1 import images_pb2
from gateway_http.api.v1 import annotations_pb2

ROOT = Path(__file__).resolve().parents[2]
DOOR = ROOT / "gateway_http"
DOOR_PROTO = "gateway_http/api/v1/annotations.proto"

# Imports every module of the door, then lists what of the product got loaded.
PROBE = """
import importlib, json, pkgutil, sys
import gateway_http
for info in pkgutil.walk_packages(gateway_http.__path__, "gateway_http."):
    if info.name != "gateway_http.__main__":  # it runs the command
        importlib.import_module(info.name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "aqueduct")))
"""


def test_the_door_imports_nothing_from_the_product() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_only_the_command_names_the_product() -> None:
    # The product is a default of `gateway-http` (cli.py), never of the library.
    naming = {
        str(path.relative_to(DOOR))
        for path in DOOR.rglob("*.py")
        if "aqueduct" in path.read_text() and path.parts[len(DOOR.parts)] != "api"
    }
    assert naming == {"cli.py"}


def test_the_product_imports_the_doors_options_not_the_reverse() -> None:
    assert annotations_pb2.DESCRIPTOR.name == DOOR_PROTO
    assert annotations_pb2.DESCRIPTOR.package == "gateway_http.api.v1"
    assert [d.name for d in annotations_pb2.DESCRIPTOR.dependencies] == [
        "google/protobuf/descriptor.proto"
    ]
    assert DOOR_PROTO in [d.name for d in images_pb2.DESCRIPTOR.dependencies]
    assert (DOOR / "protos" / DOOR_PROTO).is_file()
