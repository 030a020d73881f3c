"""Regenerates the protobuf (and gRPC) code of the HTTP door and of the product.

Usage: python scripts/generate_protos.py [--out DIR]

Two proto roots, each with its own generated package:

* `gateway_http/protos/` -> `gateway_http/api/`: the options the HTTP door reads
  (`gateway_http.api.v1`), which ship with the door;
* `protos/` -> `aqueduct/`: the product's contract, which imports the door's
  options (never the other way round).

The output is committed; CI regenerates into a temporary folder and fails when
it differs from what is committed (`scripts/check_generated.sh`). The googleapis
protos come from the googleapis-common-protos wheel and the well-known types
from grpcio-tools, so no network is needed.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
from dataclasses import dataclass

import google.api
import grpc_tools
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ProtoRoot:
    """One folder of .proto files and the package generated from it.

    Attributes:
        protos: The folder holding the .proto files (an include root).
        package: The generated package, relative to the output folder; it
            is replaced wholesale, so it must hold generated code only.
        services: Whether to generate gRPC service code (`*_pb2_grpc.py`).
    """

    protos: pathlib.Path
    package: pathlib.Path
    services: bool

    @property
    def marker(self) -> str:
        """The docstring of every generated `__init__.py`."""
        source = self.protos.relative_to(ROOT)
        return f'"""Generated from {source}/ by scripts/generate_protos.py. DO NOT EDIT."""\n'


DOOR = ProtoRoot(ROOT / "gateway_http" / "protos", pathlib.Path("gateway_http/api"), False)
PRODUCT = ProtoRoot(ROOT / "protos", pathlib.Path("aqueduct"), True)
# In dependency order: the product's protos import the door's.
GENERATED = (DOOR, PRODUCT)


def googleapis_include() -> pathlib.Path:
    """The folder holding google/api/*.proto inside the installed wheel."""
    return pathlib.Path(next(iter(google.api.__path__))).parent.parent


def generate_root(root: ProtoRoot, out: pathlib.Path) -> None:
    """Writes the package generated from one proto root below `out`."""
    package = out / root.package
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)  # protoc writes into it but does not create `out`
    sources = sorted(str(p.relative_to(root.protos)) for p in root.protos.rglob("*.proto"))
    args = [
        "protoc",
        # Every root is an include path, so one root's files can import another's.
        *(f"-I{r.protos}" for r in GENERATED),
        f"-I{googleapis_include()}",
        f"-I{pathlib.Path(grpc_tools.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        *([f"--grpc_python_out={out}"] if root.services else []),
        *sources,
    ]
    if protoc.main(args) != 0:
        sys.exit(f"protoc failed on {root.protos}")
    for folder in [package, *(p for p in package.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").write_text(root.marker)


def generate(out: pathlib.Path) -> None:
    """Writes every generated package below `out` (the old ones are replaced)."""
    for root in GENERATED:
        generate_root(root, out)


def main() -> None:
    """Parses the command line and generates every package below `--out`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=ROOT)
    generate(parser.parse_args().out)


if __name__ == "__main__":
    main()
