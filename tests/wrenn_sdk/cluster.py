"""Extra hosts for the wrenn SDK suite: ``WRENN_SDK_HOSTS=3`` (read by conftest.py).

With ``WRENN_SDK_HOSTS=N`` the session's `wrenn up` (its built-in host is the first) gets
N-1 more hosts, each a ``wrenn agent`` registered with a token as an operator would:

    POST /v1/hosts {"type": "regular", "tags": ["sdk-agentI"]}  -> {host, registration_token}
    $WRENN_BIN agent --register TOKEN --control-plane URL --address 127.0.0.(5+I):PORT \\
        --data-dir <fresh dir> --images <wrenn up's images> --slots FIRST-LAST --heartbeat-every 2

and the session waits until ``GET /v1/hosts`` shows it ``online``. The calls use the admin
API key (the platform team's: platform admin). Each agent has its own data dir under
/var/tmp (its log in ``agent.log`` there) and its own slot range below; at the end it gets
SIGINT (SIGKILL after ``SHUTDOWN_TIMEOUT``) and its dir is removed. The agents share
the images folder of `wrenn up` (one machine; ``own_images``), so a snapshot template made on one host is
present on every host: moving templates between hosts is not what this run tests.

Two extra agents at most: slots 2000-2099 are the built-in host's, 2100-2149 and 2150-2199
the agents'; 2200-2299 belong to the `wrenn` CLI tests, so a third agent would meet them.

``Placements`` polls ``GET /v1/hosts/{id}/delete-preview`` of every host while the suite
runs and records which host held which capsule (tests add what they saw themselves with
``note``), so the session can report how the capsules spread and check every host held one.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

HOSTS_ENV = "WRENN_SDK_HOSTS"
# Slot range of each extra agent, in order; agent I listens on 127.0.0.(FIRST_IP + I).
AGENT_SLOTS = ("2100-2149", "2150-2199")
FIRST_IP = 5
# How long a registered agent gets to show up `online`.
ONLINE_TIMEOUT = 120.0
# How long an agent gets to exit after SIGINT.
SHUTDOWN_TIMEOUT = 30.0
HEARTBEAT_SECS = 2
# How often Placements asks every host which capsules it holds.
POLL_SECS = 0.5

# Variables of the session's environment that would change what an agent does.
_AGENT_ENV_DROP = (
    "WRENN_DIR",
    "WRENN_CONFIG",
    "WRENN_LISTEN",
    "WRENN_AGENT_LISTEN",
    "WRENN_AGENT_SLOTS",
    "WRENN_AGENT_TLS_DIR",
    "WRENN_REGISTER",
    "WRENN_CONTROL_PLANE",
    "WRENN_ADDRESS",
    "WRENN_HEARTBEAT_EVERY",
    "DATABASE_URL",
    "WRENN_API_KEY",
    "WRENN_BASE_URL",
)


def wanted_hosts() -> int:
    """``WRENN_SDK_HOSTS`` (default 1): how many hosts the session's control plane has."""
    raw = os.environ.get(HOSTS_ENV, "").strip() or "1"
    most = len(AGENT_SLOTS) + 1
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if not 1 <= n <= most:
        raise ValueError(f"{HOSTS_ENV}={raw!r}: expected a number from 1 to {most}")
    return n


class Api:
    """JSON calls to the control plane with the admin API key."""

    def __init__(self, url: str, api_key: str):
        self.url = url
        self.api_key = api_key

    def call(self, method: str, path: str, body=None, timeout: float = 30.0):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("x-api-key", self.api_key)
        if data is not None:
            req.add_header("content-type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                text = resp.read().decode()
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise RuntimeError(f"{method} {path}: {e.code} {detail}") from None
        return json.loads(text) if text else None

    def hosts(self) -> "list[dict]":
        return self.call("GET", "/v1/hosts")


def _free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def _tail(path: str, limit: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - limit))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


class Agent:
    """One registered `wrenn agent` process."""

    def __init__(self, index: int, host_id: str, address: str, data_dir: str, proc):
        self.index = index
        self.host_id = host_id
        self.address = address
        self.data_dir = data_dir
        self.log_path = os.path.join(data_dir, "agent.log")
        self.proc = proc
        self._interrupted = False

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def interrupt(self):
        """SIGINT, unless it has exited already (``finish`` reports that)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self._interrupted = True

    def finish(self) -> "str | None":
        """Waits for it after ``interrupt``, SIGKILL after SHUTDOWN_TIMEOUT; a problem, if any."""
        proc = self.proc
        name = f"agent {self.index} ({self.host_id})"
        if self._interrupted:
            problem = wait_stopped(proc, name, SHUTDOWN_TIMEOUT)
        else:
            problem = f"{name} had exited with status {proc.poll()} before the end"
            kill_group(proc)
        if problem:
            problem += f"; its log tail:\n{self.log_tail()}"
        return problem


class Agents:
    """The session's extra hosts: started by ``start``, stopped (dirs removed) by ``stop``."""

    def __init__(self):
        self.agents: "list[Agent]" = []
        self.data_dirs: "list[str]" = []

    def host_ids(self) -> "list[str]":
        return [a.host_id for a in self.agents]

    def start(self, wrenn_bin: str, api: Api, images: str, count: int, preexec_fn=None):
        """Makes ``count`` hosts, starts their agents and waits until each is ``online``."""
        if count > len(AGENT_SLOTS):
            raise ValueError(f"at most {len(AGENT_SLOTS)} extra agents (slot ranges)")
        env = {k: v for k, v in os.environ.items() if k not in _AGENT_ENV_DROP}
        for i in range(count):
            made = api.call("POST", "/v1/hosts", {"type": "regular", "tags": [f"sdk-agent{i}"]})
            host_id = made["host"]["id"]
            token = made["registration_token"]
            ip = f"127.0.0.{FIRST_IP + i}"
            address = f"{ip}:{_free_port(ip)}"
            data_dir = tempfile.mkdtemp(prefix=f"wrenn-sdk-agent{i}-", dir="/var/tmp")
            self.data_dirs.append(data_dir)
            with open(os.path.join(data_dir, "agent.log"), "ab", buffering=0) as log:
                proc = subprocess.Popen(
                    [
                        wrenn_bin, "agent",
                        "--register", token,
                        "--control-plane", api.url,
                        "--address", address,
                        "--data-dir", data_dir,
                        "--images", images,
                        "--slots", AGENT_SLOTS[i],
                        "--heartbeat-every", str(HEARTBEAT_SECS),
                    ],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    preexec_fn=preexec_fn,
                )
            self.agents.append(Agent(i, host_id, address, data_dir, proc))
        for agent in self.agents:
            self._wait_online(api, agent)

    @staticmethod
    def _wait_online(api: Api, agent: Agent):
        deadline = time.monotonic() + ONLINE_TIMEOUT
        status = None
        while True:
            code = agent.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"agent {agent.index} exited with status {code} before its host was online; "
                    f"log tail:\n{agent.log_tail()}"
                )
            status = next((h["status"] for h in api.hosts() if h["id"] == agent.host_id), None)
            if status == "online":
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"host {agent.host_id} (agent {agent.index}, {agent.address}) is {status!r}, "
                    f"not online, after {ONLINE_TIMEOUT:.0f}s; log tail:\n{agent.log_tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> "list[str]":
        """Stops every agent, ends what is left that uses its dir, removes the dirs.

        Returns the problems (an agent that died early or would not stop, leftovers).
        """
        for agent in self.agents:
            agent.interrupt()
        problems = [p for p in (a.finish() for a in self.agents) if p]
        for data_dir in self.data_dirs:
            leftovers = processes_using(data_dir)
            for pid, _ in leftovers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if leftovers:
                problems.append(
                    f"processes used {data_dir} after its agent exited (killed now): "
                    f"{leftovers[:5]}"
                )
            if os.environ.get("WRENN_SDK_KEEP_DATA") == "1":
                print(f"\nkeeping the agent's data dir {data_dir}")
            else:
                shutil.rmtree(data_dir, ignore_errors=True)
        self.agents = []
        self.data_dirs = []
        return problems


def processes_using(path: str) -> "list[tuple[int, str]]":
    """Processes whose command line mentions ``path`` (leftover VMMs, for instance)."""
    found = []
    needle = path.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if needle in cmdline:
            found.append((int(entry), cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


class Placements:
    """Which host held which capsule, sampled every ``POLL_SECS`` on a background thread."""

    def __init__(self, api: Api, labels: "dict[str, str]"):
        """``labels``: host id -> what to call it in the summary."""
        self.api = api
        self.labels = labels
        self.held = {h: set() for h in labels}
        self.errors: "list[str]" = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="placements", daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.wait(POLL_SECS):
            self.sample()

    def sample(self):
        for host_id, seen in self.held.items():
            try:
                preview = self.api.call("GET", f"/v1/hosts/{host_id}/delete-preview", timeout=10)
            except Exception as e:  # the server may be busy or stopping; keep the first few
                if len(self.errors) < 5:
                    self.errors.append(f"{host_id}: {e}")
                continue
            seen.update(preview["capsule_ids"])

    def note(self, host_id: str, capsule_id: str):
        """Records a capsule seen on ``host_id`` otherwise (one too short-lived to sample)."""
        self.held[host_id].add(capsule_id)

    def stop(self):
        self._stop.set()
        self._thread.join(15)

    def capsules(self) -> int:
        return sum(len(c) for c in self.held.values())

    def summary(self) -> str:
        per_host = ", ".join(
            f"{self.labels[h]} {h}: {len(c)}" for h, c in self.held.items()
        )
        return f"{self.capsules()} capsules over {len(self.held)} hosts ({per_host})"

    def hosts_used(self) -> int:
        return sum(1 for c in self.held.values() if c)


def kill_group(proc: subprocess.Popen):
    """Kills whatever is still in ``proc``'s process group (a QEMU it never stopped, say)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait_stopped(proc: subprocess.Popen, name: str, timeout: float) -> "str | None":
    """Waits for ``proc`` after its SIGINT, SIGKILL after ``timeout`` seconds, then kills what
    is left in its process group; a problem, if any."""
    problem = None
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        problem = f"{name} did not exit within {timeout:.0f}s of SIGINT"
    else:
        if proc.returncode not in (0, 130, -signal.SIGINT):
            problem = f"{name} exited with status {proc.returncode} after SIGINT"
    kill_group(proc)
    return problem


def own_images(shared: str, data_dir: str) -> str:
    """``data_dir/images`` (where ``wrenn up`` keeps images by default): every built template of
    ``shared`` (a folder with ``inputs.sha256``) hard-linked in. The snapshot templates a run
    makes land there and are removed with ``data_dir``, never left in the shared folder."""
    if os.stat(shared).st_dev != os.stat(data_dir).st_dev:
        return shared  # no hard links across filesystems
    own = os.path.join(data_dir, "images")
    os.makedirs(own, mode=0o700, exist_ok=True)
    for name in sorted(os.listdir(shared)):
        src = os.path.join(shared, name)
        if os.path.isfile(os.path.join(src, "inputs.sha256")) and not os.path.exists(os.path.join(own, name)):
            subprocess.run(["cp", "-al", src, os.path.join(own, name)], check=True)
    return own
