#!/usr/bin/env bash
# Fuzzes a live trace-api from its own OpenAPI document with schemathesis and fails on any
# 5xx (and on any other failed check).
#
#   scripts/schemathesis.sh install        # only install the pinned tools
#   scripts/schemathesis.sh validate FILE  # validate an OpenAPI document (openapi-spec-validator)
#   scripts/schemathesis.sh BASE_URL       # e.g. http://127.0.0.1:8081 (server must be up)
#
# The test `api_fuzz` (tests/tests/api_fuzz.rs) starts trace-api on a free loopback port
# over a real SecantusDB with seeded traces and runs this script against it; that is how
# `make test` runs it. Schemathesis lives in the project-local virtualenv
# .venv-schemathesis, pinned, installed once by scripts/ensure-venv.sh.
# The run is bounded: examples per operation, request timeout, and a hard wall-clock cap.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-schemathesis"
pins=("schemathesis==4.32.5" "openapi-spec-validator==0.9.0")

install() {
  bash "$root/scripts/ensure-venv.sh" "$(basename "$venv")" "${pins[@]}"
}

if [ "${1:-}" = "" ]; then
  echo "usage: $0 install | BASE_URL" >&2
  exit 2
fi
install
[ "$1" = "install" ] && exit 0
if [ "$1" = "validate" ]; then
  exec "$venv/bin/openapi-spec-validator" "$2"
fi

base="${1%/}"
# Bounds: examples per operation, a timeout per request, and a hard wall-clock cap on
# the whole run (seconds).
budget="${SCHEMATHESIS_BUDGET_SECONDS:-100}"
examples="${SCHEMATHESIS_MAX_EXAMPLES:-60}"
checks="${SCHEMATHESIS_CHECKS:-all}"
cd "$root/target"
set -x
exec timeout --kill-after=5 "$budget" "$venv/bin/st" run "$base/openapi.json" \
  --url "$base" \
  --checks "$checks" \
  ${SCHEMATHESIS_EXCLUDE_CHECKS:+--exclude-checks "$SCHEMATHESIS_EXCLUDE_CHECKS"} \
  --max-examples "$examples" \
  --request-timeout 5 \
  --workers 2 \
  --seed 4 \
  --generation-database none \
  --no-color \
  --suppress-health-check all \
  ${SCHEMATHESIS_EXTRA_ARGS:-}
