"""`sandbox.pty` against envd: Start with a PTY, SendInput(pty), Update (resize),
SendSignal, as the e2b SDK drives them."""

import asyncio
import re
import threading
import time

import pytest

from e2b import CommandExitException, PtySize


class PtyReader:
    """Collects a PTY's output on a thread (``handle.wait(on_pty=...)``)."""

    def __init__(self, handle):
        self.handle = handle
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.result = None
        self.error = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _on_pty(self, data: bytes):
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def _run(self):
        try:
            self.result = self.handle.wait(on_pty=self._on_pty)
        except Exception as e:
            self.error = e
        with self._cond:
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float = 10.0) -> re.Match:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self._buf.decode("utf-8", errors="replace")
                m = rx.search(text)
                if m:
                    return m
                if not self._thread.is_alive():
                    pytest.fail(
                        f"PTY ended (result={self.result}, error={self.error!r}) "
                        f"before its output matched {pattern!r}; output: {text!r}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"PTY output did not match {pattern!r} within {timeout}s; "
                        f"output so far: {text!r}"
                    )
                self._cond.wait(min(left, 0.2))

    def join(self, timeout: float = 10.0):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "PTY stream did not end"


def test_pty_echo_and_exit(sandbox, tmp_dir):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), cwd=tmp_dir, timeout=60)
    assert h.pid > 0
    reader = PtyReader(h)
    # The arithmetic is only evaluated by the shell, so "42" in the output
    # proves the shell ran the line (the terminal echo shows "$((6*7))").
    sandbox.pty.send_stdin(h.pid, b"echo pty-$((6*7))-ok\n")
    reader.wait_for(r"pty-42-ok")
    sandbox.pty.send_stdin(h.pid, b"pwd\n")
    reader.wait_for(re.escape(tmp_dir) + r"\r?\n")
    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()
    assert reader.error is None, reader.error
    assert reader.result.exit_code == 0


def test_pty_exit_code(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b"exit 5\n")
    reader.join()
    assert isinstance(reader.error, CommandExitException)
    assert reader.error.exit_code == 5


def test_pty_is_a_terminal(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
    reader = PtyReader(h)
    sandbox.pty.send_stdin(
        h.pid, b"test -t 0 && test -t 1 && echo TTY-$((1+1)) || echo NOTTY-$((1+1))\n"
    )
    reader.wait_for(r"(NO)?TTY-2")
    assert "NOTTY-2" not in reader.text
    sandbox.pty.send_stdin(h.pid, b'echo "term=$TERM"\n')
    reader.wait_for(r"term=xterm-256color")
    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()


def test_pty_initial_size_and_resize(sandbox):
    h = sandbox.pty.create(PtySize(rows=30, cols=100), timeout=60)
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b"echo size=$(stty size)\n")
    m = reader.wait_for(r"size=(\d+) (\d+)")
    assert (int(m.group(1)), int(m.group(2))) == (30, 100)

    sandbox.pty.resize(h.pid, PtySize(rows=50, cols=120))
    sandbox.pty.send_stdin(h.pid, b"echo resized=$(stty size)\n")
    m = reader.wait_for(r"resized=(\d+) (\d+)")
    assert (int(m.group(1)), int(m.group(2))) == (50, 120)

    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()
    assert reader.error is None, reader.error


def test_pty_kill(sandbox, wait_until):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b"echo ready-$((2+3))\n")
    reader.wait_for(r"ready-5")
    assert h.pid in {p.pid for p in sandbox.commands.list()}

    assert sandbox.pty.kill(h.pid) is True
    reader.join()
    # Killed by SIGKILL: the stream ends with a non-zero exit code.
    assert isinstance(reader.error, CommandExitException), reader.error
    assert reader.error.exit_code != 0
    wait_until(
        lambda: h.pid not in {p.pid for p in sandbox.commands.list()},
        timeout=5,
        what="PTY to leave the process list",
    )
    assert sandbox.pty.kill(h.pid) is False


def test_pty_listed_with_config(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), envs={"PTY_MARK": "m1"}, timeout=60)
    reader = PtyReader(h)
    # Let the shell finish its startup files before it is killed (see
    # test_commands.ready_cmd).
    sandbox.pty.send_stdin(h.pid, b"echo up-$((1+2))\n")
    reader.wait_for(r"up-3")
    try:
        procs = {p.pid: p for p in sandbox.commands.list()}
        assert h.pid in procs
        p = procs[h.pid]
        assert p.cmd == "/bin/bash"
        assert p.args == ["-i", "-l"]
        assert p.envs.get("PTY_MARK") == "m1"
    finally:
        assert sandbox.pty.kill(h.pid) is True
        reader.join()


def test_pty_as_user(sandbox, test_user):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), user="user", timeout=60)
    reader = PtyReader(h)
    sandbox.pty.send_stdin(h.pid, b'echo "id=$(id -u) home=$HOME"\n')
    m = reader.wait_for(r"id=(\d+) home=(\S+)")
    assert m.group(1) == str(test_user.pw_uid)
    assert m.group(2) == "/home/user"
    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()


def test_pty_stream_input(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
    reader = PtyReader(h)
    sandbox.pty.stream_input(h.pid, [b"echo str", "eam-$((3*3))", b"\n"])
    reader.wait_for(r"stream-9")
    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()


def test_pty_connect(sandbox):
    h = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=60)
    h.disconnect()
    h2 = sandbox.pty.connect(h.pid, timeout=30)
    reader = PtyReader(h2)
    sandbox.pty.send_stdin(h.pid, b"echo again-$((4*4))\n")
    reader.wait_for(r"again-16")
    sandbox.pty.send_stdin(h.pid, b"exit\n")
    reader.join()
    assert reader.error is None, reader.error


def test_async_pty_on_data(async_sandbox_factory):
    async def main():
        sbx = await async_sandbox_factory()
        buf = bytearray()
        got = asyncio.Event()

        def on_data(data: bytes):
            buf.extend(data)
            if b"async-pty-63" in buf:
                got.set()

        h = await sbx.pty.create(PtySize(rows=24, cols=80), on_data=on_data, timeout=60)
        await sbx.pty.send_stdin(h.pid, b"echo async-pty-$((7*9))\n")
        await asyncio.wait_for(got.wait(), 10)
        await sbx.pty.send_stdin(h.pid, b"exit\n")
        result = await asyncio.wait_for(h.wait(), 10)
        assert result.exit_code == 0

    asyncio.run(main())
