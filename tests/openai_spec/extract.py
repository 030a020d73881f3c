"""Copy OpenAI's schemas for what the gateway answers out of their OpenAPI description.

To refresh `images_schemas.yaml`, get github.com/openai/openai-openapi (a clone or a
bare mirror), then from the repository root:

    .venv/bin/python -m tests.openai_spec.extract /path/to/openai-openapi [revision]

It reads `openapi.yaml` at the revision (`HEAD` by default) with git, takes the schemas in
`ROOTS` and every schema they `$ref`, transitively, and writes their text as it is in the
source, under `components: schemas:` (so that the refs resolve), after a header naming the
commit, its date and today's. Then run tests/e2e/test_openai_schema.py.
"""

from __future__ import annotations

import datetime
import pathlib
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import yaml

SPEC_PATH = "openapi.yaml"
OUTPUT = pathlib.Path(__file__).with_name("images_schemas.yaml")
# What each endpoint answers, as the spec's `paths` say.
ROOTS = {
    "ImagesResponse": "POST /images/generations and /images/edits, application/json",
    "ImageGenStreamEvent": "POST /images/generations, text/event-stream",
    "ImageEditStreamEvent": "POST /images/edits, text/event-stream",
    "ListModelsResponse": "GET /models",
    "Model": "GET /models/{model}",
    "ErrorResponse": "any error",
}
_SCHEMA = re.compile(r"^    ([A-Za-z0-9_.-]+):\s*$")
_REF = "#/components/schemas/"


def _git(repo: str, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", repo, *args], check=True, capture_output=True, text=True
    ).stdout


def _schema_texts(spec: str) -> dict[str, str]:
    """Each schema's text under `components: schemas:`, by name."""
    lines = spec.splitlines(keepends=True)
    start = lines.index("components:\n")
    start += lines[start:].index("  schemas:\n") + 1
    texts: dict[str, str] = {}
    name = None
    for line in lines[start:]:
        if line.strip() and not line.startswith("     "):
            found = _SCHEMA.match(line)
            if found is None:  # the end of `schemas:`
                break
            name = found.group(1)
            texts[name] = ""
        if name is not None:
            texts[name] += line
    return texts


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            yield ref.removeprefix(_REF)
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def extract(spec: str) -> dict[str, str]:
    """The text of the schemas in `ROOTS` and of those they refer to, by name.

    Args:
        spec: The text of OpenAI's `openapi.yaml`.
    """
    texts = _schema_texts(spec)
    schemas = yaml.safe_load(spec)["components"]["schemas"]
    assert set(texts) == set(schemas), "the text and the parse do not list the same schemas"
    wanted: dict[str, str] = {}
    pending = list(ROOTS)
    while pending:
        name = pending.pop()
        if name not in wanted:
            wanted[name] = texts[name]
            pending.extend(_refs(schemas[name]))
    return dict(sorted(wanted.items()))


def main(repo: str, revision: str = "HEAD") -> None:
    """Write `OUTPUT` from the spec at `revision` of the git repository `repo`."""
    spec = _git(repo, "show", f"{revision}:{SPEC_PATH}")
    commit, date = _git(repo, "log", "-1", "--format=%H%n%cI", revision).split()
    info = yaml.safe_load(spec)
    schemas = extract(spec)
    header = [
        "# OpenAI's schemas for the image endpoints' answers, their events, models and errors,",
        "# copied verbatim from OpenAI's published OpenAPI description. A test fixture: do not",
        "# edit; refresh with tests/openai_spec/extract.py (its docstring says how).",
        "#",
        "# Source: https://github.com/openai/openai-openapi, file " + SPEC_PATH,
        f"#   (OpenAPI {info['openapi']}, API version {info['info']['version']})",
        f"# Commit: {commit} ({date})",
        f"# Taken:  {datetime.date.today().isoformat()}",
        "#",
        "# Roots (the rest are what they $ref):",
        *(f"#   {name}: {answers}" for name, answers in ROOTS.items()),
    ]
    OUTPUT.write_text("\n".join(header) + "\ncomponents:\n  schemas:\n" + "".join(schemas.values()))


if __name__ == "__main__":
    main(*sys.argv[1:])
