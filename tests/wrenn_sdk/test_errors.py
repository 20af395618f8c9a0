"""Error answers as the SDK sees them: its exception class is picked from the body's
`error.code`, so these check the class, the code and the HTTP status together."""

import httpx_ws
import pytest

from wrenn import (
    Capsule,
    WrennAuthenticationError,
    WrennConflictError,
    WrennError,
    WrennNotFoundError,
    WrennClient,
    WrennValidationError,
)
from wrenn.commands import Commands
from wrenn.models import Status

import sdkutil

BAD_KEY = "wrn_" + "0" * 32


def _assert_error(exc: WrennError, cls, status: int, codes):
    assert isinstance(exc, cls), f"{type(exc).__name__} (code {exc.code!r}), expected {cls.__name__}"
    assert exc.status_code == status
    assert exc.code in codes, exc.code
    assert exc.message and isinstance(exc.message, str)


@pytest.mark.parametrize("key", [BAD_KEY, "not-a-wrenn-key"])
def test_bad_api_key_is_401(server, key):
    with WrennClient(api_key=key, base_url=server.url) as bad:
        with pytest.raises(WrennAuthenticationError) as ei:
            bad.capsules.list()
        _assert_error(ei.value, WrennAuthenticationError, 401, {"unauthorized"})
        with pytest.raises(WrennAuthenticationError):
            bad.snapshots.list()
        with pytest.raises(WrennAuthenticationError):
            bad.capsules.get(sdkutil.unknown_capsule_id())


def test_bad_api_key_creates_nothing(server, client):
    before = {c.id for c in client.capsules.list()}
    with WrennClient(api_key=BAD_KEY, base_url=server.url) as bad:
        with pytest.raises(WrennAuthenticationError) as ei:
            bad.capsules.create(template="minimal")
        assert ei.value.status_code == 401
    assert {c.id for c in client.capsules.list()} == before


def test_bad_api_key_on_websocket_and_mutations(server, mod_capsule):
    cid = mod_capsule.capsule_id
    with WrennClient(api_key=BAD_KEY, base_url=server.url) as bad:
        # The WebSocket handshake must be refused before the upgrade.
        with pytest.raises(httpx_ws.WebSocketUpgradeError) as ei:
            for _ in Commands(cid, bad.http).stream("echo should-not-run"):
                pass
        assert ei.value.response.status_code == 401
        with pytest.raises(WrennAuthenticationError):
            Commands(cid, bad.http).run("echo should-not-run")
        with pytest.raises(WrennAuthenticationError):
            bad.capsules.pause(cid)
        with pytest.raises(WrennAuthenticationError):
            bad.capsules.destroy(cid)
    assert mod_capsule.get_info().status == Status.running


def test_unknown_capsule_is_404(client):
    cid = sdkutil.unknown_capsule_id()
    calls = {
        "get": lambda: client.capsules.get(cid),
        "pause": lambda: client.capsules.pause(cid),
        "resume": lambda: client.capsules.resume(cid),
        "ping": lambda: client.capsules.ping(cid),
        "destroy": lambda: client.capsules.destroy(cid),
        "metrics": lambda: client.capsules.metrics(cid),
        "exec": lambda: Commands(cid, client.http).run("true"),
        "processes": lambda: Commands(cid, client.http).list(),
        "static get_info": lambda: Capsule.get_info(cid),
        "connect": lambda: Capsule.connect(cid),
    }
    for what, call in calls.items():
        with pytest.raises(WrennNotFoundError) as ei:
            call()
        try:
            _assert_error(ei.value, WrennNotFoundError, 404, {"not_found"})
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None


def test_snapshot_of_unknown_capsule_is_404(client):
    with pytest.raises(WrennNotFoundError) as ei:
        client.snapshots.create(sdkutil.unknown_capsule_id(), name=sdkutil.unique("nope"))
    assert ei.value.status_code == 404


@pytest.mark.deadline(180)
def test_exec_on_paused_capsule_is_409(capsule):
    capsule.pause(wait=True)
    with pytest.raises(WrennConflictError) as ei:
        capsule.commands.run("echo should-not-run")
    _assert_error(ei.value, WrennConflictError, 409, {"invalid_state", "conflict"})
    with pytest.raises(WrennConflictError) as ei:
        capsule.files.read("/etc/hostname")
    assert ei.value.status_code == 409
    # Still paused, and resumable.
    assert capsule.get_info().status == Status.paused
    assert capsule.resume(wait=True).status == Status.running
    assert capsule.commands.run("echo ok").stdout == "ok\n"


def test_create_unknown_template(client):
    name = sdkutil.unique("no-such-template")
    try:
        made = client.capsules.create(template=name)
    except WrennError as e:
        assert e.status_code in (400, 404), e
        expected = WrennNotFoundError if e.status_code == 404 else WrennValidationError
        assert isinstance(e, expected), type(e).__name__
    else:
        client.capsules.destroy(made.id)
        pytest.fail(f"a capsule was created from the unknown template {name}")
