#!/usr/bin/env bash
# Downloads the wheels of templates/code-runner-beta/requirements.txt (every package pinned) for
# the python template's CPython 3.11 on manylinux x86_64, on this host, with pip (PyPI), into
# WHEELS_DIR (default $WRENN_CACHE/wheels/code-runner-beta-<first 12 hex of the file's sha256>,
# WRENN_CACHE default /var/tmp/wrenn), with a copy of requirements.txt. Skipped when that folder
# is complete. Prints the folder. pip runs from a venv of its own ($WRENN_CACHE/venv-wheels).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/templates/code-runner-beta/requirements.txt"
cache=${WRENN_CACHE:-/var/tmp/wrenn}
sum=$(sha256sum "$req" | cut -c1-12)
dir=${WHEELS_DIR:-$cache/wheels/code-runner-beta-$sum}

if [[ -f $dir/.complete && $(cat "$dir/.complete") == "$sum" ]]; then
    echo "$dir"
    exit 0
fi
venv="$cache/venv-wheels"
if [[ ! -x $venv/bin/pip ]]; then
    python3 -m venv "$venv" >&2
fi
rm -rf "$dir.part"
mkdir -p "$dir.part"
echo "code-runner-wheels: downloading $(grep -c '==' "$req") pinned wheels into $dir" >&2
"$venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 -d "$dir.part" -r "$req" >&2
cp "$req" "$dir.part/requirements.txt"
echo "$sum" > "$dir.part/.complete"
rm -rf "$dir"
mv "$dir.part" "$dir"
echo "$dir"
