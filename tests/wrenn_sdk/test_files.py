"""capsule.files: read/write, list, exists, make_dir, remove, and the streaming endpoints."""

import hashlib
import os
import time

import httpx
import pytest

from wrenn import FileEntry, WrennNotFoundError

import sdkutil


@pytest.fixture
def base(mod_capsule):
    """A fresh directory in the module's capsule, removed afterwards."""
    d = f"/tmp/{sdkutil.unique('files')}"
    yield d
    try:
        mod_capsule.files.remove(d)
    except Exception:
        pass


def test_write_read_text(mod_capsule, base):
    text = "héllo ✓\nsecond line\n"
    assert mod_capsule.files.write(f"{base}/t.txt", text) is None
    assert mod_capsule.files.read(f"{base}/t.txt") == text
    assert mod_capsule.files.read_bytes(f"{base}/t.txt") == text.encode()
    # The guest sees the same bytes.
    r = mod_capsule.commands.run(f"cat {base}/t.txt")
    assert r.stdout == text


def test_write_read_bytes(mod_capsule, base):
    data = bytes(range(256)) * 64 + b"\x00\xff"
    mod_capsule.files.write(f"{base}/b.bin", data)
    assert mod_capsule.files.read_bytes(f"{base}/b.bin") == data
    r = mod_capsule.commands.run(f"stat -c %s {base}/b.bin")
    assert r.stdout.strip() == str(len(data))


def test_write_empty_file(mod_capsule, base):
    mod_capsule.files.write(f"{base}/empty", b"")
    assert mod_capsule.files.read_bytes(f"{base}/empty") == b""
    assert mod_capsule.files.exists(f"{base}/empty")


def test_write_creates_parents_and_truncates(mod_capsule, base):
    path = f"{base}/deep/er/still/f.txt"
    mod_capsule.files.write(path, "a long first version of the file\n" * 10)
    mod_capsule.files.write(path, "short\n")
    assert mod_capsule.files.read(path) == "short\n"
    r = mod_capsule.commands.run(f"test -d {base}/deep/er/still && wc -c < {path}")
    assert (r.exit_code, r.stdout.strip()) == (0, "6")


def test_read_missing_is_not_found(mod_capsule, base):
    with pytest.raises(WrennNotFoundError) as ei:
        mod_capsule.files.read(f"{base}/no-such-file")
    assert ei.value.status_code == 404


def test_list_depth_1_and_2(mod_capsule, base):
    mod_capsule.files.write(f"{base}/a.txt", "12345")
    mod_capsule.files.write(f"{base}/sub/b.txt", "x")
    mod_capsule.files.write(f"{base}/sub/deeper/c.txt", "y")

    top = mod_capsule.files.list(base)
    assert all(isinstance(e, FileEntry) for e in top)
    by_name = {e.name: e for e in top}
    assert set(by_name) == {"a.txt", "sub"}
    assert by_name["a.txt"].type == "file"
    assert by_name["a.txt"].size == 5
    assert by_name["a.txt"].path == f"{base}/a.txt"
    assert by_name["sub"].type == "directory"
    assert by_name["sub"].path == f"{base}/sub"
    # modified_at is Unix seconds; the guest clock is set from the host's.
    assert isinstance(by_name["a.txt"].modified_at, int)
    assert abs(by_name["a.txt"].modified_at - time.time()) < 600
    perms = by_name["a.txt"].permissions
    assert perms is None or (len(perms) == 10 and perms[0] == "-"), perms

    two = mod_capsule.files.list(base, depth=2)
    paths = {e.path for e in two}
    assert paths == {f"{base}/a.txt", f"{base}/sub", f"{base}/sub/b.txt", f"{base}/sub/deeper"}


def test_list_missing_is_not_found(mod_capsule, base):
    with pytest.raises(WrennNotFoundError):
        mod_capsule.files.list(f"{base}/nope")


def test_exists(mod_capsule, base):
    mod_capsule.files.write(f"{base}/here.txt", "1")
    assert mod_capsule.files.exists(f"{base}/here.txt") is True
    assert mod_capsule.files.exists(base) is True
    assert mod_capsule.files.exists(f"{base}/not-here.txt") is False
    # A missing parent answers 404 to the listing, which exists() turns into False.
    assert mod_capsule.files.exists(f"{base}/no-dir/x") is False


def test_make_dir_with_parents_and_idempotent(mod_capsule, base):
    entry = mod_capsule.files.make_dir(f"{base}/m/n/o")
    assert isinstance(entry, FileEntry)
    assert entry.name == "o"
    assert entry.type == "directory"
    assert mod_capsule.files.exists(f"{base}/m/n/o")
    r = mod_capsule.commands.run(f"test -d {base}/m/n/o && echo dir")
    assert r.stdout == "dir\n"
    # Again: already there is not an error.
    again = mod_capsule.files.make_dir(f"{base}/m/n/o")
    assert again.name == "o" and again.type == "directory"


def test_remove_file_and_directory_recursively(mod_capsule, base):
    mod_capsule.files.write(f"{base}/gone.txt", "x")
    mod_capsule.files.write(f"{base}/tree/a/b/c.txt", "x")
    mod_capsule.files.write(f"{base}/tree/d.txt", "x")
    mod_capsule.files.remove(f"{base}/gone.txt")
    assert mod_capsule.files.exists(f"{base}/gone.txt") is False
    mod_capsule.files.remove(f"{base}/tree")
    assert mod_capsule.files.exists(f"{base}/tree") is False
    assert {e.name for e in mod_capsule.files.list(base)} == set()
    r = mod_capsule.commands.run(f"test -e {base}/tree; echo $?")
    assert r.stdout == "1\n"


MIB = 1024 * 1024


@pytest.mark.deadline(240)
def test_stream_10_mib_round_trip(mod_capsule, base):
    size = 10 * MIB
    chunk = 256 * 1024
    want = hashlib.sha256()

    def chunks():
        left = size
        while left:
            n = min(chunk, left)
            b = os.urandom(n)
            want.update(b)
            left -= n
            yield b

    path = f"{base}/big/random.bin"
    mod_capsule.files.make_dir(f"{base}/big")
    mod_capsule.files.upload_stream(path, chunks())
    digest = want.hexdigest()

    # What the guest has on disk.
    r = mod_capsule.commands.run(f"stat -c %s {path}; sha256sum {path}", timeout=60)
    assert r.exit_code == 0, r
    got_size, got_sum = r.stdout.split()[:2]
    assert int(got_size) == size
    assert got_sum == digest

    # And what comes back out through the stream.
    got = hashlib.sha256()
    n = 0
    parts = 0
    for part in mod_capsule.files.download_stream(path):
        got.update(part)
        n += len(part)
        parts += 1
    assert n == size
    assert got.hexdigest() == digest
    assert parts > 1, "a 10 MiB download arrived as one piece"


def test_download_stream_missing_raises_http_status_error(mod_capsule, base):
    # download_stream uses raise_for_status(): errors are httpx's, not WrennError.
    with pytest.raises(httpx.HTTPStatusError) as ei:
        for _ in mod_capsule.files.download_stream(f"{base}/missing.bin"):
            pass
    assert ei.value.response.status_code == 404


def test_upload_stream_small_and_overwrite(mod_capsule, base):
    path = f"{base}/up.txt"
    mod_capsule.files.upload_stream(path, iter([b"first ", b"version ", b"long\n"]))
    assert mod_capsule.files.read(path) == "first version long\n"
    mod_capsule.files.upload_stream(path, iter([b"v2\n"]))
    assert mod_capsule.files.read(path) == "v2\n"
