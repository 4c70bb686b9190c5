"""scan_changes reads overlay upper dirs: every entry classified, nothing followed, digests stable."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import HostError, UsageError
from liveos.image import changes
from liveos.image.changes import Change, ChangeKind, TreeChanges, scan_changes

ROOT = PurePosixPath("/")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, trusted.* xattrs, mount)")


@pytest.fixture(autouse=True)
def fresh_memo() -> Iterator[None]:
    changes.clear_digest_memo()
    yield
    changes.clear_digest_memo()


@pytest.fixture
def old_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every file look older than the racy window, so digests are memoized."""
    monkeypatch.setattr(changes, "_now_ns", lambda: 1 << 62)


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Inodes whose content the scanner reads (each read of a file appends its inode)."""
    calls: list[int] = []
    real = changes._hash_fd

    def counting(fd: int) -> str:
        calls.append(os.fstat(fd).st_ino)
        return real(fd)

    monkeypatch.setattr(changes, "_hash_fd", counting)
    return calls


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def scan(upper: Path, mountpoint: str = "/") -> TreeChanges:
    return scan_changes([(PurePosixPath(mountpoint), upper)])


def by_path(tree: TreeChanges) -> dict[str, Change]:
    return {str(c.path): c for c in tree.changes}


def plain_tree(upper: Path) -> Path:
    """Files, directories and symlinks any user can make."""
    (upper / "etc" / "ssh").mkdir(parents=True)
    (upper / "etc" / "motd").write_bytes(b"hello\n")
    (upper / "etc" / "ssh" / "key").write_bytes(b"secret")
    os.chmod(upper / "etc" / "ssh" / "key", 0o600)
    os.symlink("../usr/lib/os-release", upper / "etc" / "os-release")
    (upper / "empty").mkdir()
    return upper


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def test_files_directories_and_symlinks(tmp_path: Path) -> None:
    tree = scan(plain_tree(tmp_path / "upper"), "/")
    got = by_path(tree)
    assert list(got) == ["/empty", "/etc", "/etc/motd", "/etc/os-release", "/etc/ssh", "/etc/ssh/key"]
    assert tree.paths() == tuple(PurePosixPath(p) for p in got)
    motd = got["/etc/motd"]
    assert (motd.kind, motd.size, motd.digest) == (ChangeKind.FILE, 6, sha(b"hello\n"))
    assert stat.S_IMODE(got["/etc/ssh/key"].mode) == 0o600
    assert got["/etc/ssh/key"].uid == os.getuid()
    link = got["/etc/os-release"]
    assert (link.kind, link.digest) == (ChangeKind.SYMLINK, "../usr/lib/os-release")
    assert got["/etc"].kind is ChangeKind.DIRECTORY and got["/etc"].digest is None
    assert len(tree) == 6 and not tree.is_empty
    assert tree.total_bytes() == 6 + 6
    assert tree.deletions() == () and tree.unsupported == ()
    assert [r.path for r in tree.roots] == [ROOT] and tree.roots[0].kind is ChangeKind.DIRECTORY


def test_image_paths_are_below_the_mountpoint(tmp_path: Path) -> None:
    root_upper, esp_upper = tmp_path / "root", tmp_path / "esp"
    (root_upper / "boot" / "efi").mkdir(parents=True)  # the mountpoint dir, hidden by the ESP
    (esp_upper / "EFI" / "BOOT").mkdir(parents=True)
    (esp_upper / "EFI" / "BOOT" / "grub.cfg").write_text("set x=1\n")
    tree = scan_changes([(ROOT, root_upper), (PurePosixPath("/boot/efi"), esp_upper)])
    assert [(str(c.path), str(c.mountpoint)) for c in tree.changes] == [
        ("/boot", "/"),
        ("/boot/efi", "/"),
        ("/boot/efi/EFI", "/boot/efi"),
        ("/boot/efi/EFI/BOOT", "/boot/efi"),
        ("/boot/efi/EFI/BOOT/grub.cfg", "/boot/efi"),
    ]
    assert [str(r.path) for r in tree.roots] == ["/", "/boot/efi"]


def test_an_empty_upper_is_empty(tmp_path: Path) -> None:
    (tmp_path / "upper").mkdir()
    tree = scan(tmp_path / "upper")
    assert tree.is_empty and len(tree) == 0 and tree.paths() == () and tree.total_bytes() == 0
    json.dumps(tree.to_dict())


def test_bad_input_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "upper").mkdir()
    os.symlink(tmp_path / "upper", tmp_path / "link")
    with pytest.raises(UsageError, match="not an absolute path"):
        scan_changes([(PurePosixPath("boot"), tmp_path / "upper")])
    with pytest.raises(UsageError, match="two overlay upper dirs"):
        scan_changes([(ROOT, tmp_path / "upper"), ("/", tmp_path / "upper")])
    with pytest.raises(UsageError, match="cannot open"):
        scan(tmp_path / "missing")
    with pytest.raises(UsageError, match="cannot open"):
        scan(tmp_path / "link")  # the upper dir itself is not reached through a symlink either


def test_hard_links_point_to_the_first_name(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "b").write_bytes(b"1234")
    os.link(upper / "b", upper / "a")
    os.link(upper / "b", upper / "c")
    got = by_path(scan(upper))
    assert [got[p].nlink for p in ("/a", "/b", "/c")] == [3, 3, 3]
    assert got["/a"].links_to is None
    assert got["/b"].links_to == got["/c"].links_to == PurePosixPath("/a")
    assert scan(upper).total_bytes() == 4  # one inode, counted once


def test_user_xattrs_are_kept(tmp_path: Path) -> None:
    upper = plain_tree(tmp_path / "upper")
    try:
        os.setxattr(upper / "etc" / "motd", "user.liveos.test", b"\x00\xff")
    except OSError as e:
        pytest.skip(f"the tmp filesystem has no user xattrs: {e}")
    motd = by_path(scan(upper))["/etc/motd"]
    assert motd.xattrs == (("user.liveos.test", b"\x00\xff"),)
    assert motd.xattr_map == {"user.liveos.test": b"\x00\xff"}
    assert motd.to_dict()["xattrs"] == {"user.liveos.test": "00ff"}


@needs_root
def test_overlay_markers_and_special_files(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    os.mknod(upper / "deleted", 0o020000, os.makedev(0, 0))  # overlayfs' whiteout
    (upper / "xwhiteout").write_bytes(b"")
    os.setxattr(upper / "xwhiteout", "trusted.overlay.whiteout", b"")
    (upper / "not-a-whiteout").write_bytes(b"data")  # the xattr only counts on an empty file
    os.setxattr(upper / "not-a-whiteout", "trusted.overlay.whiteout", b"")
    (upper / "replaced").mkdir()
    os.setxattr(upper / "replaced", "trusted.overlay.opaque", b"y")
    (upper / "replaced" / "new").write_bytes(b"n")
    (upper / "xwhiteouts-only").mkdir()  # "x": may hold xattr whiteouts, but is not opaque
    os.setxattr(upper / "xwhiteouts-only", "trusted.overlay.opaque", b"x")
    os.mkfifo(upper / "fifo")
    os.mknod(upper / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(upper / "loop", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.mknod(upper / "sock", stat.S_IFSOCK | 0o600)
    (upper / "copied").write_bytes(b"c")
    os.setxattr(upper / "copied", "trusted.overlay.origin", b"\x00fh")  # overlay's own: not reported
    os.setxattr(upper / "copied", "security.selinux", b"system_u:object_r:etc_t:s0\x00")
    tree = scan(upper)
    got = by_path(tree)
    kinds = {path: c.kind for path, c in got.items()}
    assert kinds == {
        "/copied": ChangeKind.FILE,
        "/deleted": ChangeKind.WHITEOUT,
        "/fifo": ChangeKind.SPECIAL,
        "/loop": ChangeKind.SPECIAL,
        "/not-a-whiteout": ChangeKind.FILE,
        "/null": ChangeKind.SPECIAL,
        "/replaced": ChangeKind.OPAQUE_DIRECTORY,
        "/replaced/new": ChangeKind.FILE,
        "/sock": ChangeKind.SPECIAL,
        "/xwhiteout": ChangeKind.WHITEOUT,
        "/xwhiteouts-only": ChangeKind.DIRECTORY,
    }
    assert [str(c.path) for c in tree.deletions()] == ["/deleted", "/replaced", "/xwhiteout"]
    assert got["/null"].rdev == os.makedev(1, 3) and got["/loop"].rdev == os.makedev(7, 0)
    assert got["/fifo"].rdev == 0 and got["/fifo"].digest is None
    assert got["/copied"].xattrs == (("security.selinux", b"system_u:object_r:etc_t:s0\x00"),)
    assert got["/replaced"].xattrs == () and got["/xwhiteout"].xattrs == ()
    assert tree.unsupported == ()


@needs_root
def test_redirects_and_metacopies_are_unsupported(tmp_path: Path) -> None:
    upper = tmp_path / "upper"
    (upper / "moved").mkdir(parents=True)
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/old")
    (upper / "meta-only").write_bytes(b"")
    os.setxattr(upper / "meta-only", "trusted.overlay.metacopy", b"")
    (upper / "fine").write_bytes(b"f")
    tree = scan(upper)
    got = by_path(tree)
    assert got["/moved"].unsupported is not None and "redirect" in got["/moved"].unsupported
    assert got["/meta-only"].unsupported is not None and "metacopy" in got["/meta-only"].unsupported
    assert got["/fine"].unsupported is None
    assert len(tree.unsupported) == 2
    assert tree.unsupported[0].startswith("/meta-only: ") and tree.unsupported[1].startswith("/moved: ")
    assert tree.to_dict()["unsupported"] == list(tree.unsupported)


# ---------------------------------------------------------------------------------------------
# Confinement and size
# ---------------------------------------------------------------------------------------------


def test_symlinks_in_the_upper_are_never_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = tmp_path / "host"
    (host / "dir").mkdir(parents=True)
    canary = host / "canary"
    canary.write_bytes(b"HOST SECRET")
    (host / "dir" / "inside").write_bytes(b"HOST FILE")
    has_xattrs = True
    try:
        os.setxattr(canary, "user.canary", b"1")
    except OSError:
        has_xattrs = False
    upper = tmp_path / "upper"
    (upper / "sub").mkdir(parents=True)
    os.symlink(canary, upper / "abs")
    os.symlink("../../host/canary", upper / "sub" / "rel")
    os.symlink(host / "dir", upper / "dirlink")
    host_inodes = {os.stat(p).st_ino for p in (canary, host / "dir", host / "dir" / "inside")}

    opened: list[int] = []
    real_open = os.open

    def spying_open(*args: object, **kwargs: object) -> int:
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(os.fstat(fd).st_ino)
        return fd

    monkeypatch.setattr(os, "open", spying_open)
    tree = scan(upper)
    monkeypatch.undo()
    assert opened and not host_inodes & set(opened)
    got = by_path(tree)
    assert set(got) == {"/abs", "/dirlink", "/sub", "/sub/rel"}  # nothing of host/dir listed
    assert got["/abs"].kind is ChangeKind.SYMLINK and got["/abs"].digest == str(canary)
    assert got["/sub/rel"].digest == "../../host/canary"
    if has_xattrs:
        assert got["/abs"].xattrs == ()  # read from the link itself, not from the canary


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Callable[[str, int], Path]]:
    """``chain(name, depth)``: an upper dir holding ``name/name/.../leaf`` (``b"bottom"``), made
    through dir fds (paths that long exceed PATH_MAX) and removed with ``rm -rf`` (shutil.rmtree
    recurses: too deep for it, and pytest's cleanup of old temp dirs would choke on it later)."""
    upper = tmp_path / "upper"

    def make(name: str, depth: int) -> Path:
        upper.mkdir()
        fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
        for _ in range(depth):
            os.mkdir(name, dir_fd=fd)
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = sub
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"bottom")
        os.close(leaf)
        os.close(fd)
        return upper

    try:
        yield make
    finally:
        subprocess.run(["rm", "-rf", str(upper)], check=True)


def test_a_deep_tree(chain: Callable[[str, int], Path]) -> None:
    tree = scan(chain("d", 1000))
    assert len(tree) == 1001
    last = tree.changes[-1]
    assert last.path == PurePosixPath("/" + "d/" * 1000 + "leaf") and last.digest == sha(b"bottom")
    assert len(tree.digest()) == 64


def test_paths_longer_than_path_max(chain: Callable[[str, int], Path]) -> None:
    tree = scan(chain("n" * 250, 40))  # 10 000 bytes of path; PATH_MAX is 4096
    assert len(tree) == 41 and tree.changes[-1].digest == sha(b"bottom")
    assert len(str(tree.changes[-1].path)) > 10_000


class _SpyFile:
    """A raw file that records the size of every read."""

    def __init__(self, raw: io.FileIO, reads: list[int]) -> None:
        self.raw, self.reads = raw, reads

    def __enter__(self) -> _SpyFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.raw.close()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int | None:
        self.reads.append(len(buffer))
        return self.raw.readinto(buffer)


def test_large_files_are_hashed_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    data = os.urandom(3 << 20)
    (upper / "big").write_bytes(data)
    with open(upper / "sparse", "wb") as f:
        f.truncate(64 << 20)
    reads: list[int] = []

    def spying_open(fd: int, mode: str, buffering: int, closefd: bool) -> _SpyFile:
        return _SpyFile(io.FileIO(fd, mode, closefd=closefd), reads)

    monkeypatch.setattr(changes, "open", spying_open, raising=False)
    got = by_path(scan(upper))
    monkeypatch.undo()
    assert got["/big"].digest == sha(data)
    assert got["/sparse"].digest == sha(bytes(64 << 20))
    assert len(reads) > 64 and max(reads) <= 1 << 20  # streamed: never the whole file at once


def test_a_file_that_keeps_changing_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "log").write_bytes(b"line\n")
    real = changes._hash_fd

    def racing(fd: int) -> str:
        digest = real(fd)
        with open(upper / "log", "ab") as f:  # a writer appends while the scanner reads
            f.write(b"more\n")
        return digest

    monkeypatch.setattr(changes, "_hash_fd", racing)
    with pytest.raises(HostError, match="changed while"):
        scan(upper)


# ---------------------------------------------------------------------------------------------
# The digest
# ---------------------------------------------------------------------------------------------


def _mutations(upper: Path) -> dict[str, Callable[[], object]]:
    key = upper / "etc" / "ssh" / "key"

    def retarget() -> None:
        os.unlink(upper / "etc" / "os-release")
        os.symlink("../usr/lib/os-releasE", upper / "etc" / "os-release")

    return {
        "content": lambda: key.write_bytes(b"secreT"),
        "mode": lambda: os.chmod(key, 0o640),
        "owner": lambda: os.chown(key, 1234, 1234),
        "group": lambda: os.chown(key, -1, 4321),
        "name": lambda: os.rename(key, key.with_name("key2")),
        "target": retarget,
        "xattr": lambda: os.setxattr(key, "user.x", b"1"),
        "new empty dir": lambda: (upper / "etc" / "new").mkdir(),
        "dir mode": lambda: os.chmod(upper / "empty", 0o700),
        "root mode": lambda: os.chmod(upper, 0o700),
    }


def test_the_digest_is_stable_and_sees_every_change(tmp_path: Path) -> None:
    reference = scan(plain_tree(tmp_path / "ref")).digest()
    assert scan(plain_tree(tmp_path / "same")).digest() == reference  # same content, other inodes
    changes.clear_digest_memo()
    assert scan(tmp_path / "same").digest() == reference
    for what in _mutations(tmp_path / "ref"):
        upper = plain_tree(tmp_path / what.replace(" ", "-"))
        if what in ("owner", "group") and os.geteuid() != 0:
            continue
        try:
            _mutations(upper)[what]()
        except OSError:
            if what == "xattr":
                continue  # no user xattrs on this filesystem
            raise
        assert scan(upper).digest() != reference, what


def test_hard_link_structure_is_in_the_digest(tmp_path: Path) -> None:
    copies, links = tmp_path / "copies", tmp_path / "links"
    for upper in (copies, links):
        upper.mkdir()
        (upper / "a").write_bytes(b"same")
    (copies / "b").write_bytes(b"same")
    os.link(links / "a", links / "b")
    assert scan(copies).digest() != scan(links).digest()


def test_the_digest_ignores_times_and_directory_sizes(tmp_path: Path) -> None:
    upper = plain_tree(tmp_path / "upper")
    before = scan(upper).digest()
    os.utime(upper / "etc" / "motd", ns=(1, 1))
    for i in range(200):  # grows the directory, then leaves it as it was
        (upper / "etc" / f"tmp{i:03}").write_bytes(b"")
    for i in range(200):
        (upper / "etc" / f"tmp{i:03}").unlink()
    assert scan(upper).digest() == before


def test_the_digest_is_the_same_in_another_process(tmp_path: Path) -> None:
    upper = plain_tree(tmp_path / "upper")
    code = (
        "import sys; from pathlib import Path, PurePosixPath; from liveos.image.changes import scan_changes;"
        "print(scan_changes([(PurePosixPath('/'), Path(sys.argv[1]))]).digest())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(upper)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == scan(upper).digest()


def test_select_restricts_the_digest(tmp_path: Path) -> None:
    upper = plain_tree(tmp_path / "upper")

    def in_ssh(path: PurePosixPath) -> bool:
        return path.is_relative_to("/etc/ssh")

    tree = scan(upper)
    ssh, everything = tree.digest(in_ssh), tree.digest()
    assert ssh != everything and tree.digest(None) == everything
    (upper / "etc" / "motd").write_bytes(b"changed")
    changed = scan(upper)
    assert changed.digest(in_ssh) == ssh and changed.digest() != everything
    (upper / "etc" / "ssh" / "key").write_bytes(b"new key")
    assert scan(upper).digest(in_ssh) != ssh
    assert tree.digest(lambda p: False) == TreeChanges(()).digest()


def test_to_dict_is_json(tmp_path: Path) -> None:
    upper = plain_tree(tmp_path / "upper")
    (upper / "caf\udce9").write_bytes(b"latin-1 name")  # a name that is not UTF-8
    tree = scan(upper)
    data = json.loads(json.dumps(tree.to_dict()))
    assert data["digest"] == tree.digest()
    assert [c["path"] for c in data["changes"]][:2] == ["/caf\udce9", "/empty"]
    motd = next(c for c in data["changes"] if c["path"] == "/etc/motd")
    assert motd["kind"] == "file" and motd["digest"] == sha(b"hello\n") and motd["size"] == 6


# ---------------------------------------------------------------------------------------------
# The memo
# ---------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("old_files")
def test_a_rescan_reads_only_the_changed_file(tmp_path: Path, hash_calls: list[int]) -> None:
    upper = plain_tree(tmp_path / "upper")
    for i in range(20):
        (upper / f"f{i}").write_bytes(b"%d" % i)
    first = scan(upper)
    assert len(hash_calls) == 22
    hash_calls.clear()
    assert scan(upper) == first and hash_calls == []
    (upper / "f7").write_bytes(b"seven")
    second = scan(upper)
    assert hash_calls == [os.stat(upper / "f7").st_ino]
    assert by_path(second)["/f7"].digest == sha(b"seven") and second.digest() != first.digest()


def test_recent_files_are_not_memoized(tmp_path: Path, hash_calls: list[int]) -> None:
    """A file written within the last seconds may be written again within the same timestamp
    tick, keeping size and times: such a change is invisible to stat, so it is read again."""
    upper = tmp_path / "upper"
    upper.mkdir()
    path = upper / "f"
    path.write_bytes(b"aaaa")
    st = os.stat(path)
    assert by_path(scan(upper))["/f"].digest == sha(b"aaaa")
    assert by_path(scan(upper))["/f"].digest == sha(b"aaaa")
    assert len(hash_calls) == 2  # unchanged, but young: read by both scans
    path.write_bytes(b"bbbb")  # same size, and the same times
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert by_path(scan(upper))["/f"].digest == sha(b"bbbb")


@pytest.mark.usefixtures("old_files")
def test_hard_links_are_read_once(tmp_path: Path, hash_calls: list[int]) -> None:
    upper = tmp_path / "upper"
    upper.mkdir()
    (upper / "a").write_bytes(b"shared")
    os.link(upper / "a", upper / "b")
    got = by_path(scan(upper))
    assert got["/a"].digest == got["/b"].digest == sha(b"shared") and len(hash_calls) == 1


# ---------------------------------------------------------------------------------------------
# What the kernel writes
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def overlay_mount(lower: Path, upper: Path, work: Path, merged: Path) -> Iterator[Path]:
    options = f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off"
    for d in (upper, work, merged):
        d.mkdir()
    done = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount an overlay here: {done.stderr.strip()}")
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@needs_root
def test_a_real_overlay(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    (lower / "etc" / "old.d").mkdir(parents=True)
    (lower / "etc" / "passwd").write_bytes(b"root:x:0:0\n")
    (lower / "etc" / "hosts").write_bytes(b"127.0.0.1 localhost\n")
    (lower / "etc" / "old.d" / "a.conf").write_bytes(b"a")
    (lower / "etc" / "old.d" / "b.conf").write_bytes(b"b")
    upper = tmp_path / "upper"
    with overlay_mount(lower, upper, tmp_path / "work", tmp_path / "merged") as merged:
        (merged / "etc" / "motd").write_bytes(b"welcome\n")
        os.chmod(merged / "etc" / "passwd", 0o600)
        (merged / "etc" / "hosts").unlink()
        shutil.rmtree(merged / "etc" / "old.d")
        (merged / "etc" / "old.d").mkdir()
        (merged / "etc" / "old.d" / "c.conf").write_bytes(b"c")
        os.symlink("motd", merged / "etc" / "issue")
    tree = scan(upper)
    got = by_path(tree)
    assert {path: c.kind for path, c in got.items()} == {
        "/etc": ChangeKind.DIRECTORY,  # copied up to hold the new entries
        "/etc/hosts": ChangeKind.WHITEOUT,
        "/etc/issue": ChangeKind.SYMLINK,
        "/etc/motd": ChangeKind.FILE,
        "/etc/old.d": ChangeKind.OPAQUE_DIRECTORY,
        "/etc/old.d/c.conf": ChangeKind.FILE,
        "/etc/passwd": ChangeKind.FILE,
    }
    hosts = got["/etc/hosts"]
    assert stat.S_ISCHR(hosts.mode) and hosts.rdev == 0
    assert got["/etc/passwd"].digest == sha(b"root:x:0:0\n")  # copied up whole (metacopy=off)
    assert stat.S_IMODE(got["/etc/passwd"].mode) == 0o600
    assert got["/etc/motd"].digest == sha(b"welcome\n")
    assert got["/etc/issue"].digest == "motd"
    assert all(not name.startswith("trusted.overlay.") for c in tree.changes for name, _ in c.xattrs)
    assert tree.unsupported == ()
    assert [str(c.path) for c in tree.deletions()] == ["/etc/hosts", "/etc/old.d"]
