"""The e2b SDK in its normal mode with host routing over HTTPS, as against E2B itself: only
``E2B_API_KEY`` and ``E2B_DOMAIN`` (with the HTTPS port), no ``E2B_API_URL`` and no
``E2B_SANDBOX_URL``. The SDK then calls ``https://api.{domain}`` and reaches envd at
``https://49983-{id}.{domain}``, trusting Wrenn's own CA through ``SSL_CERT_FILE`` (conftest).
Names are pinned to 127.0.0.1 by the conftest's ``pinned_dns``/``dns_pinning_proxy``."""

import json
import ssl
import time
import urllib.error
import urllib.request

import pytest

from conftest import DOMAIN


@pytest.fixture
def https_env(server, monkeypatch):
    """The SDK's settings for HTTPS host routing (the session's header routing removed)."""
    monkeypatch.delenv("E2B_API_URL", raising=False)
    monkeypatch.delenv("E2B_SANDBOX_URL", raising=False)
    monkeypatch.setenv("E2B_DOMAIN", f"{DOMAIN}:{server.tls_port}")
    return f"{DOMAIN}:{server.tls_port}"


def _get(url, headers, timeout=10):
    """(status, body) of a GET with Python's own TLS (it trusts SSL_CERT_FILE too)."""
    req = urllib.request.Request(url, headers=headers)
    ctx = ssl.create_default_context()
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_sdk_over_https_host_routing(server, team_b_key, https_env, dns_pinning_proxy):
    from e2b import Sandbox
    from e2b.exceptions import NotFoundException

    proxy = dns_pinning_proxy
    sbx = Sandbox.create(template="minimal", timeout=120, envs={"A": "from-create"}, proxy=proxy.url)
    killed = False
    try:
        sid = sbx.sandbox_id
        # The SDK went to api.{domain} and envd's own name, both on the HTTPS port.
        assert sbx.sandbox_domain == https_env
        assert f"api.{https_env}" in proxy.seen, proxy.seen

        r = sbx.commands.run("echo out; echo $A")
        assert r.exit_code == 0 and r.stdout == "out\nfrom-create\n", r
        assert f"49983-{sid}.{https_env}" in proxy.seen, proxy.seen

        data = "héllo over https\n" * 1000
        sbx.files.write("/tmp/tls.txt", data)
        assert sbx.files.read("/tmp/tls.txt") == data

        # get_host: a service in the sandbox, by its wildcard name over HTTPS.
        sbx.files.write("/tmp/reply", "HTTP/1.0 200 OK\r\nContent-Length: 7\r\n\r\nserved\n")
        sbx.commands.run(
            "socat TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'cat /tmp/reply'",
            background=True,
            timeout=0,
        )
        host = sbx.get_host(8080)
        assert host == f"8080-{sid}.{https_env}"
        deadline = time.time() + 20
        status, body = None, None
        while time.time() < deadline:
            try:
                status, body = _get(f"https://{host}/", {"X-API-Key": server.api_key})
            except OSError:
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert (status, body) == (200, b"served\n")

        # Team B: the same answers as for a sandbox that does not exist.
        status, _ = _get(f"https://{host}/", {"X-API-Key": team_b_key})
        assert status == 404
        status, body = _get(f"https://49983-{sid}.{https_env}/health", {"X-API-Key": team_b_key})
        assert status == 502 and "was not found" in json.loads(body)["message"], body
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sid, api_key=team_b_key, proxy=proxy.url)
        assert Sandbox.kill(sid, api_key=team_b_key, proxy=proxy.url) is False

        assert sbx.kill() is True
        killed = True
        assert sbx.is_running() is False
        with pytest.raises(NotFoundException):
            Sandbox.get_info(sid, proxy=proxy.url)
    finally:
        if not killed:
            sbx.kill()
