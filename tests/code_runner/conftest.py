"""Fixtures for the published wrenn SDK's code runner (0.3.0, unchanged) against `wrenn up`.

One `wrenn up` per session on a data folder that is KEPT between runs (default
``$WRENN_CACHE/code-runner-sdk``, or ``CODE_RUNNER_DATA``), slots 4500-4599, with an images
folder of its own inside it (``minimal`` and ``python`` hard-linked from ``WRENN_IMAGES``, again
when their inputs change), so the snapshot templates it makes never land in the shared one.
``scripts/build-code-runner.sh`` then builds ``code-runner-beta`` through the API, or skips it
when the template exists and its recipe, wheels and base image are unchanged (its stamp in the
data folder): the build under TCG takes minutes, a run with the template cached seconds.

The SDK reaches Jupyter through the port proxy at ``8888-{capsule}.wrenn.localhost:{port}``.
``*.localhost`` names do not resolve here (glibc has no wildcard for them), so this process's
``socket.getaddrinfo`` answers 127.0.0.1 for names under ``wrenn.localhost``: a stand-in for the
wildcard DNS record a deployment has, and the only thing not real in these tests.
"""

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

DOMAIN = "wrenn.localhost"
SLOTS = "4500-4599"
STARTUP_TIMEOUT = 300.0
SHUTDOWN_TIMEOUT = 60.0

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host, *args, **kwargs):
    if isinstance(host, str) and host.lower().endswith("." + DOMAIN):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _getaddrinfo


def _cache() -> str:
    return os.environ.get("WRENN_CACHE") or "/var/tmp/wrenn"


def _wrenn_bin() -> str:
    target = os.environ.get("CARGO_TARGET_DIR") or os.path.join(_cache(), "target")
    path = os.environ.get("WRENN_BIN") or os.path.join(target, "debug", "wrenn")
    if not os.access(path, os.X_OK):
        pytest.exit(f"wrenn binary {path!r} is not executable: cargo build -p wrenn", returncode=4)
    return path


def _link_images(shared: str, own: str):
    """``minimal`` and ``python`` of ``shared`` hard-linked into ``own`` when they changed."""
    os.makedirs(own, mode=0o700, exist_ok=True)
    for name in ("minimal", "python"):
        src, dst = os.path.join(shared, name), os.path.join(own, name)
        stamp = "inputs.sha256"
        if not os.path.isfile(os.path.join(src, stamp)):
            pytest.exit(f"{src} is not a built template: make images", returncode=4)
        with open(os.path.join(src, stamp)) as f:
            want = f.read()
        try:
            with open(os.path.join(dst, stamp)) as f:
                if f.read() == want:
                    continue
        except OSError:
            pass
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-al", src, dst], check=True)


def _health(url: str) -> "int | None":
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class Server:
    def __init__(self, proc, url, data_dir, key):
        self.proc, self.url, self.data_dir, self.api_key = proc, url, data_dir, key
        self.log_path = os.path.join(data_dir, "server.log")

    def log_tail(self) -> str:
        return _tail(self.log_path)


def _tail(path: str, limit: int = 6000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _stop(proc):
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def server():
    wrenn = _wrenn_bin()
    data_dir = os.environ.get("CODE_RUNNER_DATA") or os.path.join(_cache(), "code-runner-sdk")
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    images = os.path.join(data_dir, "images")
    _link_images(os.environ.get("WRENN_IMAGES") or os.path.join(_cache(), "images"), images)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, WRENN_IMAGES=images, WRENN_AGENT_SLOTS=SLOTS, WRENN_DOMAIN=DOMAIN)
    env["WRENN_TEMPLATES"] = "minimal,python"
    for name in ("WRENN_DIR", "WRENN_LISTEN", "DATABASE_URL", "WRENN_API_KEY", "WRENN_BASE_URL"):
        env.pop(name, None)
    with open(os.path.join(data_dir, "server.log"), "ab", buffering=0) as log:
        proc = subprocess.Popen(
            [wrenn, "up", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while _health(url) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.exit(f"wrenn up did not start:\n{_tail(log.name)}", returncode=4)
            time.sleep(0.2)
        with open(os.path.join(data_dir, "admin-api-key")) as f:
            key = f.read().strip()
        s = Server(proc, url, data_dir, key)
        build_env = dict(os.environ, WRENN_BIN=wrenn, WRENN_BASE_URL=url, WRENN_API_KEY=key)
        build_env["WRENN_IMAGES"] = images
        started = time.monotonic()
        r = subprocess.run(
            [os.path.join(ROOT, "scripts", "build-code-runner.sh"),
             os.path.join(data_dir, "code-runner-beta.stamp")],
            env=build_env,
        )
        if r.returncode != 0:
            pytest.exit(f"building code-runner-beta failed:\n{_tail(s.log_path)}", returncode=4)
        print(f"\nFIGURE code_runner.template seconds={time.monotonic() - started:.1f}")
        os.environ.update(WRENN_BASE_URL=url, WRENN_API_KEY=key,
                          WRENN_PROXY_DOMAIN=f"{DOMAIN}:{port}")
        yield s
    finally:
        _stop(proc)
