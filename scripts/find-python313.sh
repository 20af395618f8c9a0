#!/usr/bin/env bash
# Prints the path of a working Python 3.13 interpreter (the wrenn SDK needs >= 3.13).
# Order: python3.13 on PATH, pyenv's versions, /usr/local/bin. A candidate counts only if it
# really runs and reports 3.13 (pyenv shims exist on PATH even when they cannot run).
# Never starts a login shell: root's profile may run `pyenv rehash`, which can stall.
set -uo pipefail

works() {
  local py=$1
  [ -x "$py" ] || return 1
  # Bounded: a broken shim must not hang the build. PYENV_VERSION lets a shim pick 3.13.
  timeout 20 env PYENV_VERSION="${PYENV_VERSION:-3.13}" "$py" -c \
    'import sys; sys.exit(0 if sys.version_info[:2] == (3, 13) else 1)' >/dev/null 2>&1
}

candidates=()
if p=$(command -v python3.13 2>/dev/null); then candidates+=("$p"); fi
for p in "${PYENV_ROOT:-/root/.pyenv}"/versions/3.13*/bin/python3.13 /root/.pyenv/versions/3.13*/bin/python3.13 \
         /usr/local/bin/python3.13 /usr/bin/python3.13; do
  [ -e "$p" ] && candidates+=("$p")
done

for p in "${candidates[@]}"; do
  if works "$p"; then
    # Resolve a shim to the real interpreter so the venv does not depend on pyenv's state.
    real=$(timeout 20 env PYENV_VERSION="${PYENV_VERSION:-3.13}" "$p" -c 'import sys; print(sys.executable)' 2>/dev/null)
    [ -n "$real" ] && [ -x "$real" ] && p=$real
    echo "$p"
    exit 0
  fi
done

echo "find-python313: no working Python 3.13 found (tried: ${candidates[*]:-nothing}; python3.13 on PATH," \
     "\$PYENV_ROOT/versions/3.13*/bin/python3.13, /usr/local/bin/python3.13)." \
     "The wrenn SDK needs Python >= 3.13: install one (e.g. pyenv install 3.13) or put python3.13 on PATH." >&2
exit 1
