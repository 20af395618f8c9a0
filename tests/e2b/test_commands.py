"""`sandbox.commands` against envd: process.Process Start/Connect/List/
SendSignal/SendInput/StreamInput/CloseStdin, as the e2b SDK drives them."""

import os
import threading
import time
import uuid

import pytest

from e2b import (
    AuthenticationException,
    CommandExitException,
    InvalidArgumentException,
    SandboxException,
    TimeoutException,
)

# A pid that can never exist (the kernel's pid_max is at most 2**22), so envd
# cannot have started it and must answer NOT_FOUND.
NEVER_A_PID = 2**22 + 1


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live (non-zombie) process on this host.

    envd runs on this host, so the pids it reports are host pids.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # "pid (comm) state ..."; comm may hold spaces, so split after the last ')'.
    state = stat.rsplit(")", 1)[1].split()[0]
    return state != "Z"


def listed_pids(sandbox):
    return {p.pid for p in sandbox.commands.list()}


READY = "__ready__"


def ready_cmd(cmd: str) -> str:
    """``cmd`` prefixed so that it first reports that the shell is up.

    ``exec`` keeps the pid envd reported. Tests kill a process only after it
    reported, never while ``bash -l`` is still sourcing the login profile:
    on hosts whose profile runs ``pyenv rehash``, a shell killed there leaves
    pyenv's lock file behind and every later login shell waits 60s for it.
    """
    return f"echo {READY}; exec {cmd}"


def start_ready(sandbox, cmd: str, **kw):
    """Start ``ready_cmd(cmd)`` in the background and wait until it is up."""
    h = sandbox.commands.run(ready_cmd(cmd), background=True, **kw)
    for stdout, _, _ in h:
        if stdout and READY in stdout:
            break
    return h


# -- foreground runs -----------------------------------------------------------


def test_run_foreground_stdout(sandbox):
    r = sandbox.commands.run("echo hello; echo world", timeout=30)
    assert r.exit_code == 0
    assert r.stdout == "hello\nworld\n"
    assert r.stderr == ""


def test_run_separates_stdout_and_stderr(sandbox):
    r = sandbox.commands.run("echo to-out; echo to-err >&2", timeout=30)
    assert r.exit_code == 0
    assert r.stdout == "to-out\n"
    assert r.stderr == "to-err\n"


def test_run_utf8_output(sandbox):
    r = sandbox.commands.run("printf 'h\\xc3\\xa9llo \\xe2\\x9c\\x93\\n'", timeout=30)
    assert r.stdout == "héllo ✓\n"


def test_run_nonzero_exit_raises(sandbox):
    with pytest.raises(CommandExitException) as ei:
        sandbox.commands.run("echo partial; echo boom >&2; exit 3", timeout=30)
    e = ei.value
    assert e.exit_code == 3
    assert e.stdout == "partial\n"
    assert "boom" in e.stderr
    assert isinstance(e, SandboxException)


def test_run_command_not_found_exit_127(sandbox):
    with pytest.raises(CommandExitException) as ei:
        sandbox.commands.run("definitely-not-a-command-xyz", timeout=30)
    assert ei.value.exit_code == 127
    assert "not found" in ei.value.stderr


def test_run_envs(sandbox):
    r = sandbox.commands.run(
        'printf "%s|%s|%s" "$FOO" "$BAR_BAZ" "$EMPTY_VAR"',
        envs={"FOO": "foo value", "BAR_BAZ": "a=b;c", "EMPTY_VAR": ""},
        timeout=30,
    )
    assert r.stdout == "foo value|a=b;c|"


def test_run_envs_do_not_leak_between_commands(sandbox):
    sandbox.commands.run("true", envs={"ONLY_ONCE_VAR": "x"}, timeout=30)
    r = sandbox.commands.run('printf "[%s]" "${ONLY_ONCE_VAR-unset}"', timeout=30)
    assert r.stdout == "[unset]"


def test_run_has_path(sandbox):
    # Upstream envd builds the environment from scratch but keeps a PATH.
    r = sandbox.commands.run('command -v ls && echo "$PATH"', timeout=30)
    assert r.stdout.splitlines()[0].endswith("/ls")
    assert "/bin" in r.stdout.splitlines()[1]


def test_run_cwd(sandbox, tmp_dir):
    r = sandbox.commands.run("pwd; echo made > rel.txt", cwd=tmp_dir, timeout=30)
    assert r.stdout.strip() == os.path.realpath(tmp_dir)
    with open(os.path.join(tmp_dir, "rel.txt")) as f:
        assert f.read() == "made\n"


def test_run_cwd_tilde_and_relative_resolve_in_home(sandbox, test_user):
    r = sandbox.commands.run("pwd", cwd="~", user="user", timeout=30)
    assert r.stdout.strip() == "/home/user"
    rel = f"e2b-rel-{uuid.uuid4().hex[:8]}"
    os.mkdir(os.path.join("/home/user", rel))
    try:
        r = sandbox.commands.run("pwd", cwd=rel, user="user", timeout=30)
        assert r.stdout.strip() == os.path.join("/home/user", rel)
    finally:
        os.rmdir(os.path.join("/home/user", rel))


def test_run_environment_is_built_from_scratch(sandbox):
    # conftest starts envd with E2B_TEST_ENVD_ONLY set in envd's own
    # environment; commands must not inherit it.
    r = sandbox.commands.run(
        'printf "%s|%s|%s|%s" "${E2B_TEST_ENVD_ONLY-unset}" "$USER" "$LOGNAME" "$HOME"',
        user="user",
        timeout=30,
    )
    assert r.stdout == "unset|user|user|/home/user"


def test_run_cwd_missing_is_invalid_argument(sandbox, tmp_dir):
    missing = os.path.join(tmp_dir, "does", "not", "exist")
    with pytest.raises(InvalidArgumentException):
        sandbox.commands.run("pwd", cwd=missing, timeout=30)


# -- users -----------------------------------------------------------------------


def _identity(sandbox, **kw):
    r = sandbox.commands.run(
        'whoami; id -u; echo "$HOME"; echo "$USER"; pwd', timeout=30, **kw
    )
    return r.stdout.splitlines()


def test_default_user_is_root(sandbox):
    who, uid, home, user, cwd = _identity(sandbox)
    assert (who, uid, home, user) == ("root", "0", "/root", "root")
    assert cwd == "/root"


def test_run_as_root(sandbox):
    who, uid, home, user, _ = _identity(sandbox, user="root")
    assert (who, uid, home, user) == ("root", "0", "/root", "root")


def test_run_as_user(sandbox, test_user):
    who, uid, home, user, cwd = _identity(sandbox, user="user")
    assert who == "user"
    assert uid == str(test_user.pw_uid) != "0"
    assert home == test_user.pw_dir == "/home/user"
    assert user == "user"
    # Without a cwd, the command starts in the user's home.
    assert cwd == "/home/user"


def test_run_as_user_groups(sandbox, test_user):
    r = sandbox.commands.run("id -g", user="user", timeout=30)
    assert r.stdout.strip() == str(test_user.pw_gid)


def test_run_as_user_cannot_write_root_owned_dir(sandbox, tmp_dir):
    os.chmod(tmp_dir, 0o755)
    with pytest.raises(CommandExitException) as ei:
        sandbox.commands.run(f"touch {tmp_dir}/nope", user="user", timeout=30)
    assert ei.value.exit_code != 0
    assert "Permission denied" in ei.value.stderr
    assert not os.path.exists(os.path.join(tmp_dir, "nope"))


def test_run_unknown_user_rejected(sandbox):
    with pytest.raises(AuthenticationException):
        sandbox.commands.run("true", user="no-such-user-xyz", timeout=30)


# -- background processes ----------------------------------------------------------


def test_background_wait(sandbox):
    h = sandbox.commands.run("sleep 0.5; echo done; exit 0", background=True, timeout=30)
    assert isinstance(h.pid, int) and h.pid > 0
    r = h.wait()
    assert r.exit_code == 0
    assert r.stdout == "done\n"


def test_background_wait_nonzero(sandbox):
    h = sandbox.commands.run("echo bye >&2; exit 7", background=True, timeout=30)
    with pytest.raises(CommandExitException) as ei:
        h.wait()
    assert ei.value.exit_code == 7
    assert ei.value.stderr == "bye\n"


def test_background_kill(sandbox):
    h = start_ready(sandbox, "sleep 30", timeout=60)
    assert pid_alive(h.pid)
    t0 = time.monotonic()
    assert h.kill() is True
    with pytest.raises(CommandExitException) as ei:
        h.wait()
    assert time.monotonic() - t0 < 10
    # SIGKILL: upstream reports exit code -1 (not exited normally).
    assert ei.value.exit_code != 0
    assert not pid_alive(h.pid)
    # The process is gone: killing it again finds nothing.
    assert sandbox.commands.kill(h.pid) is False


def test_kill_by_pid(sandbox):
    h = start_ready(sandbox, "sleep 30", timeout=60)
    assert sandbox.commands.kill(h.pid) is True
    with pytest.raises(CommandExitException):
        h.wait()
    assert not pid_alive(h.pid)


def test_kill_unknown_pid_returns_false(sandbox):
    assert sandbox.commands.kill(NEVER_A_PID) is False


def test_list_shows_background_process(sandbox, tmp_dir, wait_until):
    marker = uuid.uuid4().hex[:8]
    cmd = ready_cmd(f"sleep 30 # {marker}")
    h = start_ready(
        sandbox, f"sleep 30 # {marker}", envs={"LIST_MARK": marker}, cwd=tmp_dir, timeout=60
    )
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in procs, f"pid {h.pid} not in {sorted(procs)}"
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-l", "-c", cmd]
        assert p.envs.get("LIST_MARK") == marker
        assert p.cwd == tmp_dir
        assert p.tag is None
    finally:
        h.kill()
    with pytest.raises(CommandExitException):
        h.wait()
    # Exited processes disappear from the list.
    wait_until(lambda: h.pid not in listed_pids(sandbox), timeout=5, what="pid to leave list")


def test_list_excludes_finished_process(sandbox, wait_until):
    h = sandbox.commands.run("true", background=True, timeout=30)
    h.wait()
    wait_until(lambda: h.pid not in listed_pids(sandbox), timeout=5, what="pid to leave list")


def test_concurrent_commands_run_in_parallel(sandbox):
    results = {}
    errors = []

    def run(i):
        try:
            results[i] = sandbox.commands.run(f"sleep 1; echo {i}", timeout=30).stdout
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    elapsed = time.monotonic() - t0
    assert not errors, errors
    assert results == {i: f"{i}\n" for i in range(8)}
    assert elapsed < 6, f"8 parallel 1s commands took {elapsed:.1f}s"


# -- stdin ---------------------------------------------------------------------------


def test_stdin_send_and_close(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True, timeout=30)
    h.send_stdin("hello ")
    sandbox.commands.send_stdin(h.pid, b"world\n")
    h.close_stdin()
    r = h.wait()
    assert r.stdout == "hello world\n"


def test_stdin_binary_bytes(sandbox):
    payload = bytes(range(256))
    h = sandbox.commands.run("od -An -v -tx1 | tr -d ' \\n'", background=True, stdin=True, timeout=30)
    h.send_stdin(payload)
    h.close_stdin()
    r = h.wait()
    assert r.stdout == payload.hex()


def test_stdin_is_interactive(sandbox):
    """Each line sent is answered before the next one is sent (no EOF needed)."""
    h = sandbox.commands.run(
        'while IFS= read -r l; do echo "got:$l"; done',
        background=True,
        stdin=True,
        timeout=30,
    )
    events = iter(h)
    seen = ""
    for word in ("one", "two", "three"):
        h.send_stdin(word + "\n")
        while f"got:{word}\n" not in seen:
            stdout, stderr, _ = next(events)
            seen += stdout or ""
    h.close_stdin()
    for stdout, _, _ in events:
        seen += stdout or ""
    assert seen == "got:one\ngot:two\ngot:three\n"
    assert h.wait().exit_code == 0


def test_stdin_stream_input(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True, timeout=30)
    sandbox.commands.stream_input(h.pid, ["a", b"b", "c\n", b"\x00d\n"])
    sandbox.commands.close_stdin(h.pid)
    r = h.wait()
    assert r.stdout == "abc\n\x00d\n"


def test_stdin_false_is_dev_null(sandbox):
    # Without stdin=True the child's stdin is /dev/null, so cat ends at once.
    t0 = time.monotonic()
    r = sandbox.commands.run("cat; echo after-cat", timeout=20)
    assert r.stdout == "after-cat\n"
    assert time.monotonic() - t0 < 10


def test_send_stdin_unknown_pid(sandbox):
    from e2b import NotFoundException

    with pytest.raises(NotFoundException):
        sandbox.commands.send_stdin(NEVER_A_PID, "x")


# -- connect -------------------------------------------------------------------------


def test_connect_receives_later_output(sandbox, tmp_dir):
    go = os.path.join(tmp_dir, "go")
    h = sandbox.commands.run(
        f"echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after-connect; exit 4",
        background=True,
        timeout=60,
    )
    # Make sure "before" has been produced, then drop the stream. Disconnecting
    # must not kill the process.
    for stdout, _, _ in h:
        if stdout and "before" in stdout:
            break
    h.disconnect()
    assert pid_alive(h.pid)

    h2 = sandbox.commands.connect(h.pid, timeout=30)
    assert h2.pid == h.pid
    with open(go, "w"):
        pass
    with pytest.raises(CommandExitException) as ei:
        h2.wait()
    assert ei.value.exit_code == 4
    assert "after-connect\n" in ei.value.stdout


def test_connect_replays_output_kept_for_reattach(sandbox, tmp_dir):
    """Wrenn's envd keeps a running process's recent output (up to 1 MiB) so a
    client that reattaches sees what it missed, then the live output, in order.
    (Upstream E2B envd sends only live output; replay is a deliberate extension.)"""
    go = os.path.join(tmp_dir, "go")
    h = sandbox.commands.run(
        f"echo before; while [ ! -e {go} ]; do sleep 0.05; done; echo after",
        background=True,
        timeout=60,
    )
    for stdout, _, _ in h:
        if stdout and "before" in stdout:
            break
    h.disconnect()
    h2 = sandbox.commands.connect(h.pid, timeout=30)
    with open(go, "w"):
        pass
    r = h2.wait()
    assert r.stdout == "before\nafter\n"


def test_connect_unknown_pid(sandbox):
    from e2b import NotFoundException

    with pytest.raises(NotFoundException):
        sandbox.commands.connect(NEVER_A_PID, timeout=10)


# -- streaming, timeouts, volume ----------------------------------------------------


def test_on_stdout_streams_before_exit(sandbox):
    chunks = []  # (monotonic time, text)
    err_chunks = []
    t0 = time.monotonic()
    r = sandbox.commands.run(
        "echo first; echo err-first >&2; sleep 2; echo second",
        on_stdout=lambda s: chunks.append((time.monotonic(), s)),
        on_stderr=lambda s: err_chunks.append((time.monotonic(), s)),
        timeout=30,
    )
    done = time.monotonic()
    assert r.stdout == "first\nsecond\n"
    assert "".join(s for _, s in chunks) == "first\nsecond\n"
    first_at = next(t for t, s in chunks if "first" in s)
    assert done - first_at > 1.0, (
        f"'first' arrived {first_at - t0:.2f}s after start, only "
        f"{done - first_at:.2f}s before the end: output is not streamed"
    )
    assert err_chunks and done - err_chunks[0][0] > 1.0


def test_run_timeout_kills_process(sandbox, tmp_dir, wait_until):
    pidfile = os.path.join(tmp_dir, "pid")
    t0 = time.monotonic()
    with pytest.raises((TimeoutException, CommandExitException)):
        sandbox.commands.run(
            f"echo $$ > {pidfile}; sleep 30; echo never > {tmp_dir}/never",
            timeout=2,
        )
    assert time.monotonic() - t0 < 15
    with open(pidfile) as f:
        pid = int(f.read())
    # envd applies Connect-Timeout-Ms as the process deadline and kills it.
    wait_until(lambda: not pid_alive(pid), timeout=5, what=f"bash {pid} to be killed")
    wait_until(lambda: pid not in listed_pids(sandbox), timeout=5, what="pid to leave list")
    assert not os.path.exists(os.path.join(tmp_dir, "never"))


def test_background_timeout_kills_process(sandbox, wait_until):
    h = start_ready(sandbox, "sleep 30", timeout=2)
    with pytest.raises((TimeoutException, CommandExitException)):
        h.wait()
    wait_until(lambda: not pid_alive(h.pid), timeout=5, what=f"{h.pid} to be killed")


def test_timeout_zero_means_unlimited(sandbox):
    r = sandbox.commands.run("sleep 1.5; echo ok", timeout=0)
    assert r.stdout == "ok\n"


def test_large_output_intact_and_ordered(sandbox):
    n = 800_000  # ~5.4 MB of "1\n2\n...800000\n"
    expected = "".join(f"{i}\n" for i in range(1, n + 1))
    chunks = []
    r = sandbox.commands.run(f"seq 1 {n}", on_stdout=chunks.append, timeout=60)
    assert len(r.stdout) == len(expected)
    assert r.stdout == expected
    assert "".join(chunks) == expected
    assert len(chunks) > 1, "5 MB of output arrived as a single chunk"


def test_large_stderr_and_stdout_interleaved(sandbox):
    # Both pipes are drained concurrently: a child that fills stderr while
    # also writing stdout must not deadlock.
    r = sandbox.commands.run(
        "for i in $(seq 1 20000); do echo out$i; echo err$i >&2; done", timeout=60
    )
    assert r.stdout == "".join(f"out{i}\n" for i in range(1, 20001))
    assert r.stderr == "".join(f"err{i}\n" for i in range(1, 20001))
