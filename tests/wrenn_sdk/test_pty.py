"""capsule.pty / capsule.pty_connect: the PTY WebSocket (binary frames for the terminal's
bytes, JSON text frames for control)."""

import pytest

from wrenn import PtySession

from sdkutil import PtyReader

pytestmark = pytest.mark.deadline(90)


def test_pty_runs_shell_input(mod_capsule):
    with mod_capsule.pty() as term:
        assert isinstance(term, PtySession)
        reader = PtyReader(term)
        started = reader.wait_event("started")
        assert started.tag, "the started event should carry the session's tag"
        assert started.pid and started.pid > 0
        assert term.tag == started.tag and term.pid == started.pid
        term.write(b"echo $((6*7))\n")
        # The echoed input line holds "$((6*7))", so a bare 42 line is the shell's answer.
        reader.wait_for(r"(?m)^42\r?$")
        term.write(b"test -t 0 && test -t 1 && echo TTY-$((1+1))\n")
        reader.wait_for(r"TTY-2")
        term.kill()
        reader.wait_end()


def test_pty_exit_code(mod_capsule):
    with mod_capsule.pty() as term:
        reader = PtyReader(term)
        reader.wait_event("started")
        term.write(b"exit 7\n")
        reader.wait_end()
    exits = [e for e in reader.events if e.type == "exit"]
    assert len(exits) == 1, reader.events
    assert exits[0].exit_code == 7


def test_pty_initial_size_and_resize(mod_capsule):
    with mod_capsule.pty(cols=100, rows=30) as term:
        reader = PtyReader(term)
        term.write(b"echo size=$(stty size)\n")
        m = reader.wait_for(r"size=(\d+) (\d+)")
        assert (int(m.group(1)), int(m.group(2))) == (30, 100)
        term.resize(cols=120, rows=40)
        term.write(b"echo resized=$(stty size)\n")
        m = reader.wait_for(r"resized=(\d+) (\d+)")
        assert (int(m.group(1)), int(m.group(2))) == (40, 120)
        with pytest.raises(ValueError):
            term.resize(cols=0, rows=10)  # refused by the SDK itself
        term.kill()
        reader.wait_end()


def test_pty_cmd_args_envs_cwd(mod_capsule):
    with mod_capsule.pty(
        cmd="/bin/sh",
        args=["-c", 'echo "V:$PTY_VAR:$(pwd)"; exit 3'],
        envs={"PTY_VAR": "v1"},
        cwd="/tmp",
    ) as term:
        reader = PtyReader(term)
        reader.wait_for(r"V:v1:/tmp")
        reader.wait_end()
    exits = [e for e in reader.events if e.type == "exit"]
    assert exits and exits[-1].exit_code == 3


def test_pty_disconnect_then_reattach_by_tag(mod_capsule):
    # Leaving `with capsule.pty()` closes the socket but does not kill the shell.
    with mod_capsule.pty() as term:
        reader = PtyReader(term)
        tag = reader.wait_event("started").tag
        term.write(b"export REATTACH_MARK=xyz-$((40+2))\n")
        term.write(b"echo set-$((1+1))\n")
        reader.wait_for(r"set-2")
    # (Its reader thread stays parked: httpx-ws does not wake a receive() on a local close.)
    assert not any(e.type == "exit" for e in reader.events), "disconnecting ended the shell"

    with mod_capsule.pty_connect(tag) as term2:
        reader2 = PtyReader(term2)
        term2.write(b'echo "R:$REATTACH_MARK"\n')
        reader2.wait_for(r"R:xyz-42")
        # kill ends the shell: the stream ends with an exit event.
        term2.kill()
        reader2.wait_end()
    exits = [e for e in reader2.events if e.type == "exit"]
    assert len(exits) == 1, [e.type for e in reader2.events]


def test_pty_connect_unknown_tag_fails(mod_capsule):
    with mod_capsule.pty_connect("pty-00000000") as term:
        reader = PtyReader(term)
        reader.wait_end()
    kinds = [e.type for e in reader.events]
    assert "started" not in kinds and "output" not in kinds, kinds
    errors = [e for e in reader.events if e.type == "error"]
    assert errors, f"expected an error event for an unknown tag, got {kinds}"
    assert errors[-1].fatal is True
