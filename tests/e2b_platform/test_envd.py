"""envd through Wrenn's port proxy (the SDK's header routing): commands, files, PTY, streams."""

import os
import threading
import time

import pytest
from e2b import CommandExitException, FileType


def test_commands_foreground_stream_and_exit_codes(sandbox):
    r = sandbox.commands.run("echo out; echo err >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    with pytest.raises(CommandExitException) as e:
        sandbox.commands.run("exit 3")
    assert e.value.exit_code == 3
    # Output arrives while the command runs (the proxy does not buffer the stream).
    seen = []
    started = time.monotonic()
    r = sandbox.commands.run(
        "echo first; sleep 2; echo second",
        on_stdout=lambda line: seen.append((line, time.monotonic() - started)),
    )
    assert [line for line, _ in seen] == ["first\n", "second\n"] or "".join(l for l, _ in seen) == "first\nsecond\n"
    assert seen[0][1] < 1.8, seen


def test_background_stdin_kill_and_connect(sandbox):
    h = sandbox.commands.run("cat", background=True, stdin=True)
    got = []
    reader = threading.Thread(target=lambda: _ignore(lambda: h.wait(on_stdout=got.append)), daemon=True)
    reader.start()
    sandbox.commands.send_stdin(h.pid, "hello\n")
    deadline = time.time() + 10
    while "hello" not in "".join(got) and time.time() < deadline:
        time.sleep(0.1)
    assert "hello" in "".join(got)
    assert sandbox.commands.kill(h.pid) is True
    # Connecting to a running process from a second handle.
    bg = sandbox.commands.run("for i in 1 2 3; do echo tick $i; sleep 1; done", background=True)
    again = sandbox.commands.connect(bg.pid)
    result = again.wait()
    assert "tick 3" in result.stdout
    assert sandbox.commands.kill(999999) is False


def test_files_text_bytes_large_list_rename_remove(sandbox):
    sandbox.files.write("/tmp/a.txt", "text ✓")
    assert sandbox.files.read("/tmp/a.txt") == "text ✓"
    raw = bytes(range(256)) * 4
    sandbox.files.write("/tmp/b.bin", raw)
    assert bytes(sandbox.files.read("/tmp/b.bin", format="bytes")) == raw
    # Several MiB each way through the proxy.
    big = os.urandom(6 * 1024 * 1024)
    sandbox.files.write("/tmp/big.bin", big)
    assert bytes(sandbox.files.read("/tmp/big.bin", format="bytes")) == big
    names = {e.name: e for e in sandbox.files.list("/tmp")}
    assert {"a.txt", "b.bin", "big.bin"} <= set(names)
    assert names["big.bin"].type == FileType.FILE and names["big.bin"].size == len(big)
    sandbox.files.rename("/tmp/a.txt", "/tmp/c.txt")
    assert not sandbox.files.exists("/tmp/a.txt") and sandbox.files.exists("/tmp/c.txt")
    sandbox.files.remove("/tmp/c.txt")
    assert not sandbox.files.exists("/tmp/c.txt")


def test_watch_dir(sandbox):
    sandbox.files.make_dir("/tmp/w")
    handle = sandbox.files.watch_dir("/tmp/w")
    try:
        sandbox.files.write("/tmp/w/new.txt", "x")
        deadline = time.time() + 10
        events = []
        while time.time() < deadline and not any(e.name == "new.txt" for e in events):
            events += handle.get_new_events()
            time.sleep(0.2)
        assert any(e.name == "new.txt" for e in events), events
    finally:
        handle.stop()


def test_pty(sandbox):
    from e2b import PtySize

    term = sandbox.pty.create(PtySize(rows=24, cols=80), timeout=0)
    out = bytearray()
    done = threading.Event()

    def on_pty(data):
        out.extend(data)
        # The answer, not the echo of the typed line, holds "pty-42".
        if b"pty-42" in out:
            done.set()

    reader = threading.Thread(target=lambda: _ignore(lambda: term.wait(on_pty=on_pty)), daemon=True)
    reader.start()
    sandbox.pty.send_stdin(term.pid, b"echo pty-$((40+2))\n")
    assert done.wait(15), bytes(out)
    assert sandbox.pty.kill(term.pid) is True


def _ignore(f):
    try:
        f()
    except Exception:
        pass


def test_get_host_reaches_a_server_in_the_sandbox(server, sandbox):
    import urllib.request

    sandbox.files.write("/tmp/reply", "HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nserved\n")
    sandbox.commands.run(
        "socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'cat /tmp/reply'", background=True, timeout=0
    )
    host = sandbox.get_host(8080)
    assert host == f"8080-{sandbox.sandbox_id}.wrenn.localhost:{server.url.rsplit(':', 1)[1]}"
    # `*.localhost` does not resolve everywhere: send the name in Host to the server's address.
    deadline = time.time() + 20
    body = None
    while time.time() < deadline and body is None:
        req = urllib.request.Request(server.url + "/index.html", headers={"Host": host, "X-API-Key": server.api_key})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                body = r.read()
        except Exception:
            time.sleep(0.5)
    assert body == b"served\n"
