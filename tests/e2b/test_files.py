"""`sandbox.files` against envd: GET/POST /files and the filesystem.Filesystem
RPCs (Stat, ListDir, MakeDir, Move, Remove, watchers), as the e2b SDK drives
them."""

import asyncio
import datetime as dt
import hashlib
import io
import os
import grp
import random

import pytest

from e2b import (
    EntryInfo,
    FileNotFoundException,
    FileType,
    FilesystemEventType,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    WriteInfo,
)

MiB = 1024 * 1024


def _now():
    return dt.datetime.now(dt.timezone.utc)


# -- health ------------------------------------------------------------------------


def test_is_running(sandbox):
    assert sandbox.is_running() is True


# -- read / write ------------------------------------------------------------------


def test_write_read_text(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "hello.txt")
    content = "hello, wörld ✓\nsecond line\n"
    info = sandbox.files.write(path, content)
    assert isinstance(info, WriteInfo)
    assert info.name == "hello.txt"
    assert info.path == path
    assert info.type == FileType.FILE
    assert sandbox.files.read(path) == content
    with open(path, "rb") as f:
        assert f.read() == content.encode()


def test_write_read_bytes_all_values(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "all.bin")
    data = bytes(range(256)) * 16 + bytes(range(255, -1, -1))
    sandbox.files.write(path, data)
    got = sandbox.files.read(path, format="bytes")
    assert isinstance(got, (bytes, bytearray))
    assert bytes(got) == data
    with open(path, "rb") as f:
        assert f.read() == data


def test_write_empty_file(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "empty")
    sandbox.files.write(path, b"")
    assert sandbox.files.read(path, format="bytes") == bytearray()
    assert os.path.getsize(path) == 0


def test_write_overwrites_and_truncates(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "over.txt")
    sandbox.files.write(path, "a much longer first version\n")
    sandbox.files.write(path, "short\n")
    assert sandbox.files.read(path) == "short\n"


def test_write_creates_parent_dirs(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "a", "b", "c", "deep.txt")
    info = sandbox.files.write(path, "deep")
    assert info.path == path
    assert sandbox.files.read(path) == "deep"
    assert os.path.isdir(os.path.join(tmp_dir, "a", "b", "c"))


def test_write_file_like_octet_stream(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "from-io.bin")
    data = os.urandom(300_000)
    info = sandbox.files.write(path, io.BytesIO(data))
    assert info.path == path and info.name == "from-io.bin"
    assert bytes(sandbox.files.read(path, format="bytes")) == data


def test_write_octet_stream_bytes(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "octet.bin")
    data = bytes(range(256)) * 100
    sandbox.files.write(path, data, use_octet_stream=True)
    assert bytes(sandbox.files.read(path, format="bytes")) == data


def test_write_gzip_upload(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "gz.txt")
    content = "compressible " * 10_000
    sandbox.files.write(path, content, gzip=True)
    with open(path) as f:
        assert f.read() == content
    assert sandbox.files.read(path, gzip=True) == content


def test_write_multipart_8mib(sandbox, tmp_dir):
    # A multipart body well above a 2 MiB default body limit.
    path = os.path.join(tmp_dir, "eight.bin")
    data = random.Random(8).randbytes(8 * MiB)
    sandbox.files.write(path, data)
    got = sandbox.files.read(path, format="bytes")
    assert len(got) == len(data)
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def test_write_files_many(sandbox, tmp_dir):
    entries = [
        {"path": os.path.join(tmp_dir, "one.txt"), "data": "first"},
        {"path": os.path.join(tmp_dir, "sub", "two.bin"), "data": b"\x00\x01\x02\xff"},
        {"path": os.path.join(tmp_dir, "sub", "deeper", "three.txt"), "data": "third ✓"},
    ]
    infos = sandbox.files.write_files(entries)
    assert len(infos) == 3
    assert sorted(i.path for i in infos) == sorted(e["path"] for e in entries)
    by_path = {i.path: i for i in infos}
    for e in entries:
        i = by_path[e["path"]]
        assert i.name == os.path.basename(e["path"])
        assert i.type == FileType.FILE
    assert sandbox.files.read(entries[0]["path"]) == "first"
    assert bytes(sandbox.files.read(entries[1]["path"], format="bytes")) == b"\x00\x01\x02\xff"
    assert sandbox.files.read(entries[2]["path"]) == "third ✓"


def test_read_stream(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "stream.bin")
    data = random.Random(1).randbytes(3 * MiB + 17)
    with open(path, "wb") as f:
        f.write(data)
    h = hashlib.sha256()
    n = 0
    with sandbox.files.read(path, format="stream") as stream:
        for chunk in stream:
            h.update(chunk)
            n += len(chunk)
    assert n == len(data)
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()


def test_read_file_written_by_command(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "cmd.txt")
    sandbox.commands.run(f"printf 'from-cmd\\n' > {path}", timeout=30)
    assert sandbox.files.read(path) == "from-cmd\n"


def test_path_with_spaces_and_unicode(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "dir with space", "fïlé #1 &x=y%.txt")
    sandbox.files.write(path, "odd name")
    assert sandbox.files.read(path) == "odd name"
    assert os.path.exists(path)
    info = sandbox.files.get_info(path)
    assert info.name == "fïlé #1 &x=y%.txt"


def test_read_missing_raises_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.read(os.path.join(tmp_dir, "missing.txt"))
    with pytest.raises(NotFoundException):
        sandbox.files.read(os.path.join(tmp_dir, "missing.txt"), format="bytes")


def test_read_directory_is_invalid_argument(sandbox, tmp_dir):
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(tmp_dir)


@pytest.mark.slow
def test_100mib_round_trip(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "big.bin")
    size = 100 * MiB
    chunk = MiB
    rng = random.Random(100)
    up_hash = hashlib.sha256()

    def chunks():
        for _ in range(size // chunk):
            b = rng.randbytes(chunk)
            up_hash.update(b)
            yield b

    # An iterable is streamed as an application/octet-stream body.
    info = sandbox.files.write(path, chunks())
    assert info.path == path
    expected = up_hash.hexdigest()
    assert os.path.getsize(path) == size

    # sha256 inside the sandbox.
    r = sandbox.commands.run(f"sha256sum {path}", timeout=60)
    assert r.stdout.split()[0] == expected

    # Streamed download.
    down = hashlib.sha256()
    n = 0
    with sandbox.files.read(path, format="stream") as stream:
        for part in stream:
            down.update(part)
            n += len(part)
    assert n == size
    assert down.hexdigest() == expected

    assert sandbox.files.get_info(path).size == size

    # Buffered download.
    got = sandbox.files.read(path, format="bytes", request_timeout=120)
    assert len(got) == size
    assert hashlib.sha256(got).hexdigest() == expected


# -- ownership ---------------------------------------------------------------------


def test_write_as_user_owned_by_user(sandbox, tmp_dir, test_user):
    path = os.path.join(tmp_dir, "mine.txt")
    sandbox.files.write(path, "user data", user="user")
    st = os.stat(path)
    assert st.st_uid == test_user.pw_uid
    assert st.st_gid == test_user.pw_gid
    info = sandbox.files.get_info(path)
    assert info.owner == "user"
    assert info.group == grp.getgrgid(test_user.pw_gid).gr_name
    assert sandbox.files.read(path, user="user") == "user data"


def test_write_as_user_creates_parents_owned_by_user(sandbox, tmp_dir, test_user):
    path = os.path.join(tmp_dir, "udir", "nested", "f.txt")
    sandbox.files.write(path, "x", user="user")
    assert os.stat(os.path.join(tmp_dir, "udir")).st_uid == test_user.pw_uid
    assert os.stat(os.path.join(tmp_dir, "udir", "nested")).st_uid == test_user.pw_uid
    assert os.stat(path).st_uid == test_user.pw_uid


def test_write_default_user_owned_by_root(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "rootfile.txt")
    sandbox.files.write(path, "root data")
    assert os.stat(path).st_uid == 0
    assert sandbox.files.get_info(path).owner == "root"


def test_make_dir_as_user_owned_by_user(sandbox, tmp_dir, test_user):
    path = os.path.join(tmp_dir, "userdir")
    assert sandbox.files.make_dir(path, user="user") is True
    assert os.stat(path).st_uid == test_user.pw_uid


# -- stat / list ------------------------------------------------------------------


def test_exists(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "here.txt")
    assert sandbox.files.exists(path) is False
    sandbox.files.write(path, "x")
    assert sandbox.files.exists(path) is True
    assert sandbox.files.exists(tmp_dir) is True
    assert sandbox.files.exists(os.path.join(tmp_dir, "nope", "deeper")) is False


def test_get_info_file(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "info.txt")
    before = _now() - dt.timedelta(seconds=5)
    sandbox.files.write(path, "12345678901")
    os.chmod(path, 0o640)
    info = sandbox.files.get_info(path)
    assert isinstance(info, EntryInfo)
    assert info.name == "info.txt"
    assert info.path == path
    assert info.type == FileType.FILE
    assert info.size == 11
    assert info.mode == 0o640
    assert info.permissions == "-rw-r-----"
    assert info.owner == "root"
    assert info.group == "root"
    assert info.symlink_target is None
    assert isinstance(info.modified_time, dt.datetime)
    assert before <= info.modified_time <= _now() + dt.timedelta(seconds=5)
    # Same instant as the file's mtime on disk (to the second).
    mtime = dt.datetime.fromtimestamp(os.stat(path).st_mtime, dt.timezone.utc)
    assert abs((info.modified_time - mtime).total_seconds()) < 1


def test_get_info_dir(sandbox, tmp_dir):
    d = os.path.join(tmp_dir, "somedir")
    os.mkdir(d)
    os.chmod(d, 0o755)
    info = sandbox.files.get_info(d)
    assert info.type == FileType.DIR
    assert info.name == "somedir"
    assert info.path == d
    assert info.permissions == "drwxr-xr-x"
    assert info.mode == 0o755


def test_get_info_executable(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "run.sh")
    with open(path, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(path, 0o755)
    info = sandbox.files.get_info(path)
    assert info.permissions == "-rwxr-xr-x"
    assert info.mode == 0o755


def test_get_info_symlink(sandbox, tmp_dir):
    target = os.path.join(tmp_dir, "target.txt")
    link = os.path.join(tmp_dir, "link")
    with open(target, "w") as f:
        f.write("t")
    os.symlink(target, link)
    info = sandbox.files.get_info(link)
    assert info.type == FileType.SYMLINK
    assert info.symlink_target == target
    assert info.name == "link"


def test_get_info_missing_raises_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.get_info(os.path.join(tmp_dir, "ghost"))


def _make_tree(root):
    os.makedirs(os.path.join(root, "sub", "deeper"))
    for rel, content in [
        ("a.txt", "a"),
        ("sub/b.txt", "bb"),
        ("sub/deeper/c.txt", "ccc"),
    ]:
        with open(os.path.join(root, rel), "w") as f:
            f.write(content)


def test_list_depth_1(sandbox, tmp_dir):
    _make_tree(tmp_dir)
    entries = sandbox.files.list(tmp_dir)
    got = {e.name: e for e in entries}
    assert set(got) == {"a.txt", "sub"}
    assert len(entries) == 2
    assert got["a.txt"].type == FileType.FILE
    assert got["a.txt"].path == os.path.join(tmp_dir, "a.txt")
    assert got["a.txt"].size == 1
    assert got["sub"].type == FileType.DIR
    assert got["sub"].path == os.path.join(tmp_dir, "sub")
    assert all(isinstance(e.modified_time, dt.datetime) for e in entries)


def test_list_depth_2(sandbox, tmp_dir):
    _make_tree(tmp_dir)
    entries = sandbox.files.list(tmp_dir, depth=2)
    by_path = {e.path: e for e in entries}
    expected = {
        os.path.join(tmp_dir, "a.txt"): FileType.FILE,
        os.path.join(tmp_dir, "sub"): FileType.DIR,
        os.path.join(tmp_dir, "sub", "b.txt"): FileType.FILE,
        os.path.join(tmp_dir, "sub", "deeper"): FileType.DIR,
    }
    assert {p: e.type for p, e in by_path.items()} == expected
    assert len(entries) == len(expected)
    assert by_path[os.path.join(tmp_dir, "sub", "b.txt")].name == "b.txt"
    assert by_path[os.path.join(tmp_dir, "sub", "b.txt")].size == 2


def test_list_default_depth_is_one(sandbox, tmp_dir):
    _make_tree(tmp_dir)
    # depth=None sends no depth (0), which envd treats as 1.
    entries = sandbox.files.list(tmp_dir, depth=None)
    assert {e.path for e in entries} == {
        os.path.join(tmp_dir, "a.txt"),
        os.path.join(tmp_dir, "sub"),
    }


def test_list_does_not_follow_symlinked_dirs(sandbox, tmp_dir):
    _make_tree(os.path.join(tmp_dir, "real"))
    os.symlink(os.path.join(tmp_dir, "real"), os.path.join(tmp_dir, "link"))
    entries = sandbox.files.list(tmp_dir, depth=3)
    paths = {e.path for e in entries}
    assert os.path.join(tmp_dir, "link") in paths
    assert os.path.join(tmp_dir, "real", "sub", "b.txt") in paths
    assert not any(p.startswith(os.path.join(tmp_dir, "link") + "/") for p in paths), paths


def test_list_empty_dir(sandbox, tmp_dir):
    assert sandbox.files.list(tmp_dir) == []


def test_list_missing_dir_raises_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.list(os.path.join(tmp_dir, "nowhere"))


def test_list_on_file_is_invalid_argument(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "plain.txt")
    sandbox.files.write(path, "x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(path)


# -- mutate ------------------------------------------------------------------------


def test_rename(sandbox, tmp_dir):
    old = os.path.join(tmp_dir, "old.txt")
    new = os.path.join(tmp_dir, "renamed", "new.txt")
    sandbox.files.write(old, "moving")
    info = sandbox.files.rename(old, new)
    assert isinstance(info, EntryInfo)
    assert info.path == new
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert info.size == 6
    assert sandbox.files.exists(old) is False
    assert sandbox.files.read(new) == "moving"


def test_rename_directory(sandbox, tmp_dir):
    _make_tree(os.path.join(tmp_dir, "tree"))
    info = sandbox.files.rename(os.path.join(tmp_dir, "tree"), os.path.join(tmp_dir, "moved"))
    assert info.type == FileType.DIR
    assert sandbox.files.read(os.path.join(tmp_dir, "moved", "sub", "deeper", "c.txt")) == "ccc"
    assert not os.path.exists(os.path.join(tmp_dir, "tree"))


def test_rename_missing_source_raises_not_found(sandbox, tmp_dir):
    with pytest.raises(FileNotFoundException):
        sandbox.files.rename(os.path.join(tmp_dir, "nope"), os.path.join(tmp_dir, "dest"))


def test_make_dir(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "newdir")
    assert sandbox.files.make_dir(path) is True
    assert os.path.isdir(path)
    assert sandbox.files.get_info(path).type == FileType.DIR
    assert sandbox.files.make_dir(path) is False


def test_make_dir_creates_parents(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "p1", "p2", "p3")
    assert sandbox.files.make_dir(path) is True
    assert os.path.isdir(path)


def test_make_dir_over_file_fails(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "afile")
    sandbox.files.write(path, "x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir(path)


def test_remove_file(sandbox, tmp_dir):
    path = os.path.join(tmp_dir, "doomed.txt")
    sandbox.files.write(path, "bye")
    sandbox.files.remove(path)
    assert sandbox.files.exists(path) is False
    assert not os.path.exists(path)


def test_remove_missing_path_succeeds(sandbox, tmp_dir):
    sandbox.files.remove(os.path.join(tmp_dir, "never-existed"))


def test_remove_directory_recursive(sandbox, tmp_dir):
    root = os.path.join(tmp_dir, "tree")
    _make_tree(root)
    sandbox.files.remove(root)
    assert sandbox.files.exists(root) is False
    assert not os.path.exists(root)
    assert os.path.isdir(tmp_dir)


# -- watch --------------------------------------------------------------------------


def _poll_events(handle, pred, wait_until, what):
    seen = []

    def check():
        seen.extend(handle.get_new_events())
        return any(pred(e) for e in seen)

    wait_until(check, timeout=10, interval=0.1, what=f"{what}; events so far: {seen}")
    return seen


def test_watch_dir_sync(sandbox, tmp_dir, wait_until):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        assert handle.get_new_events() == []
        path = os.path.join(tmp_dir, "watched.txt")
        sandbox.files.write(path, "content")
        events = _poll_events(
            handle,
            lambda e: e.name == "watched.txt"
            and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE),
            wait_until,
            "CREATE/WRITE of watched.txt",
        )
        # Names are relative to the watched directory.
        assert all(not e.name.startswith("/") for e in events), events

        sandbox.files.remove(path)
        _poll_events(
            handle,
            lambda e: e.name == "watched.txt" and e.type == FilesystemEventType.REMOVE,
            wait_until,
            "REMOVE of watched.txt",
        )
        # Events are drained: nothing new happened since the last call.
        assert handle.get_new_events() == []
    finally:
        handle.stop()
    with pytest.raises(SandboxException):
        handle.get_new_events()


def test_watch_dir_sees_command_changes(sandbox, tmp_dir, wait_until):
    handle = sandbox.files.watch_dir(tmp_dir)
    try:
        sandbox.commands.run(f"echo x > {tmp_dir}/by-cmd.txt; mkdir {tmp_dir}/newdir", timeout=30)
        _poll_events(
            handle,
            lambda e: e.name == "newdir" and e.type == FilesystemEventType.CREATE,
            wait_until,
            "CREATE of newdir",
        )
        sandbox.commands.run(f"mv {tmp_dir}/by-cmd.txt {tmp_dir}/moved.txt", timeout=30)
        _poll_events(
            handle,
            lambda e: e.name == "by-cmd.txt" and e.type == FilesystemEventType.RENAME,
            wait_until,
            "RENAME of by-cmd.txt",
        )
    finally:
        handle.stop()


def test_watch_dir_recursive(sandbox, tmp_dir, wait_until):
    sub = os.path.join(tmp_dir, "sub")
    os.mkdir(sub)
    handle = sandbox.files.watch_dir(tmp_dir, recursive=True)
    try:
        sandbox.files.write(os.path.join(sub, "inner.txt"), "x")
        _poll_events(
            handle,
            lambda e: e.name == os.path.join("sub", "inner.txt")
            and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE),
            wait_until,
            "event for sub/inner.txt",
        )
    finally:
        handle.stop()


def test_watch_dir_include_entry(sandbox, tmp_dir, wait_until):
    handle = sandbox.files.watch_dir(tmp_dir, include_entry=True)
    try:
        path = os.path.join(tmp_dir, "entry.txt")
        sandbox.files.write(path, "12345")
        events = _poll_events(
            handle,
            lambda e: e.name == "entry.txt"
            and e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE)
            and e.entry is not None,
            wait_until,
            "CREATE/WRITE of entry.txt carrying its entry",
        )
        entry = next(e.entry for e in events if e.name == "entry.txt" and e.entry is not None)
        assert entry.name == "entry.txt"
        assert entry.path == path
        assert entry.type == FileType.FILE
    finally:
        handle.stop()


def test_watcher_unknown_after_stop(sandbox, tmp_dir):
    handle = sandbox.files.watch_dir(tmp_dir)
    handle.stop()
    # The SDK refuses locally after stop(); clear its flag to ask envd, which
    # must no longer know the watcher.
    handle._closed = False
    with pytest.raises(NotFoundException):
        handle.get_new_events()


def test_watch_dir_missing_raises_not_found(sandbox, tmp_dir):
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir(os.path.join(tmp_dir, "nope"))


def test_watch_dir_async(async_sandbox_factory, tmp_dir):
    """AsyncSandbox uses the server-streaming WatchDir RPC."""

    async def main():
        sbx = await async_sandbox_factory()
        events = []
        created = asyncio.Event()
        removed = asyncio.Event()
        exits = []

        def on_event(e):
            events.append(e)
            if e.name == "async.txt":
                if e.type in (FilesystemEventType.CREATE, FilesystemEventType.WRITE):
                    created.set()
                if e.type == FilesystemEventType.REMOVE:
                    removed.set()

        handle = await sbx.files.watch_dir(
            tmp_dir, on_event=on_event, on_exit=exits.append, timeout=60
        )
        try:
            path = os.path.join(tmp_dir, "async.txt")
            await sbx.files.write(path, "async content")
            await asyncio.wait_for(created.wait(), 10)
            await sbx.files.remove(path)
            await asyncio.wait_for(removed.wait(), 10)
        except asyncio.TimeoutError:
            pytest.fail(f"async watch missed events; got {events}, on_exit {exits}")
        finally:
            await handle.stop()
        assert all(not e.name.startswith("/") for e in events), events
        # Stopping ends the watch cleanly.
        assert exits == [None]

    asyncio.run(main())


def test_watch_dir_async_missing_raises_not_found(async_sandbox_factory, tmp_dir):
    async def main():
        sbx = await async_sandbox_factory()
        with pytest.raises(NotFoundException):
            await sbx.files.watch_dir(os.path.join(tmp_dir, "nope"), on_event=lambda e: None)

    asyncio.run(main())
