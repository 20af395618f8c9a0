#!/usr/bin/env bash
# The workspace's structure rules (make lint), one line per violation, exit 1 when there is any:
# - the dependency rule (scripts/check-deps.sh: cargo tree of normal dependencies; CARGO);
# - no Rust file over 600 lines without `// Over 600 lines: <reason>` in its first 5 lines;
# - no import circle between the modules of a crate.
# `--self-test` checks the source checker against scripts/tests/structure/.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ ${1:-} == --self-test ]]; then
    exec python3 "$here/check_structure.py" --self-test
fi
rc=0
"$here/check-deps.sh" 2>&1 || rc=1
python3 "$here/check_structure.py" "$@" || rc=1
exit $rc
