#!/usr/bin/env bash
# Runs buf (from the npm package @bufbuild/buf) on protos/ and gateway_http/protos/:
# lint and a format check.
# The googleapis protos we import are copied from the googleapis-common-protos
# wheel into build/protodeps, so buf needs no network module dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
buf_version=1.75.0
if [ ! -x build/buf/node_modules/.bin/buf ]; then
  npm install --silent --no-audit --no-fund --prefix build/buf "@bufbuild/buf@${buf_version}"
fi
googleapis="$("$python" -c 'import google.api, pathlib; print(pathlib.Path(list(google.api.__path__)[0]))')"
mkdir -p build/protodeps/google/api
cp "$googleapis/annotations.proto" "$googleapis/http.proto" "$googleapis/httpbody.proto" \
  build/protodeps/google/api/
build/buf/node_modules/.bin/buf lint
for root in protos gateway_http/protos; do
  build/buf/node_modules/.bin/buf format --diff --exit-code "$root"
done
echo "buf lint and buf format: clean"
