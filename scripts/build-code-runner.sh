#!/usr/bin/env bash
# Builds the `code-runner-beta` template (templates/code-runner-beta: its recipe, healthcheck and
# pinned wheels) on a running Wrenn, through `wrenn template build` (the API's builds), for the
# team of WRENN_API_KEY at WRENN_BASE_URL; with WRENN_PLATFORM_BUILD=1 (and a platform admin's
# key) as a platform template (`--platform`, `/v1/admin/builds`) every team uses. WRENN_BIN: the wrenn binary (default `wrenn` on PATH).
# The wheels come from scripts/code-runner-wheels.sh (downloaded on this host, cached), so the
# build itself reaches no outside address.
#
# usage: build-code-runner.sh [STAMP]
#   STAMP: a file holding the key of the last build (sha256 of the template's files and the
#   `python` image's inputs when WRENN_IMAGES is set); the build is skipped when the template
#   exists and the key is unchanged, and the file written after a build that succeeded.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tpl="$root/templates/code-runner-beta"
wrenn=${WRENN_BIN:-wrenn}
stamp=${1:-}

key=$(cat "$tpl/recipe" "$tpl/healthcheck" "$tpl/warm-kernel.py" "$tpl/requirements.txt" \
    "${WRENN_IMAGES:-/nonexistent}/python/inputs.sha256" 2>/dev/null | sha256sum | cut -c1-16)
exists() {
    "$wrenn" template list --json | python3 -c \
        'import json,sys; sys.exit(0 if any(t.get("name")=="code-runner-beta" for t in json.load(sys.stdin)) else 1)'
}
if [[ -n $stamp && -f $stamp && $(cat "$stamp") == "$key" ]] && exists; then
    echo "build-code-runner: code-runner-beta is up to date ($key)" >&2
    exit 0
fi

wheels=$("$root/scripts/code-runner-wheels.sh")
stage=$(mktemp -d /tmp/code-runner-archive.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp -r "$wheels" "$stage/wheels"
rm -f "$stage/wheels/.complete"
cp "$tpl/warm-kernel.py" "$stage/"
start=$(date +%s)
"$wrenn" template build --name code-runner-beta -f "$tpl/recipe" --base python \
    --archive "$stage" --memory-mb 1024 --disk-mb 4096 --build-vcpus 2 \
    --healthcheck "$(cat "$tpl/healthcheck")" \
    ${WRENN_PLATFORM_BUILD:+--platform}
echo "build-code-runner: code-runner-beta built in $(( $(date +%s) - start )) s" >&2
if [[ -n $stamp ]]; then
    echo "$key" > "$stamp"
fi
