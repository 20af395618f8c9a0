#!/usr/bin/env bash
# The long fuzzing runs of `make soak` (also a step other soak scripts can call):
#   scripts/fuzz-soak.sh [API_CASES] [API_SECONDS] [PROPTEST_CASES]
# 1. the REST API from its OpenAPI document (scripts/fuzz-api.sh) with API_CASES cases per
#    operation (default 200) within API_SECONDS (default 900), capsule creation included
#    (invalid bodies only);
# 2. the parsers' properties (scripts/fuzz-parsers.sh) with PROPTEST_CASES cases each (20000).
# Prints both scripts' figure lines; fails if either found anything.
set -uo pipefail
cd "$(dirname "$0")/.."
api_cases=${1:-200}
api_seconds=${2:-900}
prop_cases=${3:-20000}
status=0
FUZZ_CREATE=1 scripts/fuzz-api.sh "$api_cases" "$api_seconds" || status=1
scripts/fuzz-parsers.sh "$prop_cases" || status=1
exit "$status"
