"""The second half of code-runner-beta's healthcheck: a `wrenn` kernel started and idle.

Upstream's check (`curl -sf http://127.0.0.1:8888/api/status`) proves the Jupyter server is up;
this one also starts a kernel of the `wrenn` kernelspec when none runs, and succeeds once that
kernel is idle. The snapshot then holds the warm kernel, so a capsule's first `run_code` finds
it (`GET /api/kernels`) and does not wait for a kernel to boot. Exit 0 when ready, 1 otherwise.
"""

import json
import sys
import urllib.request

BASE = "http://127.0.0.1:8888/api/kernels"
KERNEL = "wrenn"


def call(method: str, body: "bytes | None" = None):
    req = urllib.request.Request(BASE, data=body, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=100) as resp:
        return json.load(resp)


def main() -> int:
    kernels = [k for k in call("GET") if k.get("name") == KERNEL]
    if not kernels:
        kernels = [call("POST", json.dumps({"name": KERNEL}).encode())]
    state = kernels[0].get("execution_state")
    print(f"kernel {kernels[0].get('id')}: {state}")
    return 0 if state == "idle" else 1


if __name__ == "__main__":
    sys.exit(main())
