#!/usr/bin/env bash
# `make up`: runs `WRENN_BIN up ARGS…` (ARGS hold --data-dir DIR and --listen ADDR). When
# WRENN_TEMPLATES (comma-separated) names `code-runner-beta`, that name is not a guest image:
# `wrenn up` gets the others plus `python` (its base), and once the API answers,
# scripts/build-code-runner.sh builds it as a platform template (every team's, read-only:
# `/v1/admin/builds`) with the admin's key (DIR/admin-api-key), or
# skips it when it exists and is unchanged (stamp DIR/code-runner-beta.stamp). The server keeps
# running in the foreground; ^C stops it as before.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
wrenn=$1
shift
templates=${WRENN_TEMPLATES:-minimal,python}
if [[ ",$templates," != *,code-runner-beta,* ]]; then
    exec "$wrenn" up "$@"
fi
data_dir="" listen=""
args=("$@")
for ((i = 0; i < ${#args[@]} - 1; i++)); do
    case ${args[i]} in
    --data-dir) data_dir=${args[i + 1]} ;;
    --listen) listen=${args[i + 1]} ;;
    esac
done
[[ -n $data_dir && -n $listen ]] || { echo "up.sh: --data-dir and --listen are needed" >&2; exit 2; }
images=$(tr ',' '\n' <<<"$templates,python" | grep -vx -e code-runner-beta -e '' | sort -u | paste -sd,)
WRENN_TEMPLATES=$images "$wrenn" up "$@" &
pid=$!
trap 'kill -INT $pid 2>/dev/null; wait $pid' INT TERM
until curl -sf "http://$listen/health" >/dev/null; do
    kill -0 $pid 2>/dev/null || { wait $pid; exit $?; }
    sleep 0.5
done
if ! WRENN_PLATFORM_BUILD=1 WRENN_BIN=$wrenn WRENN_BASE_URL=http://$listen WRENN_API_KEY=$(cat "$data_dir/admin-api-key") \
    "$root/scripts/build-code-runner.sh" "$data_dir/code-runner-beta.stamp"; then
    echo "up.sh: building code-runner-beta failed; the server keeps running without it" >&2
fi
wait $pid
