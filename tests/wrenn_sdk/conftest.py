"""Fixtures for driving `wrenn up` with the published `wrenn` Python SDK (0.3.0, unchanged).

The suite starts one single-node server per session:

    $WRENN_BIN up --data-dir <fresh dir under /var/tmp> --listen 127.0.0.1:<free port>

with the built templates of ``WRENN_IMAGES`` (default ``/var/tmp/wrenn/images``, where the guest
images are built) hard-linked into ``<data-dir>/images`` (so the snapshot templates the suite
makes go with the data dir), ``WRENN_AGENT_SLOTS=2000-2099``, so that it never touches the
network slots of other tests' agents, and ``WRENN_TEMPLATES=minimal`` unless set. It gets
no ``WRENN_DIR``, ``WRENN_LISTEN`` or ``DATABASE_URL`` (the embedded database in the data dir). ``WRENN_BIN`` defaults to
``$CARGO_TARGET_DIR/debug/wrenn`` (``CARGO_TARGET_DIR`` defaults to
``/var/tmp/wrenn/target``). Its stdout and stderr go to ``<data-dir>/server.log``.

The server is ready when ``GET /health`` answers 200. It then has written the admin API
key (``wrn_`` + 32 hex, mode 0600) to ``<data-dir>/admin-api-key``. The SDK finds the
server through ``WRENN_BASE_URL`` and ``WRENN_API_KEY``, which the session sets.

``WRENN_SDK_HOSTS=N`` (default 1, at most 3) adds N-1 ``wrenn agent`` hosts registered with
tokens (``cluster.py``), so the same suite runs against a control plane with several hosts.
While it runs, every host's capsules are sampled; the session fails unless each host held one
when ``test_hosts.py`` ran (it places a capsule on each), and reports how many each held.

At the end the server gets SIGINT and must exit within 30 s; then the data dir is
removed (kept when ``WRENN_SDK_KEEP_DATA=1``).

Every test phase runs under a SIGALRM deadline (no plugin needed): the call phase gets
``DEFAULT_CALL_DEADLINE`` seconds unless the test says ``@pytest.mark.deadline(N)``.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from wrenn import Capsule, WrennClient, WrennNotFoundError

import cluster
import sdkutil

# How long `wrenn up` gets to answer GET /health with 200.
STARTUP_TIMEOUT = 180.0
# How long it gets to exit after SIGINT.
SHUTDOWN_TIMEOUT = 30.0
# Network slots the suite's server may use (never another test agent's).
AGENT_SLOTS = "2000-2099"
# Per-phase deadlines in seconds. Setup covers the server start and module capsules.
DEFAULT_CALL_DEADLINE = 120
# (with extra hosts: their registration too; their agents stop before the server).
SETUP_DEADLINE = int(STARTUP_TIMEOUT + cluster.ONLINE_TIMEOUT) + 150
TEARDOWN_DEADLINE = int(SHUTDOWN_TIMEOUT + cluster.SHUTDOWN_TIMEOUT) + 150

_KEY_RE = re.compile(r"^wrn_[0-9a-f]{32}$")


def pytest_collection_modifyitems(items):
    global _HOST_TESTS_SELECTED
    _HOST_TESTS_SELECTED = any(i.nodeid.split("::")[0].endswith("test_hosts.py") for i in items)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "deadline(seconds): the test's call phase fails after this long"
    )


# -- the server ----------------------------------------------------------------


class Server:
    """A running `wrenn up` and what a test needs to reach it."""

    def __init__(self, proc, url, data_dir, log_path):
        self.proc = proc
        self.url = url
        self.data_dir = data_dir
        self.log_path = log_path
        self.api_key = None
        # With several hosts: which host held which capsule (cluster.Placements).
        self.placements: "cluster.Placements | None" = None

    def log_size(self) -> int:
        return _log_size(self.log_path)

    def log_since(self, offset: int, limit: int = 20000) -> str:
        return _read_since(self.log_path, offset, limit)

    def log_tail(self, limit: int = 6000) -> str:
        return self.log_since(max(0, self.log_size() - limit), limit)

    def check_alive(self):
        code = self.proc.poll()
        if code is not None:
            pytest.fail(
                f"wrenn up (pid {self.proc.pid}) has exited with status {code}; "
                f"log tail ({self.log_path}):\n{self.log_tail()}",
                pytrace=False,
            )
        for agent in _AGENTS:
            code = agent.proc.poll()
            if code is not None:
                pytest.fail(
                    f"agent {agent.index} ({agent.host_id}) has exited with status {code}; "
                    f"log tail ({agent.log_path}):\n{agent.log_tail()}",
                    pytrace=False,
                )


_SERVER: "Server | None" = None
# The extra hosts' agents (WRENN_SDK_HOSTS > 1), for their logs in failure reports.
_AGENTS: "list[cluster.Agent]" = []
# Capsules per host of a run with several hosts, for the terminal summary.
_PLACEMENT_SUMMARY: "str | None" = None
# Whether test_hosts.py (a capsule on each host) is part of the session: then a run with
# several hosts fails unless every host held a capsule.
_HOST_TESTS_SELECTED = False


def _log_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _read_since(path: str, offset: int, limit: int = 20000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if len(text) > limit:
        text = "...\n" + text[-limit:]
    return text


def _die_with_parent():
    """In the child before exec: SIGKILL when the test runner dies.

    Keeps a server from outliving a pytest that was killed before its teardown ran
    (the agent cleans up its slot range on its next start).
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wrenn_bin() -> str:
    explicit = os.environ.get("WRENN_BIN")
    if explicit:
        path = explicit
    else:
        target = os.environ.get("CARGO_TARGET_DIR") or "/var/tmp/wrenn/target"
        path = os.path.join(target, "debug", "wrenn")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.exit(
            f"wrenn binary {path!r} is not an executable file: build it "
            "(cargo build -p wrenn) or point WRENN_BIN at one",
            returncode=4,
        )
    return path


def _health_status(url: str) -> "int | None":
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


def _read_api_key(data_dir: str) -> str:
    """The admin key `wrenn up` wrote; checks its form and its 0600 mode."""
    path = os.path.join(data_dir, "admin-api-key")
    deadline = time.monotonic() + 10
    while not os.path.exists(path):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{path} does not exist although /health answers 200")
        time.sleep(0.1)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600, f"{path} has mode {mode:o}, expected 600"
    with open(path) as f:
        key = f.read().strip()
    assert _KEY_RE.match(key), f"{path} does not hold wrn_ + 32 hex characters: {key!r}"
    return key


def _shared_images() -> str:
    return os.environ.get("WRENN_IMAGES") or "/var/tmp/wrenn/images"


def _start_server() -> Server:
    wrenn_bin = _wrenn_bin()
    data_dir = tempfile.mkdtemp(prefix="wrenn-sdk-tests-", dir="/var/tmp")
    log_path = os.path.join(data_dir, "server.log")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"

    env = dict(os.environ)
    env["WRENN_IMAGES"] = cluster.own_images(_shared_images(), data_dir)
    env["WRENN_AGENT_SLOTS"] = AGENT_SLOTS
    # The suite needs only `minimal`: do not make the server build other templates.
    env.setdefault("WRENN_TEMPLATES", "minimal")
    # Not ours to pass on: everything lives in the fresh data dir (embedded database too).
    for name in ("WRENN_DIR", "WRENN_LISTEN", "DATABASE_URL", "WRENN_API_KEY", "WRENN_BASE_URL"):
        env.pop(name, None)

    with open(log_path, "ab", buffering=0) as log:
        proc = subprocess.Popen(
            [wrenn_bin, "up", "--data-dir", data_dir, "--listen", f"127.0.0.1:{port}"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # Own process group, so anything it leaves behind can be found and ended.
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    server = Server(proc, url, data_dir, log_path)

    def fail(msg: str):
        _stop_server(server)
        tail = server.log_tail()
        _remove_data_dir(data_dir)
        pytest.exit(f"{msg}\nwrenn up log tail:\n{tail}", returncode=4)

    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            code = proc.poll()
            if code is not None:
                fail(f"wrenn up exited with status {code} before /health answered 200")
            status = _health_status(url)
            if status == 200:
                break
            if time.monotonic() >= deadline:
                fail(
                    f"GET {url}/health did not answer 200 within {STARTUP_TIMEOUT:.0f}s "
                    f"(last answer: {status})"
                )
            time.sleep(0.2)
        try:
            server.api_key = _read_api_key(data_dir)
        except AssertionError as e:
            fail(str(e))
    except BaseException:
        # A deadline or ^C while waiting: never leave the server behind.
        if proc.poll() is None:
            _stop_server(server)
        raise
    return server


def _stop_server(server: Server) -> "str | None":
    """SIGINT, then SIGKILL after SHUTDOWN_TIMEOUT. Returns a problem, if any."""
    proc = server.proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        return cluster.wait_stopped(proc, "wrenn up", SHUTDOWN_TIMEOUT)
    cluster.kill_group(proc)
    return None


def _remove_data_dir(data_dir: str):
    if os.environ.get("WRENN_SDK_KEEP_DATA") == "1":
        print(f"\nkeeping the server's data dir {data_dir}")
        return
    errors = []
    shutil.rmtree(data_dir, onexc=lambda fn, p, e: errors.append(f"{p}: {e}"))
    if errors:
        import warnings

        warnings.warn(f"could not remove all of {data_dir}: {errors[:5]}")


def _wanted_hosts() -> int:
    try:
        return cluster.wanted_hosts()
    except ValueError as e:
        pytest.exit(str(e), returncode=4)


def _start_hosts(s: Server, count: int, agents: cluster.Agents) -> cluster.Placements:
    """Registers ``count`` extra agents with ``s``; the started placement sampler."""
    api = cluster.Api(s.url, s.api_key)
    images = os.path.join(s.data_dir, "images")
    try:
        agents.start(_wrenn_bin(), api, images, count, _die_with_parent)
        online = [h["id"] for h in api.hosts() if h["status"] == "online"]
        if len(online) != count + 1:
            raise RuntimeError(f"expected {count + 1} online hosts, GET /v1/hosts has {online}")
    except BaseException as e:
        problems = agents.stop()
        _stop_server(s)
        tail = s.log_tail()
        _remove_data_dir(s.data_dir)
        pytest.exit(
            f"the extra hosts did not come up: {e}\n{problems}\nwrenn up log tail:\n{tail}",
            returncode=4,
        )
    labels = {h: "wrenn up" for h in online}
    labels.update({a.host_id: f"agent{a.index} {a.address}" for a in agents.agents})
    placements = cluster.Placements(api, labels)
    placements.start()
    return placements


def _spread_problem(placements: cluster.Placements) -> "str | None":
    """A host that never held a capsule although test_hosts.py ran, if there is one."""
    if not _HOST_TESTS_SELECTED or placements.hosts_used() == len(placements.held):
        return None
    return (
        f"a host never held a capsule: {placements.summary()}; "
        f"sampling errors: {placements.errors}"
    )


@pytest.fixture(scope="session")
def server():
    """The running `wrenn up` (one per test session); exports WRENN_BASE_URL/WRENN_API_KEY.

    With ``WRENN_SDK_HOSTS`` above 1 its control plane also has that many hosts less one
    registered `wrenn agent`s.
    """
    global _SERVER, _PLACEMENT_SUMMARY
    hosts = _wanted_hosts()
    s = _start_server()
    agents = cluster.Agents()
    placements = _start_hosts(s, hosts - 1, agents) if hosts > 1 else None
    s.placements = placements
    _AGENTS[:] = agents.agents
    saved = {k: os.environ.get(k) for k in ("WRENN_BASE_URL", "WRENN_API_KEY")}
    os.environ["WRENN_BASE_URL"] = s.url
    os.environ["WRENN_API_KEY"] = s.api_key
    _SERVER = s
    try:
        yield s
    finally:
        _SERVER = None
        _AGENTS.clear()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        problems = []
        if placements is not None:
            placements.stop()
            _PLACEMENT_SUMMARY = placements.summary()
            problems.append(_spread_problem(placements))
        problems += agents.stop()
        server_problem = _stop_server(s)
        tail = f"; log tail:\n{s.log_tail()}" if server_problem else ""
        problems.append(server_problem)
        leftovers = cluster.processes_using(s.data_dir)
        for pid, _ in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if leftovers:
            import warnings

            warnings.warn(
                "wrenn up left processes that use its data dir after it exited "
                f"(killed now): {leftovers[:5]}"
            )
        _remove_data_dir(s.data_dir)
        assert s.proc.poll() is not None, "wrenn up is still running"
        problems = [p for p in problems if p]
        assert not problems, "; ".join(problems) + tail


@pytest.fixture(scope="session")
def client(server):
    """A `WrennClient` for the session's server (explicit base_url and api_key)."""
    c = WrennClient(api_key=server.api_key, base_url=server.url)
    try:
        yield c
    finally:
        c.close()


def _new_capsule(server, **kw) -> Capsule:
    server.check_alive()
    return Capsule(template="minimal", wait=True, **kw)


def _drop_capsule(server, cap: Capsule):
    try:
        cap.destroy(wait=True)
    except WrennNotFoundError:
        pass  # the test destroyed it already
    finally:
        sdkutil.close_capsule_client(cap)
    server.check_alive()


@pytest.fixture
def capsule(server):
    """A fresh running capsule from template ``minimal``, destroyed afterwards."""
    cap = _new_capsule(server)
    try:
        yield cap
    finally:
        _drop_capsule(server, cap)


@pytest.fixture(scope="module")
def mod_capsule(server):
    """One running ``minimal`` capsule shared by a module's tests (they must not break it)."""
    cap = _new_capsule(server)
    try:
        yield cap
    finally:
        _drop_capsule(server, cap)


@pytest.fixture
def new_capsule(server):
    """``new_capsule(**kw)`` creates more capsules; all are destroyed after the test."""
    made = []

    def make(**kw) -> Capsule:
        kw.setdefault("template", "minimal")
        server.check_alive()
        cap = Capsule(wait=True, **kw)
        made.append(cap)
        return cap

    try:
        yield make
    finally:
        for cap in made:
            _drop_capsule(server, cap)


# -- per-phase deadlines (SIGALRM; the tests run in the main thread) -------------


class _Deadline:
    def __init__(self, seconds: int, what: str):
        self.seconds = seconds
        self.what = what

    def __enter__(self):
        def expired(signum, frame):
            pytest.fail(f"{self.what} took longer than {self.seconds}s", pytrace=True)

        self._old = signal.signal(signal.SIGALRM, expired)
        signal.alarm(self.seconds)
        return self

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self._old)
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    with _Deadline(SETUP_DEADLINE, f"setup of {item.nodeid}"):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    marker = item.get_closest_marker("deadline")
    seconds = int(marker.args[0]) if marker else DEFAULT_CALL_DEADLINE
    item._wrenn_log_offset = _SERVER.log_size() if _SERVER is not None else 0
    item._wrenn_agent_log_offsets = [_log_size(a.log_path) for a in _AGENTS]
    with _Deadline(seconds, item.nodeid):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    with _Deadline(TEARDOWN_DEADLINE, f"teardown of {item.nodeid}"):
        yield


# -- attach the server's log to failing tests -----------------------------------


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call" and report.failed and _SERVER is not None:
        text = _SERVER.log_since(getattr(item, "_wrenn_log_offset", 0))
        if text.strip():
            report.sections.append(("wrenn up log during test", text))
        offsets = getattr(item, "_wrenn_agent_log_offsets", [])
        for agent, offset in zip(_AGENTS, offsets):
            text = _read_since(agent.log_path, offset)
            if text.strip():
                report.sections.append((f"agent {agent.index} ({agent.host_id}) log", text))


def pytest_terminal_summary(terminalreporter):
    if _PLACEMENT_SUMMARY is not None:
        terminalreporter.write_line(f"wrenn hosts: {_PLACEMENT_SUMMARY}")
