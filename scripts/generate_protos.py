"""Regenerates the `aqueduct` package (protobuf and gRPC code) from `protos/`.

Usage: python scripts/generate_protos.py [--out DIR]

The output is committed; CI regenerates into a temporary folder and fails when
it differs from what is committed. The googleapis protos come from the
googleapis-common-protos wheel and the well-known types from grpcio-tools, so
no network is needed.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys

import google.api
import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = "aqueduct"
MARKER = '"""Generated from protos/ by scripts/generate_protos.py. DO NOT EDIT."""\n'


def googleapis_include() -> pathlib.Path:
    """The folder holding google/api/*.proto inside the installed wheel."""
    return pathlib.Path(next(iter(google.api.__path__))).parent.parent


def generate(out: pathlib.Path) -> None:
    """Writes the generated package below `out` (the old one is replaced)."""
    shutil.rmtree(out / PACKAGE, ignore_errors=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{googleapis_include()}",
        f"-I{pathlib.Path(grpc_tools.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for folder in [out / PACKAGE, *(p for p in (out / PACKAGE).rglob("*") if p.is_dir())]:
        (folder / "__init__.py").write_text(MARKER)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
