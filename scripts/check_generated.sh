#!/usr/bin/env bash
# Fails when the committed `aqueduct` package differs from what protos/ generate.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
"$python" scripts/generate_protos.py --out "$fresh"
if ! diff -r -x __pycache__ "$fresh/aqueduct" aqueduct; then
  echo "generated code is stale: run 'python scripts/generate_protos.py' and commit" >&2
  exit 1
fi
echo "generated code is up to date"
