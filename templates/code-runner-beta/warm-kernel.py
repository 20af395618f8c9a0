"""The second half of code-runner-beta's healthcheck: a `wrenn` kernel started, booted, idle.

Upstream's check (`curl -sf http://127.0.0.1:8888/api/status`) proves the Jupyter server is up;
this one also starts a kernel of the `wrenn` kernelspec when none runs, talks to it over its
WebSocket (the way the SDK does) until it answers `kernel_info_request`, has it import
matplotlib's pyplot silently (no history, no names bound: only the module cache is warm), and
succeeds once the server reports it idle. The snapshot then holds that kernel, so a capsule's
first `run_code` finds it (`GET /api/kernels`) and waits for no kernel to boot. It runs in the
template's venv (websocket-client comes with jupyter-server). Exit 0 when ready, 1 otherwise.
"""

import json
import sys
import urllib.request
import uuid

import websocket

HOST = "127.0.0.1:8888"
KERNEL = "wrenn"


def call(method: str, body: "bytes | None" = None):
    req = urllib.request.Request(f"http://{HOST}/api/kernels", data=body, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)


def request(ws, msg_type: str, content: dict) -> None:
    """Sends one shell message and reads until its `status: idle` on IOPub."""
    msg_id = str(uuid.uuid4())
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": msg_type, "username": "wrenn",
                   "session": str(uuid.uuid4()), "version": "5.3"},
        "parent_header": {}, "metadata": {}, "content": content, "buffers": [],
        "channel": "shell",
    }))
    while True:
        m = json.loads(ws.recv())
        if m.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if m.get("msg_type") == "error" or m.get("content", {}).get("status") == "error":
            raise RuntimeError(f"{msg_type}: {m.get('content')}")
        if m.get("msg_type") == "status" and m["content"].get("execution_state") == "idle":
            return


def main() -> int:
    kernels = [k for k in call("GET") if k.get("name") == KERNEL]
    if not kernels:
        kernels = [call("POST", json.dumps({"name": KERNEL}).encode())]
    kid = kernels[0]["id"]
    if kernels[0].get("execution_state") != "idle":
        ws = websocket.create_connection(f"ws://{HOST}/api/kernels/{kid}/channels", timeout=60)
        try:
            request(ws, "kernel_info_request", {})
            request(ws, "execute_request", {
                "code": "__import__('matplotlib.pyplot')", "silent": True,
                "store_history": False, "user_expressions": {}, "allow_stdin": False,
                "stop_on_error": True,
            })
        finally:
            ws.close()
    state = [k for k in call("GET") if k["id"] == kid][0].get("execution_state")
    print(f"kernel {kid}: {state}")
    return 0 if state == "idle" else 1


if __name__ == "__main__":
    sys.exit(main())
