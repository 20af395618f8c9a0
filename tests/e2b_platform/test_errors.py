"""The SDK's exceptions for what goes wrong, and the tenant matrix."""

import os

import pytest
from e2b import (
    AuthenticationException,
    NotFoundException,
    Sandbox,
    SandboxException,
    SandboxNotFoundException,
    SandboxQuery,
)

MISSING = "cl-0123456789abcdefghijklmno"


def test_a_bad_key_is_an_authentication_error(server):
    bad = "wrn_" + "0" * 32
    with pytest.raises(AuthenticationException):
        Sandbox.create(template="minimal", api_key=bad)
    with pytest.raises(AuthenticationException):
        Sandbox.get_info(MISSING, api_key=bad)
    with pytest.raises(AuthenticationException):
        Sandbox.list(api_key=bad).next_items()


def test_an_unknown_sandbox(server):
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(MISSING)
    with pytest.raises(NotFoundException):
        Sandbox.connect(MISSING)
    assert Sandbox.kill(MISSING) is False
    with pytest.raises(SandboxNotFoundException):
        Sandbox.set_timeout(MISSING, 30)


def test_an_unknown_template(server):
    with pytest.raises(SandboxException) as e:
        Sandbox.create(template="no-such-template")
    assert "404" in str(e.value)


def test_a_paused_sandbox_is_not_running(server):
    sbx = Sandbox.create(template="minimal")
    try:
        sbx.pause()
        assert sbx.is_running() is False
        with pytest.raises(SandboxException) as e:
            sbx.commands.run("true")
        assert "was not found" in str(e.value) or "not running" in str(e.value).lower()
    finally:
        sbx.kill()


def test_team_b_sees_nothing_of_team_a(server, team_b_key):
    sbx = Sandbox.create(template="minimal", metadata={"owner": "a"})
    try:
        assert all(
            s.sandbox_id != sbx.sandbox_id for s in Sandbox.list(api_key=team_b_key).next_items()
        )
        assert Sandbox.list(api_key=team_b_key, query=SandboxQuery(metadata={"owner": "a"})).next_items() == []
        with pytest.raises(SandboxNotFoundException):
            Sandbox.get_info(sbx.sandbox_id, api_key=team_b_key)
        with pytest.raises(NotFoundException):
            Sandbox.connect(sbx.sandbox_id, api_key=team_b_key)
        assert Sandbox.kill(sbx.sandbox_id, api_key=team_b_key) is False
        with pytest.raises(SandboxNotFoundException):
            Sandbox.set_timeout(sbx.sandbox_id, 5, api_key=team_b_key)
        with pytest.raises(SandboxException):
            Sandbox.get_metrics(sbx.sandbox_id, api_key=team_b_key)
        # The proxy: team B's key with the E2B headers is "not found", like a missing sandbox.
        status, body, _ = server.call(
            "GET",
            "/health",
            key=team_b_key,
            headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"},
        )
        assert status == 502 and "was not found" in body["message"]
        status, missing, _ = server.call(
            "GET", "/health", key=team_b_key, headers={"E2b-Sandbox-Id": MISSING, "E2b-Sandbox-Port": "49983"}
        )
        assert (status, missing["message"]) == (502, body["message"])
        # Still team A's, untouched.
        assert sbx.is_running()
    finally:
        sbx.kill()


def test_the_api_key_never_reaches_the_sandbox(sandbox, server):
    env = sandbox.commands.run("env").stdout
    assert server.api_key not in env
    assert os.environ["E2B_API_KEY"] not in env
