#!/bin/bash
# The dependency rule (make lint): the control plane never builds the VM layer or the agent,
# the agent never builds the control plane, and the transport both share builds neither.
# Checked on normal dependencies (`cargo tree -e normal`); tests may use anything.
set -euo pipefail
cargo=${CARGO:-cargo}
bad=0

# forbid CRATE DEP...: fails when CRATE's normal dependencies include any DEP.
forbid() {
    local crate=$1 deps
    shift
    deps=$("$cargo" tree --locked -p "$crate" -e normal --prefix none --format '{p}' | awk '{print $1}')
    for dep in "$@"; do
        if grep -qx "$dep" <<<"$deps"; then
            echo "dependency rule: $crate must not depend on $dep (cargo tree -p $crate -e normal -i $dep)" >&2
            bad=1
        fi
    done
}

forbid wrenn-server wrenn-agent wrenn-vmm
forbid wrenn-agent wrenn-server
forbid wrenn-vmm wrenn-server wrenn-agent
forbid wrenn-rpc wrenn-server wrenn-agent wrenn-vmm
exit $bad
