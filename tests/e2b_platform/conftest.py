"""Fixtures for the published `e2b` Python SDK (pinned in requirements.txt) in its NORMAL mode
(not debug) against a real `wrenn up` with real microVMs.

One server per session:

    $WRENN_BIN up --data-dir <fresh dir> --listen 127.0.0.1:<free port>

with ``WRENN_AGENT_SLOTS=4000-4099`` (this suite's slot range), ``WRENN_TEMPLATES=minimal``
and the built templates of ``WRENN_IMAGES`` hard-linked into ``<data dir>/images``. Its data dir is made under ``E2B_PLATFORM_DATA_PREFIX``
(default ``/var/tmp/wrenn-e2b-platform-``) and removed at the end; stdout and stderr go to
``<data dir>/server.log``.

The SDK is pointed at it only through its documented variables, exactly as a user would:

    E2B_API_KEY=<the admin's wrn_ key>   E2B_API_URL=http://127.0.0.1:<port>
    E2B_DOMAIN=wrenn.localhost           E2B_SANDBOX_URL=http://127.0.0.1:<port>

``E2B_SANDBOX_URL`` is the SDK's header routing (``E2b-Sandbox-Id``/``E2b-Sandbox-Port``): envd
is reached through Wrenn's port proxy on the same listener. ``E2B_DEBUG`` is removed.

The server also serves HTTPS (``--tls-listen 127.0.0.1:<free port>``) with a certificate from
its own CA (``<data dir>/pki/https/ca.pem``), which the whole pytest process trusts through
``SSL_CERT_FILE`` (set before any SDK call: the SDK's TLS reads it), for the host-routing tests
in ``test_tls.py``. Names under ``*.wrenn.localhost`` do not resolve here: the fixtures
``pinned_dns`` (``socket.getaddrinfo`` wrapped) and ``dns_pinning_proxy`` (for the SDK, whose
HTTP stack resolves names in Rust, not through Python) stand in for wildcard DNS, and only
for it.

A second team and its key (``team_b_key``) are made through Wrenn's REST API, for the tenant
matrix. At the end the server gets SIGINT and must exit within 30 s.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types
import urllib.error
import urllib.request

import pytest

STARTUP_TIMEOUT = 180.0
SHUTDOWN_TIMEOUT = 30.0
AGENT_SLOTS = os.environ.get("E2B_PLATFORM_SLOTS", "4000-4099")
DOMAIN = "wrenn.localhost"


class Server:
    def __init__(self, proc, url, data_dir, log_path):
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self.log_path = log_path
        self.api_key = None

    def log_tail(self, limit: int = 6000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return ""
        return data.decode("utf-8", errors="replace")[-limit:]

    def call(self, method, path, body=None, headers=None, key=None):
        """A Wrenn REST call: (status, JSON body or None, headers)."""
        h = {"X-API-Key": self.api_key if key is None else key}
        h.update(headers or {})
        if not h["X-API-Key"]:
            del h["X-API-Key"]
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=h)
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None), dict(resp.headers)
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                parsed = raw.decode(errors="replace")
            return e.code, parsed, dict(e.headers)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrenn_bin() -> str:
    path = os.environ.get("WRENN_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/wrenn/target", "debug", "wrenn"
    )
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.exit(f"wrenn binary {path!r} is not executable: cargo build -p wrenn", returncode=4)
    return path


def _health(url: str):
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _stop(proc):
    if proc.poll() is not None:
        return None
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(SHUTDOWN_TIMEOUT)
        return None
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"wrenn up did not exit within {SHUTDOWN_TIMEOUT:.0f}s of SIGINT"


def _own_images(shared: str, data_dir: str) -> str:
    """``data_dir/images``: the built templates of ``shared`` hard-linked in, so the templates
    the run makes are removed with ``data_dir`` instead of left in the shared folder."""
    if os.stat(shared).st_dev != os.stat(data_dir).st_dev:
        return shared  # no hard links across filesystems
    own = os.path.join(data_dir, "images")
    os.makedirs(own, mode=0o700, exist_ok=True)
    for name in sorted(os.listdir(shared)):
        src = os.path.join(shared, name)
        if os.path.isfile(os.path.join(src, "inputs.sha256")):
            subprocess.run(["cp", "-al", src, os.path.join(own, name)], check=True)
    return own


@pytest.fixture(scope="session")
def server():
    prefix = os.environ.get("E2B_PLATFORM_DATA_PREFIX", "/var/tmp/wrenn-e2b-platform-")
    data_dir = tempfile.mkdtemp(prefix=os.path.basename(prefix), dir=os.path.dirname(prefix))
    log_path = os.path.join(data_dir, "server.log")
    port = _free_port()
    tls_port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    env["WRENN_IMAGES"] = _own_images(
        os.environ.get("WRENN_IMAGES") or "/var/tmp/wrenn/images", data_dir
    )
    env["WRENN_AGENT_SLOTS"] = AGENT_SLOTS
    env.setdefault("WRENN_TEMPLATES", "minimal")
    env["WRENN_DOMAIN"] = DOMAIN
    for name in ("WRENN_DIR", "WRENN_LISTEN", "DATABASE_URL", "WRENN_API_KEY", "WRENN_BASE_URL"):
        env.pop(name, None)
    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(
            [
                _wrenn_bin(),
                "up",
                "--data-dir",
                data_dir,
                "--listen",
                f"127.0.0.1:{port}",
                "--tls-listen",
                f"127.0.0.1:{tls_port}",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    s = Server(proc, url, data_dir, log_path)
    s.tls_port = tls_port
    s.ca_file = os.path.join(data_dir, "pki", "https", "ca.pem")
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while _health(url) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wrenn up did not become healthy:\n{s.log_tail()}")
            time.sleep(0.2)
        key_file = os.path.join(data_dir, "admin-api-key")
        while not os.path.exists(key_file):
            time.sleep(0.1)
        with open(key_file) as f:
            s.api_key = f.read().strip()
    except BaseException:
        _stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)
        raise
    saved = {k: os.environ.get(k) for k in _E2B_VARS}
    os.environ.pop("E2B_DEBUG", None)
    os.environ.update(
        E2B_API_KEY=s.api_key,
        E2B_API_URL=url,
        E2B_DOMAIN=DOMAIN,
        E2B_SANDBOX_URL=url,
        SSL_CERT_FILE=s.ca_file,
    )
    try:
        yield s
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        problem = _stop(s.proc)
        tail = s.log_tail()
        if os.environ.get("E2B_PLATFORM_KEEP_DATA") != "1":
            shutil.rmtree(data_dir, ignore_errors=True)
        assert problem is None, f"{problem}\n{tail}"


_E2B_VARS = (
    "E2B_API_KEY",
    "E2B_API_URL",
    "E2B_DOMAIN",
    "E2B_SANDBOX_URL",
    "E2B_DEBUG",
    "SSL_CERT_FILE",
)


@pytest.fixture(scope="session")
def team_b_key(server):
    """An API key of a second team, made through Wrenn's REST API by the admin."""
    with open(os.path.join(server.data_dir, "admin-password")) as f:
        password = f.read().strip()
    status, tok, _ = server.call(
        "POST", "/v1/auth/login", {"email": "admin@localhost", "password": password}
    )
    assert status == 200, tok
    bearer = {"Authorization": f"Bearer {tok['token']}"}
    status, team, _ = server.call("POST", "/v1/teams", {"name": "team b"}, headers=bearer, key="")
    assert status == 201, team
    status, key, _ = server.call(
        "POST",
        "/v1/api-keys",
        {"name": "b"},
        headers={**bearer, "X-Team-Id": team["id"]},
        key="",
    )
    assert status == 201, key
    return key["key"]


@pytest.fixture
def sandbox(server):
    """A fresh sandbox from template ``minimal``, killed afterwards."""
    from e2b import Sandbox

    sbx = Sandbox.create(template="minimal", timeout=300)
    try:
        yield sbx
    finally:
        sbx.kill()


@pytest.fixture(scope="session")
def pinned_dns():
    """A stand-in for wildcard DNS (a fake, named as such): while it is active,
    ``socket.getaddrinfo`` in this process resolves ``wrenn.localhost`` and every name under it
    to 127.0.0.1 (glibc does not, and no DNS server here serves a wildcard). Other names
    resolve as before."""
    real = socket.getaddrinfo

    def pinned(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if isinstance(name, str) and (
            name == DOMAIN or name.rstrip(".").endswith("." + DOMAIN)
        ):
            host = "127.0.0.1"
        return real(host, *args, **kwargs)

    socket.getaddrinfo = pinned
    try:
        yield
    finally:
        socket.getaddrinfo = real


@pytest.fixture(scope="session")
def dns_pinning_proxy(pinned_dns):
    """The SDK's HTTP stack (pyqwest: reqwest in Rust) resolves names itself, so the pinned
    ``getaddrinfo`` does not reach it. It is given this proxy instead (the SDK's documented
    ``proxy=`` option): an HTTP CONNECT tunnel on 127.0.0.1 that resolves the requested name
    through ``pinned_dns`` and passes bytes through untouched. TLS stays end to end between
    the SDK and Wrenn (the SDK still checks the certificate for the real name). Only names
    under ``wrenn.localhost`` are tunnelled: nothing leaves loopback. Yields the proxy: its
    ``url``, and ``seen``, every ``host:port`` it was asked for."""
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    stop = threading.Event()

    def pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def handle(conn):
        with conn:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 16384:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(line) < 2 or line[0] != "CONNECT":
                conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                return
            host, _, port = line[1].rpartition(":")
            proxy.seen.append(line[1])
            if not (host == DOMAIN or host.endswith("." + DOMAIN)):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                upstream = socket.create_connection((host, int(port)), timeout=10)
            except (OSError, ValueError):
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            upstream.settimeout(None)
            with upstream:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                rest = head.split(b"\r\n\r\n", 1)[1]
                if rest:
                    upstream.sendall(rest)
                back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
                back.start()
                pump(conn, upstream)
                back.join()

    def accept():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    proxy = types.SimpleNamespace(url=f"http://127.0.0.1:{listener.getsockname()[1]}", seen=[])
    try:
        yield proxy
    finally:
        stop.set()
        listener.close()
