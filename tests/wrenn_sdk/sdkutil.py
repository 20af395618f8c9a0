"""Small helpers shared by the wrenn SDK tests (imported by the test modules)."""

import re
import secrets
import threading
import time

import pytest


def close_capsule_client(cap) -> None:
    """Closes the HTTP pool a `Capsule` object owns.

    Only resource hygiene: the SDK's one public way to close it is ``Capsule.__exit__``,
    which would send a second DELETE for a capsule the fixture already destroyed.
    """
    try:
        cap._client.close()
    except Exception:
        pass


def unknown_capsule_id() -> str:
    """A well-formed capsule id (``cl-`` + 25 base-36 digits of 128 random bits) no one has."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    v = secrets.randbits(128)
    out = []
    for _ in range(25):
        v, r = divmod(v, 36)
        out.append(digits[r])
    return "cl-" + "".join(reversed(out))


def unique(prefix: str) -> str:
    """A name no other test run uses (lowercase letters, digits and dashes)."""
    return f"{prefix}-{secrets.token_hex(4)}"


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.1, what: str = ""):
    """Polls ``predicate`` until it returns something truthy; fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def guest_pids_running(capsule, needle: str) -> int:
    """How many processes in the capsule have ``needle`` in their command line.

    Reads /proc inside the guest, so it needs nothing but /bin/sh. The scanning shell
    itself is left out (its own command line holds the needle too).
    """
    script = (
        'n=0; for d in /proc/[0-9]*; do [ "${d#/proc/}" = "$$" ] && continue; '
        'c=$(tr "\\0" " " < "$d/cmdline" 2>/dev/null) || continue; '
        'case "$c" in *"$NEEDLE"*) n=$((n+1));; esac; done; echo $n'
    )
    r = capsule.commands.run(script, envs={"NEEDLE": needle}, timeout=30)
    assert r.exit_code == 0, r
    return int(r.stdout.strip())


_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\r")


def _plain(text: str) -> str:
    """Terminal output without CSI/OSC escape sequences and carriage returns."""
    return _ESCAPES.sub("", text)


class PtyReader:
    """Iterates a `PtySession` on a thread and collects what it yields.

    ``PtySession.__next__`` blocks without a timeout, so the test thread waits on this
    reader instead, with a deadline.
    """

    def __init__(self, session):
        self.session = session
        self.events = []
        self._buf = bytearray()
        self._cond = threading.Condition()
        self.error = None
        self.ended = False
        self._thread = threading.Thread(target=self._run, name="pty-reader", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            for ev in self.session:
                with self._cond:
                    self.events.append(ev)
                    if ev.type == "output" and isinstance(ev.data, bytes):
                        self._buf += ev.data
                    self._cond.notify_all()
        except Exception as e:  # reported by the waiting test
            self.error = e
        with self._cond:
            self.ended = True
            self._cond.notify_all()

    @property
    def text(self) -> str:
        with self._cond:
            return self._buf.decode("utf-8", errors="replace")

    def _wait(self, check, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = check()
                if value:
                    return value
                if self.ended:
                    pytest.fail(
                        f"PTY stream ended (error={self.error!r}) before {what}; "
                        f"events: {self._summary()}; output: {self._text_locked()!r}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"timed out after {timeout}s waiting for {what}; "
                        f"events: {self._summary()}; output: {self._text_locked()!r}"
                    )
                self._cond.wait(left)

    def _text_locked(self) -> str:
        return self._buf.decode("utf-8", errors="replace")

    def _summary(self) -> str:
        kinds = [e.type.value if hasattr(e.type, "value") else str(e.type) for e in self.events]
        return ",".join(kinds[-30:])

    def wait_for(self, pattern: str, timeout: float = 15.0) -> "re.Match":
        """Waits until the output, without terminal escapes and CRs, matches ``pattern``."""
        rx = re.compile(pattern)
        return self._wait(
            lambda: rx.search(_plain(self._text_locked())), timeout, f"output {pattern!r}"
        )

    def wait_event(self, kind: str, timeout: float = 15.0):
        def check():
            for ev in self.events:
                if ev.type == kind:
                    return ev
            return None

        return self._wait(check, timeout, f"a {kind!r} event")

    def wait_end(self, timeout: float = 15.0):
        """Waits until the session's iterator stops (exit, fatal error or close)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self.ended:
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(
                        f"PTY stream did not end within {timeout}s; events: {self._summary()}"
                    )
                self._cond.wait(left)
        self._thread.join(5)


def collect_stream(events, timeout: float = 30.0):
    """Drains a commands.stream/connect iterator: ``[(monotonic time, event), ...]``.

    The iterator stops by itself on exit/error/close; ``timeout`` guards a server that
    never ends the stream (it is checked between events; the per-test deadline covers
    a stream that goes silent).
    """
    out = []
    start = time.monotonic()
    for ev in events:
        out.append((time.monotonic(), ev))
        if time.monotonic() - start > timeout:
            pytest.fail(f"stream still going after {timeout}s: {[e.type for _, e in out][-20:]}")
    return out
