#!/usr/bin/env bash
# The workspace's structure rules (part of `make lint`): the dependency rule (cargo tree), no
# Rust file over 600 lines without a stated reason, no import circle between a crate's
# modules. One line per violation; exit 1 when there is any. `--self-test` checks the checker.
set -euo pipefail
exec python3 "$(dirname "$0")/check_structure.py" "$@"
