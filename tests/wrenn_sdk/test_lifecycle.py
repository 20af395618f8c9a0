"""Capsule lifecycle through the SDK: create, get/list, ping, pause/resume, connect, destroy."""

import datetime as dt
import re

import pytest

from wrenn import Capsule, WrennClient, WrennNotFoundError
from wrenn.models import Status

import sdkutil

ID_RE = re.compile(r"^cl-[0-9a-z]{25}$")


def _assert_aware(ts, what):
    assert ts is not None, f"{what} is missing"
    assert ts.tzinfo is not None, f"{what} has no zone offset"
    now = dt.datetime.now(dt.timezone.utc)
    assert abs((now - ts).total_seconds()) < 600, f"{what}={ts} is far from now ({now})"


@pytest.mark.deadline(180)
def test_create_with_empty_body_uses_minimal(server, client):
    # capsules.create() with no arguments sends `{}`; the server picks the template.
    info = client.capsules.create()
    try:
        assert info.id and ID_RE.match(info.id), info.id
        assert info.template == "minimal"
        assert info.status in (Status.pending, Status.starting, Status.running), info.status
        cap = Capsule.connect(info.id)  # waits for `running`
        try:
            got = cap.get_info()
            assert got.id == info.id
            assert got.status == Status.running
            assert got.template == "minimal"
            _assert_aware(got.created_at, "created_at")
            r = cap.commands.run("echo up")
            assert (r.exit_code, r.stdout) == (0, "up\n")
        finally:
            sdkutil.close_capsule_client(cap)
    finally:
        client.capsules.destroy(info.id)


@pytest.mark.deadline(450)
def test_create_with_vcpus_and_memory(server):
    # The first capsule of a new shape may take a fresh boot on the server (TCG: slow), so
    # this create gets a longer client timeout than the SDK's 30 s default, and waits
    # for `running` up to 4 minutes.
    with WrennClient(timeout=180) as slow:
        made = slow.capsules.create(template="minimal", vcpus=2, memory_mb=1024)
        try:
            assert (made.vcpus, made.memory_mb) == (2, 1024)
            sdkutil.wait_until(
                lambda: slow.capsules.get(made.id).status == Status.running,
                timeout=240,
                interval=0.5,
                what=f"{made.id} to be running",
            )
            cap = Capsule.connect(made.id)
            try:
                _check_shape(cap)
            finally:
                sdkutil.close_capsule_client(cap)
        finally:
            Capsule.destroy(made.id, wait=True)


def _check_shape(cap):
    info = cap.get_info()
    assert (info.vcpus, info.memory_mb) == (2, 1024)
    r = cap.commands.run("nproc; sed -n 's/^MemTotal: *\\([0-9]*\\) kB$/\\1/p' /proc/meminfo")
    assert r.exit_code == 0, r
    nproc, mem_kib = (int(x) for x in r.stdout.split())
    assert nproc == 2
    # The guest sees close to what was asked for (the kernel keeps some for itself).
    assert 700 * 1024 < mem_kib <= 1024 * 1024, mem_kib


def test_get_info_list_and_is_running(mod_capsule, client):
    info = mod_capsule.get_info()
    assert info.id == mod_capsule.capsule_id
    assert info.status == Status.running
    assert info.template == "minimal"
    assert info.vcpus and info.vcpus >= 1
    assert info.memory_mb and info.memory_mb >= 128
    _assert_aware(info.created_at, "created_at")
    assert mod_capsule.is_running() is True

    static = Capsule.get_info(mod_capsule.capsule_id)
    assert static.id == info.id and static.status == Status.running

    listed = {c.id: c for c in Capsule.list()}
    assert mod_capsule.capsule_id in listed
    assert listed[mod_capsule.capsule_id].status == Status.running
    assert mod_capsule.capsule_id in {c.id for c in client.capsules.list()}


def test_ping(mod_capsule):
    before = mod_capsule.get_info()
    assert mod_capsule.ping() is None
    after = mod_capsule.get_info()
    assert after.status == Status.running
    if before.last_active_at is not None and after.last_active_at is not None:
        assert after.last_active_at >= before.last_active_at


@pytest.mark.deadline(180)
def test_pause_resume_keeps_files_and_processes(capsule):
    capsule.files.write("/var/tmp/before-pause.txt", "still here\n")
    bg = capsule.commands.run("sleep 600", background=True, tag="survives-pause")

    paused = capsule.pause(wait=True)
    assert paused.status == Status.paused
    assert capsule.get_info().status == Status.paused
    assert capsule.is_running() is False
    assert Capsule.get_info(capsule.capsule_id).status == Status.paused

    resumed = capsule.resume(wait=True)
    assert resumed.status == Status.running
    assert capsule.get_info().status == Status.running
    assert capsule.files.read("/var/tmp/before-pause.txt") == "still here\n"
    assert bg.pid in {p.pid for p in capsule.commands.list()}
    r = capsule.commands.run("echo after-resume")
    assert (r.exit_code, r.stdout) == (0, "after-resume\n")
    capsule.commands.kill(bg.pid)


@pytest.mark.deadline(180)
def test_connect_resumes_a_paused_capsule(capsule):
    capsule.pause(wait=True)
    again = Capsule.connect(capsule.capsule_id)
    try:
        assert again.capsule_id == capsule.capsule_id
        assert again.get_info().status == Status.running
        assert again.commands.run("echo hi").stdout == "hi\n"
    finally:
        sdkutil.close_capsule_client(again)


@pytest.mark.deadline(180)
def test_static_pause_resume_destroy(server, client):
    info = client.capsules.create(template="minimal")
    cid = info.id
    try:
        sdkutil.close_capsule_client(Capsule.connect(cid))  # until running
        assert Capsule.pause(cid, wait=True).status == Status.paused
        assert Capsule.resume(cid, wait=True).status == Status.running
    finally:
        Capsule.destroy(cid, wait=True)
    with pytest.raises(WrennNotFoundError) as ei:
        client.capsules.get(cid)
    assert ei.value.status_code == 404


@pytest.mark.deadline(120)
def test_destroy_wait_then_404(server, client):
    cap = Capsule(template="minimal", wait=True)
    cid = cap.capsule_id
    try:
        cap.destroy(wait=True)
        with pytest.raises(WrennNotFoundError) as ei:
            cap.get_info()
        assert ei.value.status_code == 404
        assert ei.value.code == "not_found"
        assert cid not in {c.id for c in client.capsules.list()}
        # A second destroy finds nothing.
        with pytest.raises(WrennNotFoundError) as ei:
            client.capsules.destroy(cid)
        assert ei.value.status_code == 404
        with pytest.raises(WrennNotFoundError):
            cap.commands.run("true")
    finally:
        sdkutil.close_capsule_client(cap)


@pytest.mark.deadline(120)
def test_context_manager_destroys(server, client):
    with Capsule(template="minimal", wait=True) as cap:
        cid = cap.capsule_id
        assert cap.commands.run("echo in-with").stdout == "in-with\n"

    def gone():
        try:
            info = client.capsules.get(cid)
        except WrennNotFoundError:
            return True
        return info.status in (Status.stopped, Status.missing)

    sdkutil.wait_until(gone, timeout=30, what=f"capsule {cid} to be destroyed")


@pytest.mark.deadline(120)
def test_async_capsule(server):
    import asyncio

    from wrenn import AsyncCapsule

    async def main():
        cap = await AsyncCapsule.create(template="minimal", wait=True)
        try:
            info = await cap.get_info()
            assert info.status == Status.running
            r = await cap.commands.run("echo async-$((2+3))")
            assert (r.exit_code, r.stdout) == (0, "async-5\n")
            await cap.files.write("/tmp/async.txt", b"a\x00b")
            assert await cap.files.read_bytes("/tmp/async.txt") == b"a\x00b"
        finally:
            await cap.destroy(wait=True)
            await cap._client.aclose()
        with pytest.raises(WrennNotFoundError):
            await AsyncCapsule.get_info(cap.capsule_id)

    asyncio.run(main())


def test_client_reads_env(server):
    # No arguments: WRENN_BASE_URL and WRENN_API_KEY (set by the session) are used.
    with WrennClient() as c:
        assert isinstance(c.capsules.list(), list)
