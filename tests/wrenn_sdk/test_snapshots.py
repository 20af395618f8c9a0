"""Snapshot templates: capsule.create_snapshot, snapshots.list/delete, and capsules
created from a snapshot."""

import secrets

import pytest

from wrenn import Capsule, WrennError, WrennNotFoundError
from wrenn.models import Status

import sdkutil

# Snapshotting copies a VM's memory and disk; under TCG that takes a while.
pytestmark = pytest.mark.deadline(300)

MARKER = "/var/tmp/snapshot-marker.txt"  # writable whichever user runs commands


def _ensure_running(cap: Capsule):
    """The source of a snapshot may be left paused (upstream does); it must resume."""
    status = cap.get_info().status
    assert status in (Status.running, Status.paused), status
    if status == Status.paused:
        assert cap.resume(wait=True).status == Status.running


def _names(client, type=None):
    return {t.name: t for t in client.snapshots.list(type=type)}


@pytest.fixture(scope="module")
def snap(server, client):
    """A capsule with a marker file and a snapshot of it: ``(capsule, name, marker)``."""
    cap = Capsule(template="minimal", wait=True)
    name = sdkutil.unique("sdk-snap")
    marker = secrets.token_hex(16)
    try:
        cap.files.write(MARKER, marker)
        tpl = cap.create_snapshot(name)
        assert tpl.name == name
        assert tpl.type == "snapshot"
        _ensure_running(cap)
        yield cap, name, marker
    finally:
        try:
            cap.destroy(wait=True)
        except WrennNotFoundError:
            pass
        sdkutil.close_capsule_client(cap)
        try:
            client.snapshots.delete(name)
        except WrennNotFoundError:
            pass


def test_snapshot_listed_and_boots_with_marker(snap, client, new_capsule):
    src, name, marker = snap
    listed = _names(client)
    assert name in listed
    assert listed[name].type == "snapshot"
    assert name in _names(client, type="snapshot")
    base = _names(client, type="base")
    assert name not in base
    assert "minimal" in base and base["minimal"].type == "base"

    child = new_capsule(template=name)
    info = child.get_info()
    assert info.template == name
    assert info.status == Status.running
    assert child.files.read(MARKER) == marker
    assert child.commands.run(f"cat {MARKER}").stdout == marker
    # The source is still a working capsule with its own file.
    assert src.files.read(MARKER) == marker
    assert src.commands.run("echo src-ok").stdout == "src-ok\n"


def test_snapshot_name_conflict_then_overwrite(snap, new_capsule):
    src, name, _ = snap
    with pytest.raises(WrennError) as ei:
        src.create_snapshot(name)
    assert ei.value.status_code == 409, (type(ei.value).__name__, ei.value.code, ei.value)
    _ensure_running(src)

    # Replace it (no capsule is using it now) with a new marker.
    marker2 = secrets.token_hex(16)
    src.files.write(MARKER, marker2)
    tpl = src.create_snapshot(name, overwrite=True)
    assert tpl.name == name and tpl.type == "snapshot"
    _ensure_running(src)
    child = new_capsule(template=name)
    assert child.files.read(MARKER) == marker2


def test_snapshot_delete(snap, client):
    _, name, _ = snap
    assert client.snapshots.delete(name) is None
    assert name not in _names(client)
    try:
        made = client.capsules.create(template=name)
    except WrennError as e:
        assert e.status_code in (400, 404), e
    else:
        client.capsules.destroy(made.id)
        pytest.fail(f"a capsule was created from the deleted snapshot {name}")
    with pytest.raises(WrennNotFoundError) as ei:
        client.snapshots.delete(name)
    assert ei.value.status_code == 404


def test_delete_unknown_snapshot(client):
    with pytest.raises(WrennNotFoundError) as ei:
        client.snapshots.delete(sdkutil.unique("never-made"))
    assert ei.value.status_code == 404
    assert ei.value.code == "not_found"


def test_snapshot_without_name_gets_one(capsule, client):
    tpl = client.snapshots.create(capsule.capsule_id)
    try:
        assert tpl.name, "the server should name an unnamed snapshot"
        assert tpl.type == "snapshot"
        assert tpl.name in _names(client, type="snapshot")
        _ensure_running(capsule)
    finally:
        client.snapshots.delete(tpl.name)
    assert tpl.name not in _names(client)
