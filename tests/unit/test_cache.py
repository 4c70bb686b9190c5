"""ArtifactCache: content keys, LRU eviction, sharing between processes, and never failing a build."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import pytest

from liveos import cache as cache_module
from liveos.cache import (
    DEFAULT_MAX_BYTES,
    ArtifactCache,
    CachedArtifact,
    cache_key,
    default_cache_dir,
    default_max_bytes,
)
from liveos.errors import UsageError

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount)")


@pytest.fixture(autouse=True)
def ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Last-use times from a counter: LRU order is the order of the calls."""
    ticks = itertools.count(1_000_000_000_000_000_000, 1_000_000)
    monkeypatch.setattr(cache_module, "_now_ns", lambda: next(ticks))


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache", max_bytes=1000)


def artifact(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def tmp_dirs(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root) if name.startswith(".tmp-"))


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------------------------
# Keys and defaults
# ---------------------------------------------------------------------------------------------


def test_keys_are_canonical() -> None:
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": (1, 2), "a": 1})
    assert cache_key(PurePosixPath("/boot/vmlinuz"), Path("/x")) == cache_key("/boot/vmlinuz", "/x")
    assert len(cache_key()) == 64 and cache_key() == cache_key()
    distinct = [cache_key(v) for v in ("1", 1, True, None, [1], {"1": 1}, "", [], {})]
    assert len(set(distinct)) == len(distinct)
    assert cache_key("a", "b") != cache_key("ab") != cache_key(["a", "b"])
    assert cache_key(1, 0) != cache_key(True, False)


def test_keys_refuse_what_has_no_canonical_form() -> None:
    for bad in (1.5, b"bytes", object(), {1: "int key"}, {"nested": {2.0}}, [Path("/ok"), 1j]):
        with pytest.raises(TypeError):
            cache_key(bad)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVEOS_CACHE_DIR", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("LIVEOS_CACHE_DIR", "relative/dir")
    with pytest.raises(UsageError, match="LIVEOS_CACHE_DIR"):
        default_cache_dir()
    monkeypatch.setenv("LIVEOS_CACHE_DIR", "")  # empty is unset
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert default_cache_dir() == Path("/var/cache/liveos")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "liveos"
    monkeypatch.setenv("XDG_CACHE_HOME", "not/absolute")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "liveos"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "liveos"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", DEFAULT_MAX_BYTES),
        ("12345", 12345),
        (" 0 ", 0),
        ("100B", 100),
        ("4K", 4096),
        ("512m", 512 << 20),
        ("8G", 8 << 30),
        ("8GiB", 8 << 30),
        ("2GB", 2 << 30),
        ("1T", 1 << 40),
    ],
)
def test_default_max_bytes(monkeypatch: pytest.MonkeyPatch, value: str, expected: int) -> None:
    monkeypatch.setenv("LIVEOS_CACHE_MAX", value)
    assert default_max_bytes() == expected


@pytest.mark.parametrize("value", ["-1", "1.5G", "lots", "8 G", "G", "8X", "0x100", "8GiBs"])
def test_a_malformed_max_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("LIVEOS_CACHE_MAX", value)
    with pytest.raises(UsageError, match="LIVEOS_CACHE_MAX"):
        default_max_bytes()


def test_the_default_cache_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIVEOS_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("LIVEOS_CACHE_MAX", "1M")
    made = ArtifactCache.default()
    assert (made.root, made.max_bytes) == (tmp_path / "c", 1 << 20)
    assert not (tmp_path / "c").exists()  # nothing is created before the first put


# ---------------------------------------------------------------------------------------------
# Storing and finding
# ---------------------------------------------------------------------------------------------


def test_put_and_get(cache: ArtifactCache, tmp_path: Path) -> None:
    source = artifact(tmp_path, "initrd.img", b"initrd bytes")
    stored = cache.put("initrd", "k1", source, {"kernel": "6.1", "modules": ["a", "b"]})
    assert stored is not None
    assert stored.path == cache.root / "initrd" / "k1" / "artifact"
    assert stored.path.read_bytes() == b"initrd bytes" and stored.size == 12
    assert dict(stored.meta) == {"kernel": "6.1", "modules": ["a", "b"]}
    assert os.stat(stored.path).st_ino != os.stat(source).st_ino  # a copy
    assert stat.S_IMODE(os.stat(cache.root).st_mode) == 0o700
    meta = json.loads((cache.root / "initrd" / "k1" / "meta.json").read_text())
    assert meta["size"] == 12 and meta["kind"] == "initrd" and meta["key"] == "k1" and "created" in meta
    got = cache.get("initrd", "k1")
    assert got is not None and got.path == stored.path and got.meta == stored.meta
    assert got.last_used > stored.last_used  # marked as used
    assert cache.get("initrd", "other") is None and cache.get("squashfs", "k1") is None
    assert cache.size() == 12
    assert tmp_dirs(cache.root) == []


def test_a_missing_cache_is_just_empty(tmp_path: Path) -> None:
    empty = ArtifactCache(tmp_path / "nowhere", 100)
    assert empty.get("a", "b") is None and empty.candidates("a") == [] and empty.size() == 0
    assert empty.evict() == [] and empty.retrieve("a", "b", tmp_path / "out") is None
    empty.clear()
    assert not (tmp_path / "nowhere").exists()


def test_put_keeps_the_existing_entry(cache: ArtifactCache, tmp_path: Path) -> None:
    first = cache.put("cpio", "k", artifact(tmp_path, "one", b"first"), {"n": 1})
    second = cache.put("cpio", "k", artifact(tmp_path, "two", b"second"), {"n": 2})
    assert first is not None and second is not None
    assert second.path.read_bytes() == b"first" and second.meta == {"n": 1}


def test_hard_link_or_copy(cache: ArtifactCache, tmp_path: Path) -> None:
    source = artifact(tmp_path, "squashfs.img", b"squash")
    linked = cache.put("squashfs", "linked", source, link=True)
    copied = cache.put("squashfs", "copied", source)
    assert linked is not None and copied is not None
    assert os.stat(linked.path).st_ino == os.stat(source).st_ino
    assert os.stat(copied.path).st_ino != os.stat(source).st_ino


def test_link_falls_back_to_a_copy_across_filesystems(
    cache: ArtifactCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    source = artifact(tmp_path, "a", b"data")
    stored = cache.put("k", "x", source, link=True)
    assert stored is not None and stored.path.read_bytes() == b"data"
    assert cache.retrieve("k", "x", tmp_path / "out", link=True) is not None
    assert (tmp_path / "out").read_bytes() == b"data"


def test_retrieve_copies_or_links_out(cache: ArtifactCache, tmp_path: Path) -> None:
    stored = cache.put("initrd", "k", artifact(tmp_path, "src", b"content"), {"x": 1})
    assert stored is not None
    dest = artifact(tmp_path, "dest", b"old content, replaced")
    got = cache.retrieve("initrd", "k", dest)
    assert got is not None and got.meta == {"x": 1}
    assert dest.read_bytes() == b"content" and os.stat(dest).st_ino != os.stat(stored.path).st_ino
    linked = tmp_path / "linked"
    assert cache.retrieve("initrd", "k", linked, link=True) is not None
    assert os.stat(linked).st_ino == os.stat(stored.path).st_ino
    assert cache.retrieve("initrd", "missing", tmp_path / "none") is None
    assert not (tmp_path / "none").exists()
    assert sorted(os.listdir(tmp_path)) == ["cache", "dest", "linked", "src"]  # no temporary names left


def test_candidates_share_a_prefix(cache: ArtifactCache, tmp_path: Path) -> None:
    source = artifact(tmp_path, "a", b"x")
    for key in ("slot1-v1", "slot1-v2", "slot2-v1", "slot10-v1"):
        assert cache.put("squashfs", key, source, {"key": key}) is not None
    cache.get("squashfs", "slot1-v1")  # now the most recently used
    found = cache.candidates("squashfs", "slot1-")
    assert [c.key for c in found] == ["slot1-v1", "slot1-v2"]
    assert [c.meta["key"] for c in found] == ["slot1-v1", "slot1-v2"]
    assert len(cache.candidates("squashfs")) == 4
    assert cache.candidates("initrd", "slot1-") == []
    with pytest.raises(UsageError):
        cache.candidates("squashfs", "../")


@pytest.mark.parametrize("name", ["", ".lock", ".tmp-1-1", "../x", "a/b", "-x", "x" * 201, "caf\u00e9"])
def test_names_are_checked(cache: ArtifactCache, tmp_path: Path, name: str) -> None:
    source = artifact(tmp_path, "a", b"x")
    with pytest.raises(UsageError):
        cache.put(name, "key", source)
    with pytest.raises(UsageError):
        cache.get("kind", name)


def test_bad_arguments_raise(cache: ArtifactCache, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        cache.put("k", "x", artifact(tmp_path, "a", b"x"), {"not json": {1, 2}})
    with pytest.raises(TypeError, match="JSON"):
        cache.put("k", "x", artifact(tmp_path, "a", b"x"), {"nan": float("nan")})
    with pytest.raises(UsageError, match="not a regular file"):
        cache.put("k", "x", tmp_path)
    with pytest.raises(UsageError, match="cannot cache"):
        cache.put("k", "x", tmp_path / "missing")
    with pytest.raises(UsageError):
        ArtifactCache(tmp_path, -1)
    assert not cache.root.exists()


# ---------------------------------------------------------------------------------------------
# Eviction
# ---------------------------------------------------------------------------------------------


def test_least_recently_used_entries_go_first(cache: ArtifactCache, tmp_path: Path) -> None:
    hundred = artifact(tmp_path, "a", b"x" * 300)
    for key in ("a", "b", "c"):
        assert cache.put("k", key, hundred) is not None
    assert cache.size() == 900
    cache.get("k", "a")  # a is now the most recently used: b is the oldest
    assert cache.put("k", "d", hundred) is not None
    assert cache.get("k", "b") is None
    assert {c.key for c in cache.candidates("k")} == {"a", "c", "d"}
    assert cache.size() == 900 <= cache.max_bytes
    cache.max_bytes = 350
    removed = cache.evict()
    assert [e.key for e in removed] == ["c", "a"]  # oldest first; d stays
    assert [c.key for c in cache.candidates("k")] == ["d"] and cache.size() == 300


def test_an_artifact_bigger_than_the_cap_is_not_stored(cache: ArtifactCache, tmp_path: Path) -> None:
    assert cache.put("k", "small", artifact(tmp_path, "s", b"s" * 600)) is not None
    assert cache.put("k", "huge", artifact(tmp_path, "h", b"h" * 1001)) is None
    assert cache.get("k", "small") is not None  # nothing evicted for it
    assert cache.put("k", "fits", artifact(tmp_path, "f", b"f" * 1000)) is not None
    assert cache.get("k", "small") is None and cache.size() == 1000


def test_a_cap_of_zero_keeps_nothing(tmp_path: Path) -> None:
    zero = ArtifactCache(tmp_path / "cache", 0)
    assert zero.put("k", "x", artifact(tmp_path, "a", b"data")) is None
    assert zero.put("k", "empty", artifact(tmp_path, "e", b"")) is not None  # 0 bytes fit


def test_clear(cache: ArtifactCache, tmp_path: Path) -> None:
    source = artifact(tmp_path, "a", b"data")
    cache.put("k", "x", source)
    cache.put("j", "y", source)
    cache.clear()
    assert cache.size() == 0 and cache.get("k", "x") is None
    assert sorted(os.listdir(cache.root)) == [".lock"]
    assert source.read_bytes() == b"data"


def test_a_vanished_entry_is_a_miss_not_an_error(cache: ArtifactCache, tmp_path: Path) -> None:
    stored = cache.put("k", "x", artifact(tmp_path, "a", b"data"))
    assert stored is not None
    other_process = ArtifactCache(cache.root, cache.max_bytes)
    other_process.clear()
    assert cache.get("k", "x") is None
    assert cache.retrieve("k", "x", tmp_path / "out") is None
    assert not stored.path.exists()


def test_a_retrieve_survives_an_eviction_after_it_opened_the_entry(
    cache: ArtifactCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cache.put("k", "x", artifact(tmp_path, "a", b"x" * 500)) is not None
    real_copy = cache_module._copy_data

    def evicted_meanwhile(src: int, dst: int, size: int) -> None:
        ArtifactCache(cache.root, cache.max_bytes).clear()  # another process, while we copy
        real_copy(src, dst, size)

    monkeypatch.setattr(cache_module, "_copy_data", evicted_meanwhile)
    assert cache.retrieve("k", "x", tmp_path / "out") is not None
    assert (tmp_path / "out").read_bytes() == b"x" * 500
    assert cache.get("k", "x") is None


# ---------------------------------------------------------------------------------------------
# Damage: corrupt entries, killed writers, planted symlinks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["no meta", "not json", "not an object", "wrong version", "wrong key", "size mismatch", "no artifact"],
)
def test_corrupt_entries_are_absent_and_swept(cache: ArtifactCache, tmp_path: Path, damage: str) -> None:
    stored = cache.put("k", "x", artifact(tmp_path, "a", b"data"))
    assert stored is not None
    entry = stored.path.parent
    meta = entry / "meta.json"
    data = json.loads(meta.read_text())
    os.chmod(meta, 0o644)
    if damage == "no meta":
        meta.unlink()
    elif damage == "not json":
        meta.write_text('{"version": 1, "kin')
    elif damage == "not an object":
        meta.write_text("[1, 2]")
    elif damage == "wrong version":
        meta.write_text(json.dumps({**data, "version": 99}))
    elif damage == "wrong key":
        meta.write_text(json.dumps({**data, "key": "y"}))
    elif damage == "size mismatch":
        os.chmod(stored.path, 0o644)
        stored.path.write_bytes(b"dat")  # truncated
    elif damage == "no artifact":
        stored.path.unlink()
    assert cache.get("k", "x") is None and cache.candidates("k") == [] and cache.size() == 0
    cache.evict()
    assert not entry.exists()
    assert cache.put("k", "x", artifact(tmp_path, "b", b"fresh")) is not None  # and the key is usable
    assert cache.retrieve("k", "x", tmp_path / "out") is not None
    assert (tmp_path / "out").read_bytes() == b"fresh"


def test_a_corrupt_entry_is_replaced_by_put(cache: ArtifactCache, tmp_path: Path) -> None:
    stored = cache.put("k", "x", artifact(tmp_path, "a", b"data"))
    assert stored is not None
    (stored.path.parent / "meta.json").unlink()
    fresh = cache.put("k", "x", artifact(tmp_path, "b", b"new data"))
    assert fresh is not None and fresh.path.read_bytes() == b"new data"


def test_a_dead_writers_temp_dir_is_swept(cache: ArtifactCache, tmp_path: Path) -> None:
    cache.put("k", "first", artifact(tmp_path, "a", b"a"))
    pid = dead_pid()
    leftover = cache.root / f".tmp-{pid}-0"
    leftover.mkdir()
    (leftover / "artifact").write_bytes(b"half")
    alive = cache.root / f".tmp-{os.getppid()}-0"  # a writer that is still running
    alive.mkdir()
    assert cache.put("k", "second", artifact(tmp_path, "b", b"b")) is not None
    assert not leftover.exists() and alive.exists()
    leftover.mkdir()
    cache.evict()
    assert not leftover.exists() and alive.exists()
    alive.rmdir()


_KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from liveos import cache

def stuck(src, dst, size):
    os.write(dst, b"half of it")
    os.fsync(dst)
    Path(sys.argv[2]).write_text("copying")
    time.sleep(600)

cache._copy_data = stuck
cache.ArtifactCache(Path(sys.argv[1]), 1 << 20).put("k", "x", Path(sys.argv[3]))
"""


def test_a_killed_writer_leaves_nothing_visible(cache: ArtifactCache, tmp_path: Path) -> None:
    source = artifact(tmp_path, "src", b"the whole artifact")
    flag = tmp_path / "copying"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, str(cache.root), str(flag), str(source)]
    )
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert writer.poll() is None, "the writer died early"
            assert time.monotonic() < deadline, "the writer never started copying"
            time.sleep(0.05)
        assert tmp_dirs(cache.root) == [f".tmp-{writer.pid}-0"]
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    assert cache.get("k", "x") is None
    assert cache.put("k", "y", source) is not None
    assert tmp_dirs(cache.root) == []
    stored = cache.put("k", "x", source)
    assert stored is not None and stored.path.read_bytes() == b"the whole artifact"


_RACING_WRITER = """
import sys, time
from pathlib import Path
from liveos.cache import ArtifactCache

root, go, source, n = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
while not go.exists():
    time.sleep(0.001)
got = ArtifactCache(root, 1 << 30).put("squashfs", "same-key", source, {"writer": n})
print(got.meta["writer"] if got else "none")
"""


def test_concurrent_puts_of_one_key_leave_one_valid_entry(tmp_path: Path) -> None:
    root, go = tmp_path / "cache", tmp_path / "go"
    writers = []
    for n in range(4):
        source = artifact(tmp_path, f"src{n}", str(n).encode() * 200_000)  # 200 kB each: copies overlap
        argv = [sys.executable, "-c", _RACING_WRITER, str(root), str(go), str(source), str(n)]
        writers.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
    time.sleep(0.5)  # let them all import and wait
    go.touch()
    results = [w.communicate(timeout=120)[0].strip() for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert len(set(results)) == 1 and results[0] in {"0", "1", "2", "3"}  # every writer got the same entry
    entry = ArtifactCache(root, 1 << 30).get("squashfs", "same-key")
    assert entry is not None and entry.meta["writer"] == results[0]
    assert entry.path.read_bytes() == results[0].encode() * 200_000  # meta and artifact match
    assert os.listdir(root / "squashfs") == ["same-key"] and tmp_dirs(root) == []


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[dict[Path, bytes]]:
    """Host files the cache must never touch (one looks like a valid entry ``k/x``); checked
    unchanged after the test."""
    host = tmp_path / "outside"
    (host / "x").mkdir(parents=True)
    meta = {"version": 1, "kind": "k", "key": "x", "size": 4, "created": 0.0, "meta": {}}
    files = {
        host / "canary": b"HOST SECRET",
        host / "x" / "artifact": b"data",
        host / "x" / "meta.json": json.dumps(meta).encode(),
    }
    for path, data in files.items():
        path.write_bytes(data)
    mtimes = {path: os.stat(path).st_mtime_ns for path in files}
    yield files
    for path, data in files.items():
        assert path.read_bytes() == data, path
        assert os.stat(path).st_mtime_ns == mtimes[path], path


@pytest.mark.parametrize(
    "plant",
    ["kind dir", "entry dir", "artifact", "meta.json", "lock file", "temp dir", "junk at the top"],
)
def test_planted_symlinks_are_not_followed(
    cache: ArtifactCache, tmp_path: Path, outside: dict[Path, bytes], plant: str
) -> None:
    host = tmp_path / "outside"
    assert cache.put("j", "seed", artifact(tmp_path, "seed", b"seed")) is not None
    root = cache.root
    if plant == "kind dir":
        os.symlink(host, root / "k")  # root/k/x would be a valid entry, outside
    elif plant == "entry dir":
        (root / "k").mkdir()
        os.symlink(host / "x", root / "k" / "x")
    elif plant == "artifact":
        (root / "k" / "x").mkdir(parents=True)
        (root / "k" / "x" / "meta.json").write_bytes(outside[host / "x" / "meta.json"])
        os.symlink(host / "x" / "artifact", root / "k" / "x" / "artifact")
    elif plant == "meta.json":
        (root / "k" / "x").mkdir(parents=True)
        (root / "k" / "x" / "artifact").write_bytes(b"data")
        os.symlink(host / "x" / "meta.json", root / "k" / "x" / "meta.json")
    elif plant == "lock file":
        os.unlink(root / ".lock")
        os.symlink(host / "canary", root / ".lock")
    elif plant == "temp dir":
        os.symlink(host, root / f".tmp-{dead_pid()}-0")
    elif plant == "junk at the top":
        os.symlink(host, root / ".junk")
    assert cache.get("k", "x") is None
    assert cache.retrieve("k", "x", tmp_path / "out") is None
    assert cache.candidates("k") == []
    assert cache.size() == 4  # only the seed
    assert cache.put("k", "new", artifact(tmp_path, "new", b"new")) is not None
    cache.evict()
    assert cache.put("k", "x", artifact(tmp_path, "mine", b"mine")) is not None
    got = cache.get("k", "x")
    assert got is not None and got.path.read_bytes() == b"mine"
    assert cache.size() == 4 + 3 + 4
    assert not any(os.path.islink(os.path.join(d, n)) for d, ds, fs in os.walk(root) for n in ds + fs)
    cache.clear()


# ---------------------------------------------------------------------------------------------
# A cache that cannot be written never fails the build
# ---------------------------------------------------------------------------------------------


def test_an_uncreatable_cache_degrades(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = artifact(tmp_path, "file", b"not a directory")
    broken = ArtifactCache(blocker / "cache", 1 << 20)
    source = artifact(tmp_path, "a", b"data")
    with caplog.at_level(logging.WARNING, logger="liveos"):
        assert broken.put("k", "x", source) is None
        assert broken.put("k", "y", source) is None
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "carrying on without the cache" in warnings[0].getMessage()
    assert broken.get("k", "x") is None and broken.size() == 0 and broken.evict() == []


def test_a_full_disk_degrades(cache: ArtifactCache, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full)
    assert cache.put("k", "x", artifact(tmp_path, "a", b"data")) is None
    assert tmp_dirs(cache.root) == [] and cache.get("k", "x") is None


def test_a_cache_owned_by_someone_else_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # writable by anyone: anyone could plant an artifact
    unsafe = ArtifactCache(shared, 1 << 20)
    with caplog.at_level(logging.WARNING, logger="liveos"):
        assert unsafe.put("k", "x", artifact(tmp_path, "a", b"data")) is None
    assert "writable by others" in caplog.text
    assert os.listdir(shared) == []


@contextlib.contextmanager
def tmpfs(target: Path, options: str) -> Iterator[Path]:
    target.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@needs_root
def test_a_read_only_cache_serves_hits_and_refuses_puts(tmp_path: Path) -> None:
    source = artifact(tmp_path, "a", b"data")
    with tmpfs(tmp_path / "fs", "size=4m,mode=0700") as fs:
        writable = ArtifactCache(fs / "cache", 1 << 20)
        assert writable.put("k", "x", source) is not None
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        ro = ArtifactCache(fs / "cache", 1 << 20)
        got = ro.get("k", "x")
        assert got is not None and got.path.read_bytes() == b"data"
        assert ro.retrieve("k", "x", tmp_path / "out") is not None
        assert (tmp_path / "out").read_bytes() == b"data"
        assert ro.put("k", "y", source) is None
        assert ro.evict() == [] and ro.size() == 4
        assert ArtifactCache(fs / "elsewhere", 1 << 20).put("k", "x", source) is None


@needs_root
def test_a_really_full_disk_degrades(tmp_path: Path) -> None:
    source = artifact(tmp_path, "big", os.urandom(2 << 20))
    with tmpfs(tmp_path / "fs", "size=1m,mode=0700") as fs:
        small = ArtifactCache(fs / "cache", 1 << 30)
        assert small.put("k", "big", source) is None
        assert tmp_dirs(fs / "cache") == []
        assert small.put("k", "small", artifact(tmp_path, "s", b"fits")) is not None


def test_entries_are_values(cache: ArtifactCache, tmp_path: Path) -> None:
    stored = cache.put("k", "x", artifact(tmp_path, "a", b"data"), {"a": [1]})
    assert isinstance(stored, CachedArtifact)
    with pytest.raises(AttributeError):
        stored.size = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        stored.meta["a"] = 2  # type: ignore[index]
