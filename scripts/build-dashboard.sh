#!/usr/bin/env bash
# Builds the web console (dashboard/) into dashboard/build, which `cargo build` then embeds in
# the wrenn binary. Needs Node.js >= 20.19 and npm (nothing installed globally): `npm ci` from
# the committed package-lock.json when the lock file changed since the last install, then
# `npm run build` when a source changed since the last build. Prints the build folder.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/dashboard"
cd "$dir"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "build-dashboard: Node.js (>= 20.19) and npm are needed to build the web console" >&2
    exit 1
fi
if ! node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)'; then
    echo "build-dashboard: Node.js $(node -v) is too old: the console's build (Vite) needs >= 20.19" >&2
    exit 1
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [[ ! -f node_modules/.wrenn-lock || $(cat node_modules/.wrenn-lock) != "$lock_sum" ]]; then
    echo "build-dashboard: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$lock_sum" > node_modules/.wrenn-lock
fi

stamp=build/.wrenn-built
newer=""
if [[ -f $stamp ]]; then
    newer=$(find src public index.html vite.config.ts svelte.config.js tsconfig.json package-lock.json \
        node_modules/.wrenn-lock -newer "$stamp" -print -quit)
fi
if [[ ! -f $stamp || -n $newer ]]; then
    echo "build-dashboard: type check and build" >&2
    npm run --silent check >&2
    npm run --silent build >&2
    touch "$stamp"
fi
echo "$dir/build"
