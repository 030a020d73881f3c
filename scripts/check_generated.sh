#!/usr/bin/env bash
# Fails when a committed generated package differs from what its protos generate:
# `gateway_http/api` (from gateway_http/protos/) and `aqueduct` (from protos/).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
fresh="$(mktemp -d)"
trap 'rm -rf "$fresh"' EXIT
"$python" scripts/generate_protos.py --out "$fresh"
stale=0
# The packages of GENERATED in scripts/generate_protos.py.
for package in gateway_http/api aqueduct; do
  if ! diff -r -x __pycache__ "$fresh/$package" "$package"; then
    stale=1
  fi
done
if [ "$stale" -ne 0 ]; then
  echo "generated code is stale: run 'python scripts/generate_protos.py' and commit" >&2
  exit 1
fi
echo "generated code is up to date"
