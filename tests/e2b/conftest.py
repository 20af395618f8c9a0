"""Fixtures for driving Wrenn's envd with the published `e2b` Python SDK.

The suite starts the envd binary named by ``ENVD_BIN`` once per session:

    $ENVD_BIN --listen 127.0.0.1:0

envd must print ``envd listening on 127.0.0.1:PORT`` as its first stdout line.
The SDK is then pointed at ``http://127.0.0.1:PORT`` in debug mode
(``Sandbox.create(debug=True, sandbox_url=...)``), which skips the E2B control
plane entirely and talks straight to envd.

envd runs on this host, so a test may check what envd did with plain
``os``/``pwd`` calls (file owners, for instance) as well as through the SDK.
"""

import ctypes
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import warnings

import pytest

from e2b import AsyncSandbox, Sandbox

# How long envd gets to print its "listening" line.
STARTUP_TIMEOUT = 30.0
# Per-request timeout for unary calls and /files requests made by the SDK.
REQUEST_TIMEOUT = 30.0
# The unprivileged account the tests switch to (the Makefile creates it).
TEST_USER = "user"

_LISTEN_RE = re.compile(r"envd listening on (\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s*$")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: large transfers (the 100 MiB round trip)"
    )
    # `sandbox_url` is deprecated in the SDK but is the documented way to point
    # debug mode at a local envd.
    config.addinivalue_line(
        "filterwarnings", "ignore:.*sandbox_url.*:DeprecationWarning"
    )


class EnvdProcess:
    """A running envd plus the log file that holds its stdout and stderr."""

    def __init__(self, proc: subprocess.Popen, url: str, log_path: str):
        self.proc = proc
        self.url = url
        self.log_path = log_path

    def log_size(self) -> int:
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset: int, limit: int = 20000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return ""
        text = data.decode("utf-8", errors="replace")
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return text

    def check_alive(self):
        code = self.proc.poll()
        if code is not None:
            pytest.fail(
                f"envd (pid {self.proc.pid}) has exited with status {code}; "
                f"log tail:\n{self.log_since(max(0, self.log_size() - 4000))}",
                pytrace=False,
            )


_ENVD: "EnvdProcess | None" = None


def _die_with_parent():
    """In the child before exec: get SIGKILL if the test runner dies.

    Keeps an envd from outliving a pytest that was killed before its fixture
    teardown could run.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def _start_envd() -> EnvdProcess:
    envd_bin = os.environ.get("ENVD_BIN")
    if not envd_bin:
        pytest.exit(
            "ENVD_BIN is not set: point it at a built envd binary, e.g. "
            "ENVD_BIN=/var/tmp/wrenn/target/debug/envd",
            returncode=4,
        )
    if not os.path.isfile(envd_bin) or not os.access(envd_bin, os.X_OK):
        pytest.exit(
            f"ENVD_BIN={envd_bin!r} is not an executable file", returncode=4
        )

    log_fd, log_path = tempfile.mkstemp(prefix="envd-e2b-tests-", suffix=".log")
    log = os.fdopen(log_fd, "ab", buffering=0)

    # A marker only envd's own environment has: commands must not see it,
    # since envd builds their environment from scratch.
    env = dict(os.environ, E2B_TEST_ENVD_ONLY="leaked-from-envd")

    proc = subprocess.Popen(
        [envd_bin, "--listen", "127.0.0.1:0"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        # Own process group, so envd and anything it leaves behind can be
        # cleaned up together at the end of the session.
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )

    first_line: list = []
    got_line = threading.Event()

    def pump():
        # The first stdout line carries the address; the rest of stdout is
        # copied to the log so the pipe never fills up.
        assert proc.stdout is not None
        for i, line in enumerate(iter(proc.stdout.readline, b"")):
            if i == 0:
                first_line.append(line)
                got_line.set()
            log.write(line)
        got_line.set()

    threading.Thread(target=pump, name="envd-stdout", daemon=True).start()

    def fail(msg: str):
        _stop_envd(proc)
        with open(log_path, "rb") as f:
            tail = f.read()[-4000:].decode("utf-8", errors="replace")
        pytest.exit(f"{msg}\nenvd log ({log_path}):\n{tail}", returncode=4)

    if not got_line.wait(STARTUP_TIMEOUT):
        fail(f"envd did not print its listening line within {STARTUP_TIMEOUT:.0f}s")
    if not first_line:
        fail(f"envd exited (status {proc.poll()}) before printing its listening line")

    text = first_line[0].decode("utf-8", errors="replace").strip()
    m = _LISTEN_RE.search(text)
    if not m:
        fail(
            "envd's first stdout line should be 'envd listening on HOST:PORT', "
            f"got {text!r}"
        )

    url = f"http://{m.group(1)}:{m.group(2)}"
    return EnvdProcess(proc, url, log_path)


def _stop_envd(proc: subprocess.Popen):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    # Processes envd started and that are still in its group (for example a
    # background command a failed test never killed).
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


@pytest.fixture(scope="session")
def envd():
    """The running envd (one per test session)."""
    global _ENVD
    e = _start_envd()
    _ENVD = e
    try:
        yield e
    finally:
        _ENVD = None
        _stop_envd(e.proc)
        try:
            os.unlink(e.log_path)
        except OSError:
            pass


@pytest.fixture(scope="session")
def envd_url(envd) -> str:
    """Base URL of envd, e.g. ``http://127.0.0.1:40123``."""
    return envd.url


@pytest.fixture
def sandbox(envd, envd_url) -> Sandbox:
    """A debug-mode SDK sandbox bound to the local envd (no control plane)."""
    envd.check_alive()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sbx = Sandbox.create(
            debug=True, sandbox_url=envd_url, request_timeout=REQUEST_TIMEOUT
        )
    assert sbx.envd_api_url == envd_url
    yield sbx
    envd.check_alive()


@pytest.fixture
def async_sandbox_factory(envd, envd_url):
    """``await async_sandbox_factory()`` gives an ``AsyncSandbox`` bound to envd.

    Async clients are tied to the event loop they were made in, so the test
    creates the sandbox inside its own ``asyncio.run``.
    """
    envd.check_alive()

    async def make() -> AsyncSandbox:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return await AsyncSandbox.create(
                debug=True, sandbox_url=envd_url, request_timeout=REQUEST_TIMEOUT
            )

    return make


@pytest.fixture(scope="session")
def test_user() -> pwd.struct_passwd:
    """The unprivileged account ``user`` (home ``/home/user``)."""
    try:
        return pwd.getpwnam(TEST_USER)
    except KeyError:
        pytest.fail(
            f"system user {TEST_USER!r} does not exist; create it first "
            f"(the Makefile does: useradd -m {TEST_USER})",
            pytrace=False,
        )


@pytest.fixture
def tmp_dir() -> str:
    """A fresh, world-writable directory under /tmp, removed after the test.

    World-writable (with the sticky bit off) so that tests acting as ``user``
    can create files in it too.
    """
    d = tempfile.mkdtemp(prefix="e2b-envd-test-", dir="/tmp")
    os.chmod(d, 0o777)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# -- attach envd's log to failing tests --------------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item._envd_log_offset = _ENVD.log_size() if _ENVD is not None else 0
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and _ENVD is not None:
        text = _ENVD.log_since(getattr(item, "_envd_log_offset", 0))
        if text.strip():
            report.sections.append(("envd log during test", text))


# -- small helpers shared by the test modules ----------------------------------


def _wait_until(predicate, timeout: float = 10.0, interval: float = 0.05, what=""):
    """Poll ``predicate`` until it returns a truthy value; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture
def wait_until():
    """``wait_until(predicate, timeout=10, what="...")`` polls until truthy."""
    return _wait_until
