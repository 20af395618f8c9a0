"""`make bench` (E2B path): the published e2b SDK against the published wrenn SDK on the same
`wrenn up`, in the same run: create → first command, and the `commands.run("true")` round
trip. Prints medians and p90 of both (absolutes, ms) and the ratios E2B / Wrenn (the goal:
at most 1.10). Batches of the two SDKs alternate (the order too), so drift of a shared machine
falls on both.

    python compare.py --wrenn BIN --e2b-python PY --wrenn-python PY [--quick]

The e2b SDK runs in normal mode through Wrenn's E2B API and port proxy (header routing,
`E2B_SANDBOX_URL`, plain HTTP like the wrenn SDK's). Slots 4000-4099 (the e2b-platform suite's;
the two never run at once); data in /var/tmp/wrenn-bench-sdk-*, removed at the end."""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
GOAL = 1.10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def p90(xs):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(0.9 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wrenn", required=True)
    ap.add_argument("--e2b-python", required=True)
    ap.add_argument("--wrenn-python", required=True)
    ap.add_argument("--batches", type=int, default=3)
    ap.add_argument("--creates", type=int, default=4, help="per batch and SDK")
    ap.add_argument("--runs", type=int, default=60, help="per batch and SDK")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.batches, a.creates, a.runs = 2, 1, 10

    data = tempfile.mkdtemp(prefix="wrenn-bench-sdk-", dir="/var/tmp")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    for k in ("WRENN_DIR", "WRENN_LISTEN", "DATABASE_URL", "WRENN_TLS_LISTEN"):
        env.pop(k, None)
    env.update(
        WRENN_AGENT_SLOTS=os.environ.get("SDK_BENCH_SLOTS", "4000-4099"),
        WRENN_TEMPLATES="minimal",
        WRENN_IMAGES=os.environ.get("WRENN_IMAGES") or "/var/tmp/wrenn/images",
    )
    log = open(os.path.join(data, "server.log"), "ab")
    proc = subprocess.Popen(
        [a.wrenn, "up", "--data-dir", data, "--listen", f"127.0.0.1:{port}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit("wrenn up did not become healthy; see " + data + "/server.log")
            time.sleep(0.2)
        with open(os.path.join(data, "admin-api-key")) as f:
            key = f.read().strip()
        wenv = dict(os.environ)
        wenv.pop("E2B_DEBUG", None)
        wenv.update(
            E2B_API_KEY=key,
            E2B_API_URL=url,
            E2B_DOMAIN="wrenn.localhost",
            E2B_SANDBOX_URL=url,
            WRENN_API_KEY=key,
            WRENN_BASE_URL=url,
        )
        py = {"e2b": a.e2b_python, "wrenn": a.wrenn_python}
        got = {m: {"create_first_ms": [], "run_true_ms": []} for m in py}
        for b in range(a.batches):
            order = ["e2b", "wrenn"] if b % 2 == 0 else ["wrenn", "e2b"]
            for mode in order:
                out = subprocess.run(
                    [py[mode], os.path.join(HERE, "worker.py"), mode, str(a.creates), str(a.runs)],
                    env=wenv,
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                if out.returncode != 0:
                    sys.exit(f"{mode} batch failed:\n{out.stderr[-3000:]}")
                for k, v in json.loads(out.stdout).items():
                    got[mode][k].extend(v)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)

    print("E2B path vs Wrenn SDK path (same wrenn up, alternating batches)")
    print(f"{'figure':<34}{'e2b median':>12}{'p90':>9}{'wrenn median':>14}{'p90':>9}{'ratio':>8}  goal")
    worst = 0.0
    for k, name in (
        ("create_first_ms", 'create -> first command (ms)'),
        ("run_true_ms", 'commands.run("true") (ms)'),
    ):
        e, w = got["e2b"][k], got["wrenn"][k]
        ratio = statistics.median(e) / statistics.median(w)
        worst = max(worst, ratio)
        mark = "ok" if ratio <= GOAL else "OVER"
        print(
            f"{name:<34}{statistics.median(e):>12.1f}{p90(e):>9.1f}"
            f"{statistics.median(w):>14.1f}{p90(w):>9.1f}{ratio:>8.2f}  <= {GOAL:.2f} {mark}"
            f"  (n={len(e)}/{len(w)})"
        )


if __name__ == "__main__":
    main()
