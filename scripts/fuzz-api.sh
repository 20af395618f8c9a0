#!/usr/bin/env bash
# Fuzzes the REST API from its own OpenAPI document with schemathesis, against a real `wrenn up`
# (its own data folder, network slots $FUZZ_SLOTS, the admin API key it writes).
#
#   scripts/fuzz-api.sh [CASES] [MAX_SECONDS]
#
# CASES: most test cases per operation and phase (default 25; `make soak` passes more).
# MAX_SECONDS: the time budget of the whole schemathesis run (default 180).
#
# Checks: all of schemathesis's: no 5xx, every status code documented, every body matching its
# schema, content types and headers as documented, schema-valid requests accepted and invalid
# ones refused, credentials required (tests/fuzz/*.toml list the few exceptions, with reasons).
#
# Capsules cost a VM each (~2 cores shared under TCG), so:
#   - `POST /v1/capsules` is left out by default; with FUZZ_CREATE=1 (`make soak`) it is fuzzed
#     with invalid bodies only (the server must refuse each before booting anything; random
#     valid ones would boot a VM each, and a new vCPU/memory shape a cold boot), vCPUs and
#     memory mostly the template's, on a server that runs at most $FUZZ_MAX_CAPSULES capsules;
#   - one real capsule (made before the run) is the `id` of the capsule operations half of the
#     time, so exec, files, pause/resume, snapshots reach a live guest, not only 404s;
#   - at the end every capsule left is destroyed, the server stopped, its folder removed.
#
# Prints `fuzz-api: operations=N cases=N failures=N` (the figures for docs/reliability.md) and
# exits non-zero on any failure. Reports (JUnit, logs) go to $FUZZ_REPORT_DIR.
# Needs: WRENN_BIN (a built `wrenn`), WRENN_IMAGES, FUZZ_VENV (schemathesis, tests/fuzz).
set -euo pipefail

cases=${1:-25}
max_time=${2:-180}
root=$(cd "$(dirname "$0")/.." && pwd)
WRENN_CACHE=${WRENN_CACHE:-/var/tmp/wrenn}
WRENN_BIN=${WRENN_BIN:-${CARGO_TARGET_DIR:-$WRENN_CACHE/target}/debug/wrenn}
WRENN_IMAGES=${WRENN_IMAGES:-$WRENN_CACHE/images}
FUZZ_VENV=${FUZZ_VENV:-$WRENN_CACHE/venv-fuzz}
FUZZ_SLOTS=${FUZZ_SLOTS:-3500-3599}
FUZZ_MAX_CAPSULES=${FUZZ_MAX_CAPSULES:-3}
FUZZ_SEED=${FUZZ_SEED:-}
report=${FUZZ_REPORT_DIR:-$WRENN_CACHE/fuzz-report}
st=$FUZZ_VENV/bin/schemathesis

[ -x "$WRENN_BIN" ] || { echo "fuzz-api: no wrenn binary at $WRENN_BIN" >&2; exit 2; }
[ -x "$st" ] || { echo "fuzz-api: no schemathesis at $st (make fuzz-api installs it)" >&2; exit 2; }

dir=$(mktemp -d /var/tmp/wrenn-fuzz.XXXXXX)
out=$dir/up.log
pid=
base=
key=

cleanup() {
  local rc=$?
  if [ -n "$base" ] && [ -n "$key" ]; then
    # Every capsule the run left (created by the fuzzer or by us) goes.
    for id in $(curl -fsS -H "X-API-Key: $key" "$base/v1/capsules" 2>/dev/null |
      "$FUZZ_VENV/bin/python" -c 'import json,sys; [print(c["id"]) for c in json.load(sys.stdin)]' 2>/dev/null); do
      curl -fsS -o /dev/null -X DELETE -H "X-API-Key: $key" "$base/v1/capsules/$id" || true
    done
  fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ]; then
    echo "fuzz-api: server log (last 40 lines):" >&2
    tail -40 "$out" >&2 || true
  fi
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# Its own images folder, hard links of the built templates: the team snapshots and vCPU/memory
# shapes the run makes land there and go with it, never in the shared $WRENN_IMAGES.
mkdir -p "$dir/images"
for t in "$WRENN_IMAGES"/*/; do
  cp -al "$t" "$dir/images/"
done
# Without the descriptors this script inherited (e.g. a `flock` lock file): a VM that outlived
# the run must not hold them.
(
  for fd in /proc/self/fd/*; do
    n=${fd##*/}
    [ "$n" -gt 2 ] && eval "exec $n>&-" 2>/dev/null
  done
  exec "$WRENN_BIN" up --listen 127.0.0.1:0 --slots "$FUZZ_SLOTS" --data-dir "$dir/data" \
    --images "$dir/images" --max-capsules "$FUZZ_MAX_CAPSULES"
) >"$out" 2>&1 &
pid=$!
for _ in $(seq 1 240); do
  base=$(sed -n 's/^Wrenn is up at \(http:\/\/[^ ]*\).*/\1/p' "$out" | head -1)
  [ -n "$base" ] && break
  kill -0 "$pid" 2>/dev/null || { echo "fuzz-api: wrenn up exited" >&2; exit 1; }
  sleep 0.5
done
[ -n "$base" ] || { echo "fuzz-api: wrenn up did not come up" >&2; exit 1; }
key=$(cat "$dir/data/admin-api-key")
echo "fuzz-api: wrenn up at $base (data $dir/data, slots $FUZZ_SLOTS)"

# A signed-in admin's token: it is accepted everywhere (teams and members need a user, not a
# key), and what the document calls missing credentials is then really missing.
token=$(curl -fsS -X POST -H 'content-type: application/json' \
  -d "{\"email\":\"admin@localhost\",\"password\":\"$(cat "$dir/data/admin-password")\"}" \
  "$base/v1/auth/login" | "$FUZZ_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["token"])')

# One live capsule for the capsule operations.
capsule=$(curl -fsS -X POST -H "X-API-Key: $key" -H 'content-type: application/json' \
  -d '{"template":"minimal","timeout_sec":0}' "$base/v1/capsules" |
  "$FUZZ_VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "fuzz-api: live capsule $capsule"

rm -rf "$report"
mkdir -p "$report"
export FUZZ_TOKEN=$token
# Every check (the config files turn a few off where the document cannot state a rule).
# One worker: schemathesis's workers are threads, and hypothesis parses source (ast.parse) to
# describe strategies; Python before 3.12 keeps the AST builder's recursion depth per
# interpreter, so two threads parsing at once fail with "SystemError: AST constructor
# recursion depth mismatch" (CPython gh-106905), an error of the fuzzer, not of the server.
common=(--max-examples "$cases" --workers 1 --request-timeout 30 --no-color
  --suppress-health-check all --continue-on-failure --generation-database none --warnings off)
[ -n "${FUZZ_CHECKS:-}" ] && common+=(--checks "$FUZZ_CHECKS")
[ -n "$FUZZ_SEED" ] && common+=(--seed "$FUZZ_SEED")

run() { # NAME CONFIG ARGS…: one schemathesis run, its JUnit report as NAME.xml
  local name=$1 config=$2
  shift 2
  set +e
  "$st" --config-file "$config" run "$base/openapi.json" "${common[@]}" --report junit \
    --report-junit-path "$report/$name.xml" "$@" 2>&1 | tee "$report/$name.log"
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

status=0
# 1. Every operation but capsule creation, on generated ids and on the live capsule.
export FUZZ_CAPSULE=$capsule
run all "$root/tests/fuzz/schemathesis.toml" --max-time "$max_time" \
  --exclude-operation-id create_capsule || status=1
# 2. Capsule creation (FUZZ_CREATE=1, `make soak`): invalid bodies only. Each one the server
# wrongly accepted would boot a VM, so the shape is pinned (the template's) and the server
# runs at most $FUZZ_MAX_CAPSULES capsules.
if [ "${FUZZ_CREATE:-0}" = 1 ]; then
  run create "$root/tests/fuzz/create.toml" --max-time "$max_time" \
    --include-operation-id create_capsule --mode negative --phases coverage,fuzzing || status=1
fi

# The figures: test cases sent and failures found, over every run.
cases_run=$({ grep -h -o '[0-9]* generated' "$report"/*.log || true; } | awk '{n+=$1} END {print n+0}')
failures=$({ grep -h -o 'generated, [0-9]* found' "$report"/*.log || true; } | awk '{n+=$2} END {print n+0}')
ops=$({ grep -h -o 'Tested: [0-9]*' "$report"/*.log || true; } | awk '{n+=$2} END {print n+0}')
echo "fuzz-api: operations=$ops cases=$cases_run failures=$failures (checks: ${FUZZ_CHECKS:-all})"
exit "$status"
