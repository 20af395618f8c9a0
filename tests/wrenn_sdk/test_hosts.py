"""Every host of a control plane with several hosts runs capsules the SDK drives.

Runs only with ``WRENN_SDK_HOSTS`` above 1 (``make sdk-hosts``). The rest of the suite leaves
placement to the scheduler; here each host gets a capsule of its own, placed with the
platform admin's ``host_id`` on create (the SDK has no such field, so that one call is plain
HTTP), and the SDK then drives it by id: exec, files, pause and resume, destroy. So the
registered agents are proven whatever the scheduler prefers.
"""

import pytest

from wrenn import Capsule, WrennNotFoundError
from wrenn.models import Status

import cluster
import sdkutil


def _hosts_wanted() -> int:
    try:
        return cluster.wanted_hosts()
    except ValueError:
        return 1  # the server fixture ends the session with the reason


pytestmark = pytest.mark.skipif(
    _hosts_wanted() == 1, reason=f"one host ({cluster.HOSTS_ENV} is not above 1)"
)


@pytest.mark.deadline(240)
@pytest.mark.parametrize("index", range(_hosts_wanted()))
def test_host_runs_a_capsule_the_sdk_drives(server, client, index):
    api = cluster.Api(server.url, server.api_key)
    hosts = sorted(api.hosts(), key=lambda h: (h["created_at"], h["id"]))
    assert [h["status"] for h in hosts] == ["online"] * _hosts_wanted(), hosts
    host_id = hosts[index]["id"]

    made = api.call("POST", "/v1/capsules", {"template": "minimal", "host_id": host_id})
    cid = made["id"]
    try:
        held = api.call("GET", f"/v1/hosts/{host_id}/delete-preview")["capsule_ids"]
        assert cid in held, f"{cid} is not on {host_id}: {held}"
        server.placements.note(host_id, cid)  # lives too short for the sampler to be sure
        cap = Capsule.connect(cid)  # waits for `running`
        try:
            r = cap.commands.run("echo $((6 * 7))")
            assert (r.exit_code, r.stdout) == (0, "42\n")
            cap.files.write("/tmp/host.txt", host_id)
            assert cap.files.read("/tmp/host.txt") == host_id
        finally:
            sdkutil.close_capsule_client(cap)
        assert Capsule.pause(cid, wait=True).status == Status.paused
        assert Capsule.resume(cid, wait=True).status == Status.running
        again = Capsule.connect(cid)
        try:
            assert again.files.read("/tmp/host.txt") == host_id
        finally:
            sdkutil.close_capsule_client(again)
        held = api.call("GET", f"/v1/hosts/{host_id}/delete-preview")["capsule_ids"]
        assert cid in held, f"{cid} left {host_id} on pause/resume: {held}"
    finally:
        Capsule.destroy(cid, wait=True)
    with pytest.raises(WrennNotFoundError):
        client.capsules.get(cid)
