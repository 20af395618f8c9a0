"""capsule.commands: foreground and background exec, the process list, kill, and the
exec/process WebSocket streams."""

import time

import pytest

from wrenn import (
    CommandHandle,
    CommandResult,
    StreamExitEvent,
    StreamStartEvent,
    WrennError,
    WrennNotFoundError,
)

import sdkutil

# -- foreground -------------------------------------------------------------------


def test_run_stdout_stderr_exit_code(mod_capsule):
    r = mod_capsule.commands.run("echo out; echo err >&2; echo more; exit 3")
    assert isinstance(r, CommandResult)
    # A non-zero exit is a result, not an exception.
    assert r.exit_code == 3
    assert r.stdout == "out\nmore\n"
    assert r.stderr == "err\n"
    assert isinstance(r.duration_ms, int) and r.duration_ms >= 0


def test_run_success_and_shell_features(mod_capsule):
    r = mod_capsule.commands.run("x=$((6*7)); printf '%s|' \"$x\" 'a b'; echo; true")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "42|a b|\n", "")


def test_run_utf8_round_trip(mod_capsule):
    r = mod_capsule.commands.run("echo 'héllo ✓ ünïcode'")
    assert r.exit_code == 0
    assert r.stdout == "héllo ✓ ünïcode\n"


def test_run_envs_and_cwd(mod_capsule):
    r = mod_capsule.commands.run(
        'echo "$WRENN_T1|$WRENN_T2"; pwd',
        envs={"WRENN_T1": "one", "WRENN_T2": "two words"},
        cwd="/tmp",
    )
    assert r.exit_code == 0, r
    assert r.stdout == "one|two words\n/tmp\n"
    # And nothing leaks into the next command.
    r = mod_capsule.commands.run('echo "[$WRENN_T1]"')
    assert r.stdout == "[]\n"


def test_run_cwd_relative_file(mod_capsule):
    mod_capsule.files.write("/var/tmp/wrenn-cwd/here.txt", "in cwd\n")
    r = mod_capsule.commands.run("cat here.txt", cwd="/var/tmp/wrenn-cwd")
    assert (r.exit_code, r.stdout) == (0, "in cwd\n")


def test_run_non_utf8_output_is_decoded_with_replacement(mod_capsule):
    # Invalid UTF-8 travels as base64 (encoding "base64"); the SDK decodes it and
    # replaces what is not UTF-8.
    r = mod_capsule.commands.run(r"printf 'a\377\376b\n'; printf 'e\200\n' >&2")
    assert r.exit_code == 0
    assert r.stdout == "a\ufffd\ufffdb\n"
    assert r.stderr == "e\ufffd\n"


def test_run_large_output(mod_capsule):
    r = mod_capsule.commands.run("seq 1 100000")
    assert r.exit_code == 0
    lines = r.stdout.splitlines()
    assert len(lines) == 100000
    assert lines[0] == "1" and lines[-1] == "100000"


@pytest.mark.deadline(90)
def test_run_timeout_ends_the_command(mod_capsule):
    # A unique command line, so the check below finds only this process.
    start = time.monotonic()
    try:
        r = mod_capsule.commands.run("sleep 37", timeout=2)
    except Exception as e:  # the server may report the timeout as an error
        assert isinstance(e, WrennError), f"unexpected {type(e).__name__}: {e}"
    else:
        assert r.exit_code != 0, f"a command killed at its timeout reported success: {r}"
    elapsed = time.monotonic() - start
    assert elapsed < 12, f"timeout=2 took {elapsed:.1f}s"
    sdkutil.wait_until(
        lambda: sdkutil.guest_pids_running(mod_capsule, "sleep 37") == 0,
        timeout=10,
        what="the timed-out command to be gone",
    )
    assert mod_capsule.commands.run("echo still-ok").stdout == "still-ok\n"


# -- background --------------------------------------------------------------------


def test_background_list_kill(mod_capsule):
    cmd = "sleep 301"
    h = mod_capsule.commands.run(cmd, background=True, tag="bg-sleeper")
    assert isinstance(h, CommandHandle)
    assert h.pid > 0
    assert h.tag == "bg-sleeper"
    assert h.capsule_id == mod_capsule.capsule_id
    try:
        procs = {p.pid: p for p in mod_capsule.commands.list()}
        assert h.pid in procs, procs
        p = procs[h.pid]
        assert p.tag == "bg-sleeper"
        assert p.cmd == "/bin/sh"
        assert p.args == ["-c", cmd]
        assert sdkutil.guest_pids_running(mod_capsule, cmd) >= 1
    finally:
        assert mod_capsule.commands.kill(h.pid) is None
    sdkutil.wait_until(
        lambda: h.pid not in {p.pid for p in mod_capsule.commands.list()},
        timeout=10,
        what="the killed process to leave the list",
    )
    assert sdkutil.guest_pids_running(mod_capsule, cmd) == 0
    with pytest.raises(WrennNotFoundError) as ei:
        mod_capsule.commands.kill(h.pid)
    assert ei.value.status_code == 404


def test_background_without_tag_gets_one(mod_capsule):
    h = mod_capsule.commands.run("sleep 302", background=True)
    try:
        assert h.pid > 0
        assert h.tag, "the server should give an untagged background process a tag"
        listed = {p.pid: p.tag for p in mod_capsule.commands.list()}
        assert listed.get(h.pid) == h.tag
    finally:
        mod_capsule.commands.kill(h.pid)


def test_background_honours_envs_and_cwd(mod_capsule):
    out = f"/tmp/{sdkutil.unique('bg-env')}.txt"
    # A background run's output is not returned; it writes a file instead.
    mod_capsule.commands.run(
        f'echo "$BG_VAR" > {out}; pwd >> {out}',
        background=True,
        envs={"BG_VAR": "from-bg"},
        cwd="/var",
    )
    sdkutil.wait_until(lambda: mod_capsule.files.exists(out), timeout=10, what=out)
    sdkutil.wait_until(
        lambda: mod_capsule.files.read(out) == "from-bg\n/var\n",
        timeout=5,
        what=f"{out} to hold the env value and cwd",
    )


# -- exec stream (WebSocket) ------------------------------------------------------


@pytest.mark.deadline(60)
def test_stream_is_incremental(mod_capsule):
    events = sdkutil.collect_stream(
        mod_capsule.commands.stream("for i in 1 2 3; do echo $i; sleep 1; done")
    )
    kinds = [e.type for _, e in events]
    assert kinds[0] == "start", kinds
    assert isinstance(events[0][1], StreamStartEvent) and events[0][1].pid > 0
    assert kinds[-1] == "exit", kinds
    assert isinstance(events[-1][1], StreamExitEvent) and events[-1][1].exit_code == 0
    stdout = [(t, e) for t, e in events if e.type == "stdout"]
    assert "".join(e.data for _, e in stdout) == "1\n2\n3\n"
    first_out, exit_at = stdout[0][0], events[-1][0]
    assert exit_at - first_out >= 1.5, (
        f"first stdout came only {exit_at - first_out:.2f}s before exit: output is not streamed"
    )


def test_stream_stderr_and_exit_code(mod_capsule):
    events = [e for _, e in sdkutil.collect_stream(
        mod_capsule.commands.stream("echo to-out; echo to-err >&2; exit 4")
    )]
    assert "".join(e.data for e in events if e.type == "stdout") == "to-out\n"
    assert "".join(e.data for e in events if e.type == "stderr") == "to-err\n"
    assert events[-1].type == "exit" and events[-1].exit_code == 4


def test_stream_with_args_runs_without_a_shell(mod_capsule):
    # With args the command is not wrapped in /bin/sh -c: "$HOME" stays literal.
    events = [e for _, e in sdkutil.collect_stream(
        mod_capsule.commands.stream("/bin/echo", args=["a  b", "$HOME"])
    )]
    assert "".join(e.data for e in events if e.type == "stdout") == "a  b $HOME\n"
    assert events[-1].type == "exit" and events[-1].exit_code == 0


@pytest.mark.deadline(60)
def test_connect_to_background_process(mod_capsule):
    h = mod_capsule.commands.run(
        "echo early; sleep 2; echo late1; sleep 0.5; echo late2; exit 5",
        background=True,
        tag="attach-me",
    )
    events = [e for _, e in sdkutil.collect_stream(mod_capsule.commands.connect(h.pid))]
    kinds = [e.type for e in events]
    out = "".join(e.data for e in events if e.type == "stdout")
    assert "late1\n" in out and "late2\n" in out, (kinds, out)
    assert out.index("late1") < out.index("late2")
    assert kinds[-1] == "exit", kinds
    assert events[-1].exit_code == 5
    sdkutil.wait_until(
        lambda: h.pid not in {p.pid for p in mod_capsule.commands.list()},
        timeout=10,
        what="the finished process to leave the list",
    )
