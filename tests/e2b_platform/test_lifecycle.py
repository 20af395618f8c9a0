"""The sandbox lifecycle through Wrenn's E2B API, driven by the unchanged `e2b` SDK."""

import time
import uuid

import pytest
from e2b import Sandbox, SandboxNotFoundException, SandboxQuery, SandboxState


def test_create_maps_template_metadata_envs_and_timeout(server):
    tag = uuid.uuid4().hex
    sbx = Sandbox.create(
        template="minimal", timeout=120, metadata={"suite": tag, "k": "v w"}, envs={"GREETING": "hi there"}
    )
    try:
        assert sbx.sandbox_id.startswith("cl-")
        # envVars are every process's environment; per-command envs override them.
        assert sbx.commands.run("echo $GREETING").stdout == "hi there\n"
        assert sbx.commands.run("echo $GREETING", envs={"GREETING": "over"}).stdout == "over\n"
        info = sbx.get_info()
        assert info.sandbox_id == sbx.sandbox_id
        assert info.template_id == "minimal"
        assert info.metadata == {"suite": tag, "k": "v w"}
        assert info.state == SandboxState.RUNNING
        left = (info.end_at - info.started_at).total_seconds()
        assert 110 <= left <= 125, left
        assert sbx.is_running()
        # A Wrenn capsule of the key's team, visible to Wrenn's own API.
        status, capsule, _ = server.call("GET", f"/v1/capsules/{sbx.sandbox_id}")
        assert status == 200 and capsule["metadata"]["suite"] == tag
    finally:
        assert sbx.kill() is True
    # Gone: get is 404 (the SDK's exception), kill again is False, not listed.
    assert Sandbox.kill(sbx.sandbox_id) is False
    listed = Sandbox.list(query=SandboxQuery(metadata={"suite": tag})).next_items()
    assert listed == []


def test_list_filters_and_pages(server):
    tag = uuid.uuid4().hex
    made = []
    try:
        for i in range(3):
            made.append(Sandbox.create(template="minimal", metadata={"suite": tag, "i": str(i), "odd": "a/b=c&d e"}))
        ids = {s.sandbox_id for s in made}
        # Metadata filter, values with the characters the double encoding must carry.
        pages = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "odd": "a/b=c&d e"}), limit=2)
        seen = []
        while pages.has_next:
            items = pages.next_items()
            assert len(items) <= 2
            seen += [s.sandbox_id for s in items]
        assert sorted(seen) == sorted(ids)
        assert len(seen) == 3
        one = Sandbox.list(query=SandboxQuery(metadata={"suite": tag, "i": "1"})).next_items()
        assert [s.sandbox_id for s in one] == [made[1].sandbox_id]
        assert one[0].metadata["i"] == "1" and one[0].state == SandboxState.RUNNING
        # State filter: pause one.
        assert made[0].pause() is True
        paused = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [s.sandbox_id for s in paused] == [made[0].sandbox_id]
        running = Sandbox.list(query=SandboxQuery(metadata={"suite": tag}, state=[SandboxState.RUNNING])).next_items()
        assert sorted(s.sandbox_id for s in running) == sorted(s.sandbox_id for s in made[1:])
    finally:
        for s in made:
            s.kill()


def test_pause_and_connect_resume_keep_files_and_processes(server):
    sbx = Sandbox.create(template="minimal", timeout=300)
    try:
        sbx.files.write("/tmp/kept.txt", "still here")
        bg = sbx.commands.run("sleep 600", background=True)
        assert sbx.pause() is True
        # Paused: the SDK's own checks see it so.
        assert sbx.is_running() is False
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        assert Sandbox.pause(sbx.sandbox_id) is False  # already paused: 409
        resumed = Sandbox.connect(sbx.sandbox_id, timeout=120)
        assert resumed.is_running()
        assert resumed.files.read("/tmp/kept.txt") == "still here"
        pids = [p.pid for p in resumed.commands.list()]
        assert bg.pid in pids
        info = resumed.get_info()
        assert info.state == SandboxState.RUNNING
        assert 100 <= (info.end_at.timestamp() - time.time()) <= 125
        # Connecting to a running sandbox only extends its deadline.
        again = Sandbox.connect(sbx.sandbox_id, timeout=10)
        assert (again.get_info().end_at.timestamp() - time.time()) > 90
    finally:
        sbx.kill()


def test_set_timeout_and_expiry(server):
    sbx = Sandbox.create(template="minimal", timeout=300)
    sbx.set_timeout(4)
    end = sbx.get_info().end_at.timestamp()
    assert end - time.time() <= 5
    deadline = time.time() + 30
    while time.time() < deadline and sbx.is_running():
        time.sleep(0.5)
    assert sbx.is_running() is False
    # The end is recorded right after the VM stops: get_info turns to "not found".
    gone = time.time() + 10
    while time.time() < gone:
        try:
            Sandbox.get_info(sbx.sandbox_id)
            time.sleep(0.2)
        except SandboxNotFoundException:
            break
    with pytest.raises(SandboxNotFoundException):
        Sandbox.get_info(sbx.sandbox_id)
    assert Sandbox.kill(sbx.sandbox_id) is False
    # Also gone from Wrenn's view.
    status, _, _ = server.call("GET", f"/v1/capsules/{sbx.sandbox_id}")
    assert status == 404


def test_auto_pause_at_the_deadline(server):
    sbx = Sandbox.create(template="minimal", timeout=3, lifecycle={"on_timeout": "pause"})
    try:
        deadline = time.time() + 40
        while time.time() < deadline and Sandbox.get_info(sbx.sandbox_id).state != SandboxState.PAUSED:
            time.sleep(0.5)
        assert Sandbox.get_info(sbx.sandbox_id).state == SandboxState.PAUSED
        assert Sandbox.connect(sbx.sandbox_id).commands.run("echo back").stdout == "back\n"
    finally:
        sbx.kill()


def test_metrics(sandbox):
    deadline = time.time() + 30
    metrics = []
    while time.time() < deadline and not metrics:
        metrics = sandbox.get_metrics()
        if not metrics:
            time.sleep(1)
    assert metrics, "no sample within 30 s"
    m = metrics[-1]
    assert m.cpu_count >= 1
    assert m.mem_total > 0 and 0 < m.mem_used <= m.mem_total
    assert m.disk_total > 0
