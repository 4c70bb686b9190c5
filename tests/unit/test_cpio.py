"""The newc writer and reader, checked against the real extractors (GNU cpio, bsdtar) on random trees.

A tree built on disk (files, hard links, symlinks, device nodes, fifos, odd names, owners, modes,
mtimes) is archived by ``write_newc``; GNU ``cpio -idm``, ``bsdtar -xpf`` and our own ``extract``
must each reproduce it exactly. Device nodes and owners need root.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import socket
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyzstd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from liveos.cpio import (
    TRAILER,
    CpioEntry,
    CpioHeader,
    extract,
    iter_entries,
    read_entries,
    write_newc,
)
from liveos.errors import ImageError, UsageError
from liveos.settings import Compression

pytestmark = pytest.mark.root
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="device nodes and owners need root")


# ---------------------------------------------------------------------------------------------
# Random trees.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    kind: str  # dir file link symlink chr blk fifo
    name: str
    mode: int
    owner: tuple[int, int]
    mtime: int
    data: bytes = b""
    target: str = ""
    rdev: tuple[int, int] = (0, 0)
    link_to: int = 0


NAME_CHARS = st.sampled_from([*"abcxyz019_-. ", "\n", "ü", "€", "日"])
names = st.one_of(
    st.text(NAME_CHARS, min_size=1, max_size=12),
    st.integers(100, 250).map(lambda n: "L" * n),
).filter(lambda s: s not in (".", "..") and "/" not in s)
owners = st.sampled_from([(0, 0), (1000, 1000), (65534, 100), (0, 4)])
mtimes = st.integers(0, 2**31)


@st.composite
def nodes(draw: st.DrawFn) -> Node:
    kind = draw(st.sampled_from(["dir", "file", "file", "file", "link", "symlink", "chr", "blk", "fifo"]))
    name = draw(names)
    owner, mtime = draw(owners), draw(mtimes)
    perm = draw(st.sampled_from([0o644, 0o755, 0o600, 0o444, 0o4755, 0o2750, 0o1777]))
    if kind == "file":
        return Node(kind, name, perm, owner, mtime, data=draw(st.binary(max_size=3000)))
    if kind == "symlink":
        target = draw(st.sampled_from(["/lib/systemd/systemd", "../x", "dangling", "a b/ü", "/"]))
        return Node(kind, name, 0o777, owner, mtime, target=target)
    if kind in ("chr", "blk"):
        rdev = (draw(st.integers(0, 255)), draw(st.integers(0, 255)))
        return Node(kind, name, perm & 0o777, owner, mtime, rdev=rdev)
    if kind == "link":
        return Node(kind, name, 0, owner, mtime, link_to=draw(st.integers(0, 100)))
    return Node(kind, name, perm & 0o777 if kind == "fifo" else perm | 0o700, owner, mtime)


trees = st.lists(st.tuples(st.integers(0, 50), nodes()), min_size=1, max_size=25)


def build_tree(root: Path, spec: list[tuple[int, Node]]) -> None:
    """Create ``spec`` under ``root``: each node goes into an earlier directory chosen by index."""
    dirs = [root]
    files: list[Path] = []
    for where, node in spec:
        parent = dirs[where % len(dirs)]
        path = parent / node.name
        if os.path.lexists(path):
            continue
        if node.kind == "dir":
            path.mkdir()
            dirs.append(path)
        elif node.kind == "file":
            path.write_bytes(node.data)
            files.append(path)
        elif node.kind == "link":
            if not files:
                continue
            os.link(files[node.link_to % len(files)], path)
            continue  # a hard link shares the inode's metadata
        elif node.kind == "symlink":
            os.symlink(node.target, path)
        elif node.kind == "fifo":
            os.mkfifo(path)
        else:
            fmt = stat.S_IFCHR if node.kind == "chr" else stat.S_IFBLK
            os.mknod(path, fmt | 0o600, os.makedev(*node.rdev))
        os.lchown(path, *node.owner)
        if node.kind != "symlink":
            os.chmod(path, node.mode)
        os.utime(path, (node.mtime, node.mtime), follow_symlinks=False)
    for d in reversed(dirs[1:]):  # children changed the directory mtimes
        os.utime(d, (1_000_000, 1_000_000))


def snapshot(root: Path, *, dir_mtimes: bool = True) -> dict[str, object]:
    """Everything that must survive a round trip, keyed by relative path (hard links as groups).

    GNU cpio 2.13 ``-m`` does not restore the mtime of a directory that has children (creating
    them touches it afterwards), so its check leaves directory mtimes out.
    """
    out: dict[str, object] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            s = os.lstat(path)
            item: tuple[object, ...] = (stat.S_IFMT(s.st_mode), stat.S_IMODE(s.st_mode), s.st_uid, s.st_gid)
            if stat.S_ISREG(s.st_mode):
                item += (hashlib.sha256(Path(path).read_bytes()).hexdigest(), int(s.st_mtime))
                inodes.setdefault(s.st_ino, []).append(rel)
            elif stat.S_ISLNK(s.st_mode):
                item = (stat.S_IFLNK, s.st_uid, s.st_gid, os.readlink(path))
            elif stat.S_ISCHR(s.st_mode) or stat.S_ISBLK(s.st_mode):
                item += (os.major(s.st_rdev), os.minor(s.st_rdev), int(s.st_mtime))
            elif stat.S_ISDIR(s.st_mode) and dir_mtimes:
                item += (int(s.st_mtime),)
            out[rel] = item
    out["<hardlinks>"] = sorted(sorted(group) for group in inodes.values() if len(group) > 1)
    return out


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A fresh directory per hypothesis example (pytest's tmp_path is per test function)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="liveos-cpio-test-") as d:
        yield Path(d)


def gnu_cpio_extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    with open(archive, "rb") as fp:
        subprocess.run(
            ["cpio", "-idm", "--no-absolute-filenames", "--quiet"], stdin=fp, cwd=dest, check=True
        )


def bsdtar_extract(archive: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(["bsdtar", "-xpf", str(archive), "-C", str(dest)], check=True)


HYPO = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------
# Round trips through three extractors.
# ---------------------------------------------------------------------------------------------
@needs_root
@HYPO
@given(spec=trees)
def test_random_tree_round_trips_through_gnu_cpio_bsdtar_and_own_reader(
    spec: list[tuple[int, Node]],
) -> None:
    with workdir() as work:
        src = work / "src"
        src.mkdir()
        build_tree(src, spec)
        expected = snapshot(src)
        archive = work / "a.cpio"
        stats = write_newc(src, archive, compression=Compression.NONE)
        assert archive.stat().st_size % 512 == 0
        assert stats.archive_bytes == stats.bytes_out == archive.stat().st_size
        gnu_cpio_extract(archive, work / "gnu")
        assert snapshot(work / "gnu", dir_mtimes=False) == snapshot(src, dir_mtimes=False)
        bsdtar_extract(archive, work / "bsdtar")
        assert snapshot(work / "bsdtar") == expected
        own = work / "own"
        own.mkdir()
        extract(archive, own)
        assert snapshot(own) == expected


@needs_root
@settings(max_examples=15, deadline=None)
@given(spec=trees)
def test_zstd_archive_round_trips(spec: list[tuple[int, Node]]) -> None:
    with workdir() as work:
        src = work / "src"
        src.mkdir()
        build_tree(src, spec)
        archive = work / "a.cpio.zst"
        write_newc(src, archive, compression=Compression.ZSTD)
        assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
        plain = work / "a.cpio"
        plain.write_bytes(pyzstd.decompress(archive.read_bytes()))
        bsdtar_extract(plain, work / "bsdtar")
        own = work / "own"
        own.mkdir()
        extract(archive, own)
        assert snapshot(work / "bsdtar") == snapshot(src) == snapshot(own)


# ---------------------------------------------------------------------------------------------
# Format details.
# ---------------------------------------------------------------------------------------------
def test_header_and_entry_pack_parse_symmetry() -> None:
    header = CpioHeader(7, 0o100644, 1, 2, 3, 1_700_000_000, 5, 0, 0, 0, 0, 6)
    assert CpioHeader.parse(header.pack()) == header
    assert header.pack().startswith(b"070701")
    for entry in (
        CpioEntry.file("etc/a b\nü", b"hello", mode=0o600, uid=3, gid=4),
        CpioEntry.symlink("init", "/lib/systemd/systemd"),
        CpioEntry.char_device("dev/console", 5, 1),
        CpioEntry.block_device("dev/loop0", 7, 0),
        CpioEntry.directory("run", mode=0o755),
        CpioEntry.fifo("p"),
    ):
        packed = entry.pack()
        assert len(packed) % 4 == 0
        assert CpioEntry.parse(packed) == entry


def test_corrupt_header_is_an_image_error() -> None:
    with pytest.raises(ImageError):
        CpioHeader.parse(b"070707" + b"0" * 104)
    with pytest.raises(ImageError):
        CpioHeader.parse(b"070701" + b"Z" * 104)


def tree_with_hardlinks(src: Path) -> None:
    (src / "a").mkdir(parents=True)
    (src / "a" / "one").write_bytes(b"shared data")
    os.link(src / "a" / "one", src / "b-two")
    os.link(src / "a" / "one", src / "c-three")
    (src / "solo").write_bytes(b"x" * 300_000)  # big file: the kernel-copy path


def test_hardlinks_are_stored_the_newc_way(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree_with_hardlinks(src)
    out = io.BytesIO()
    stats = write_newc(src, out, compression=Compression.NONE)
    entries = read_entries(io.BytesIO(out.getvalue()))
    links = [e for e in entries if e.name in ("a/one", "b-two", "c-three")]
    assert [e.name for e in links] == ["a/one", "b-two", "c-three"]  # sorted, data on the last
    assert [e.filesize for e in links] == [0, 0, len(b"shared data")]
    assert links[-1].data == b"shared data"
    assert len({e.ino for e in links}) == 1 and all(e.nlink == 3 for e in links)
    assert stats.hardlinks == 2
    inos = [e.ino for e in entries]
    assert len(set(inos)) == len(inos) - 2 and min(inos) == 1  # renumbered from 1


def test_hardlink_with_links_outside_the_tree_still_carries_its_data(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    os.link(src / "f", tmp_path / "outside")
    entries = read_entries(io.BytesIO(_archive(src)))
    (f,) = [e for e in entries if e.name == "f"]
    assert f.data == b"data" and f.nlink == 2


def _archive(src: Path, **kwargs: object) -> bytes:
    out = io.BytesIO()
    write_newc(src, out, compression=Compression.NONE, **kwargs)  # type: ignore[arg-type]
    return out.getvalue()


def test_order_names_root_and_trailer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in ("b/z", "a", "b/a", "a.b"):
        (src / d).mkdir(parents=True)
    (src / "b" / "z" / "f").write_text("x")
    data = _archive(src)
    names = [e.name for e in read_entries(io.BytesIO(data))]
    assert names == [".", "a", "a.b", "b", "b/a", "b/z", "b/z/f"]
    assert TRAILER.encode() in data[-1024:] and len(data) % 512 == 0


def test_source_date_epoch_makes_output_bit_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    tree_with_hardlinks(src)
    outs = []
    for i in range(2):
        for p in src.rglob("*"):  # a rebuild touches every file
            os.utime(p, (2_000_000_000 + i, 2_000_000_000 + i), follow_symlinks=False)
        out = tmp_path / f"out{i}.zst"
        write_newc(src, out, compression=Compression.ZSTD, source_date_epoch=1_600_000_000, threads=1 + i)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1500000000")
    entries = read_entries(io.BytesIO(_archive(src)))
    assert {e.mtime for e in entries} == {1_500_000_000}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(UsageError, match="SOURCE_DATE_EPOCH"):
        _archive(src)


def test_file_of_4_gib_is_refused_and_no_output_is_left(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "var").mkdir(parents=True)
    with open(src / "var" / "huge.img", "wb") as fp:
        fp.truncate(4 * 1024**3)  # sparse
    out = tmp_path / "initrd.img"
    with pytest.raises(ImageError, match=r"var/huge\.img"):
        write_newc(src, out, compression=Compression.NONE)
    assert list(tmp_path.iterdir()) == [src]


def test_exclude_and_extra_entries(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in ("boot/grub", "etc", "dev", "usr/lib/systemd"):
        (src / d).mkdir(parents=True)
    (src / "boot" / "vmlinuz").write_bytes(b"kernel")
    (src / "boot" / "grub" / "grub.cfg").write_text("cfg")
    (src / "etc" / "fstab").write_text("/dev/sda1 / ext4")
    (src / "etc" / "hostname").write_text("live")
    (src / "init").write_text("old init, replaced")
    extra = [
        CpioEntry.symlink("init", "/lib/systemd/systemd"),
        CpioEntry.char_device("dev/console", 5, 1, mode=0o600),
        CpioEntry.directory("run/live", mode=0o700),
        CpioEntry.file("etc/extra.conf", b"k=v\n", mode=0o640),
    ]
    data = _archive(src, exclude=["boot/*", "/etc/fstab"], extra=extra, owner=(0, 0))
    entries = {e.name: e for e in read_entries(io.BytesIO(data))}
    names = list(entries)
    assert "boot" in names and not [n for n in names if n.startswith("boot/")]
    assert "etc/fstab" not in names and "etc/hostname" in names
    assert entries["init"].linkname == "/lib/systemd/systemd"
    console = entries["dev/console"]
    assert stat.S_ISCHR(console.mode) and (console.rdevmajor, console.rdevminor) == (5, 1)
    assert stat.S_IMODE(console.mode) == 0o600
    assert stat.S_ISDIR(entries["run"].mode) and stat.S_IMODE(entries["run/live"].mode) == 0o700
    assert entries["etc/extra.conf"].data == b"k=v\n"
    assert names.index("run") < names.index("run/live")
    for i, name in enumerate(names[1:], 1):  # every parent comes before its children
        parent = name.rpartition("/")[0] or "."
        assert parent in names[:i], name
    assert names[1:] == sorted(names[1:], key=lambda n: n.split("/"))
    assert all(e.uid == 0 and e.gid == 0 for e in entries.values())
    with pytest.raises(UsageError):
        _archive(src, exclude=["../etc"])


def test_sockets_are_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(src / "sock"))
    try:
        with caplog.at_level(logging.WARNING, logger="liveos"):
            stats = write_newc(src, io.BytesIO(), compression=Compression.NONE)
    finally:
        sock.close()
    assert stats.skipped == 1 and "sock" in caplog.text


@pytest.mark.parametrize(
    ("compression", "tool"), [(Compression.GZIP, "gzip"), (Compression.XZ, "xz"), (Compression.ZSTD, "zstd")]
)
def test_compressed_outputs_decompress_with_the_standard_tools(
    tmp_path: Path, compression: Compression, tool: str
) -> None:
    src = tmp_path / "src"
    tree_with_hardlinks(src)
    out = tmp_path / "initrd"
    write_newc(src, out, compression=compression, level=1)
    listing = subprocess.run(
        f"{tool} -dc {out} | cpio -t --quiet", shell=True, check=True, capture_output=True, text=True
    ).stdout.split()
    assert listing == [".", "a", "a/one", "b-two", "c-three", "solo"]
    if compression is Compression.XZ:
        assert out.read_bytes()[7] == 0x01  # stream flags: CRC32, the only check the kernel verifies
    assert [e.name for e in read_entries(out)] == listing


# ---------------------------------------------------------------------------------------------
# Reader: segments and safety.
# ---------------------------------------------------------------------------------------------
def test_multi_segment_initrd_microcode_then_zstd(tmp_path: Path) -> None:
    early, main = tmp_path / "early", tmp_path / "main"
    (early / "kernel" / "x86" / "microcode").mkdir(parents=True)
    (early / "kernel" / "x86" / "microcode" / "GenuineIntel.bin").write_bytes(b"\x01" * 1000)
    tree_with_hardlinks(main)
    seg1, seg2 = tmp_path / "early.cpio", tmp_path / "main.cpio.zst"
    write_newc(early, seg1, compression=Compression.NONE)
    write_newc(main, seg2, compression=Compression.ZSTD)
    initrd = tmp_path / "initrd.img"
    initrd.write_bytes(seg1.read_bytes() + b"\0" * 2048 + seg2.read_bytes() + seg2.read_bytes())
    members = [(m.archive, m.compression, m.name) for m in iter_entries(initrd)]
    assert members[1] == (0, "none", "kernel")
    assert (1, "zstd", "c-three") in members and (2, "zstd", "c-three") in members
    dest = tmp_path / "dest"
    dest.mkdir()
    extract(initrd, dest)
    assert (dest / "kernel/x86/microcode/GenuineIntel.bin").read_bytes() == b"\x01" * 1000
    assert (dest / "c-three").read_bytes() == b"shared data"
    assert os.stat(dest / "a" / "one").st_ino == os.stat(dest / "c-three").st_ino


def test_truncated_and_unknown_data_are_image_errors(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree_with_hardlinks(src)
    data = _archive(src)
    with pytest.raises(ImageError):
        list(iter_entries(io.BytesIO(data[:1000])))
    with pytest.raises(ImageError, match="unknown data"):
        list(iter_entries(io.BytesIO(b"PK\x03\x04" + data)))
    lz4 = io.BytesIO(b"\x02\x21\x4c\x18" + b"\0" * 100)
    with pytest.raises(ImageError, match="lz4"):
        list(iter_entries(lz4))


def _raw_archive(*entries: CpioEntry) -> bytes:
    body = b"".join(e.pack() for e in entries) + CpioEntry(TRAILER, 0).pack()
    return body + b"\0" * (-len(body) % 512)


@pytest.mark.parametrize(
    "evil",
    [
        [CpioEntry.file("../escape", b"x")],
        [CpioEntry.file("a/../../escape", b"x")],
        [CpioEntry.file("/abs", b"x")],
        [CpioEntry.symlink("link", "/tmp"), CpioEntry.file("link/escape", b"x")],
        [CpioEntry.symlink("up", ".."), CpioEntry.file("up/escape", b"x")],
    ],
)
def test_extract_refuses_names_that_escape(tmp_path: Path, evil: list[CpioEntry]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError):
        extract(io.BytesIO(_raw_archive(*evil)), dest)
    assert not (tmp_path / "escape").exists() and not Path("/tmp/escape").exists()


def test_cli_tools_agree_with_the_writer_on_a_real_subtree(tmp_path: Path) -> None:
    """A slice of this machine's /usr (many real files, symlinks) through GNU cpio."""
    src = Path("/usr/share/doc")
    archive = tmp_path / "doc.cpio"
    write_newc(src, archive, compression=Compression.NONE, owner=(0, 0))
    with open(archive, "rb") as fp:
        listing = subprocess.run(["cpio", "-t", "--quiet"], stdin=fp, check=True, capture_output=True).stdout
    ours = [os.fsencode(m.name) for m in iter_entries(archive)]
    assert listing.split(b"\n")[:-1] == ours


# ---------------------------------------------------------------------------------------------
# Regressions: holes found by an attacker (every byte of an initrd is hostile input).
# ---------------------------------------------------------------------------------------------
def _canary(tmp_path: Path) -> tuple[Path, tuple[int, int, int, int]]:
    """A host file outside the extraction target, and its (mode, uid, gid, mtime_ns)."""
    canary = tmp_path / "canary"
    canary.write_text("host file\n")
    canary.chmod(0o600)
    os.utime(canary, ns=(1_000_000_000, 1_000_000_000))
    st = canary.stat()
    return canary, (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)


def _state(path: Path) -> tuple[int, int, int, int]:
    st = path.stat()
    return st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns


@pytest.mark.parametrize("target", ["absolute", "relative"])
def test_directory_pass_never_follows_a_symlink_that_replaced_the_directory(
    tmp_path: Path, target: str
) -> None:
    """A directory ``d`` then a symlink ``d -> host file``: the final directory pass used to
    chmod/chown/utime the symlink's target."""
    canary, before = _canary(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    link = str(canary) if target == "absolute" else "../canary"
    archive = _raw_archive(
        CpioEntry.directory("d", mode=0o4777, uid=1234, gid=1234),
        CpioEntry.directory("e/f", mode=0o777),
        CpioEntry.symlink("d", link),
        CpioEntry.symlink("e/f", link),
        CpioEntry.directory(".", mode=0o750),
    )
    extract(io.BytesIO(archive), dest)
    assert _state(canary) == before
    assert os.readlink(dest / "d") == link and os.readlink(dest / "e" / "f") == link
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750  # the root entry "." still applies to dest


def test_directory_replaced_by_a_file_keeps_the_files_metadata(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = _raw_archive(CpioEntry.directory("x", mode=0o777), CpioEntry.file("x", b"f", mode=0o640))
    extract(io.BytesIO(archive), dest)
    assert (dest / "x").read_bytes() == b"f" and stat.S_IMODE((dest / "x").stat().st_mode) == 0o640


def test_node_and_symlink_metadata_never_follows_links(tmp_path: Path) -> None:
    canary, before = _canary(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = _raw_archive(
        CpioEntry.symlink("l", str(canary), uid=4321, gid=4321),  # lchown + lutimes, no chmod
        CpioEntry.symlink("p", str(canary)),
        CpioEntry.fifo("p", mode=0o666),  # replaces the link; its chmod must not reach the canary
    )
    extract(io.BytesIO(archive), dest)
    assert _state(canary) == before
    fifo = (dest / "p").lstat()
    assert stat.S_ISFIFO(fifo.st_mode) and stat.S_IMODE(fifo.st_mode) == 0o666
    if ROOT:
        assert (dest / "l").lstat().st_uid == 4321


def test_hard_link_to_a_replaced_name_never_writes_through_a_symlink(tmp_path: Path) -> None:
    canary, before = _canary(tmp_path)
    dest = tmp_path / "dest"
    dest.mkdir()
    archive = _raw_archive(
        CpioEntry("f", stat.S_IFREG | 0o644, nlink=2, ino=9),
        CpioEntry.symlink("f", str(canary)),  # the first name of the link group is now a symlink
        CpioEntry("g", stat.S_IFREG | 0o644, nlink=2, ino=9, data=b"pwned"),
    )
    extract(io.BytesIO(archive), dest)
    assert canary.read_text() == "host file\n" and _state(canary) == before
    assert (dest / "g").read_bytes() == b"pwned" and not (dest / "g").is_symlink()


def _zstd_member_with_name_size(namesize: int) -> bytes:
    header = CpioHeader(1, stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0, namesize).pack()
    c = pyzstd.ZstdCompressor(3)
    chunks = [c.compress(header)]
    block = b"A" * (1 << 24)
    for _ in range(namesize >> 24):
        chunks.append(c.compress(block))
    return b"".join(chunks) + c.flush()


def test_zstd_bomb_declaring_a_512_mib_name_fails_fast(tmp_path: Path) -> None:
    import time
    import tracemalloc

    bomb = tmp_path / "initrd.img"
    bomb.write_bytes(_zstd_member_with_name_size(512 << 20))
    assert bomb.stat().st_size < 64 * 1024
    tracemalloc.start()
    start = time.process_time()
    try:
        with pytest.raises(ImageError, match="name size") as info:
            list(iter_entries(bomb))
        seconds = time.process_time() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 1 and peak < 16 << 20, (seconds, peak)
    assert info.value.path == bomb  # the error names the initrd


def test_symlink_target_size_is_capped_before_reading() -> None:
    header = CpioHeader(1, stat.S_IFLNK | 0o777, 0, 0, 1, 0, 1 << 30, 0, 0, 0, 0, 2).pack()
    with pytest.raises(ImageError, match="symlink target of 1073741824 bytes"):
        list(iter_entries(io.BytesIO(header + b"l\0" + b"x" * 100)))


ODD_FIELDS = [
    b"-0000001",
    b"+0000001",
    b" 0000001",
    b"0000001 ",
    b"0_000001",
    b"0x000001",
    b"0000000g",
    b"\xff0000000",
]


@pytest.mark.parametrize("value", ODD_FIELDS)
def test_header_fields_must_be_exactly_eight_hex_digits(value: bytes) -> None:
    good = CpioHeader(1, stat.S_IFREG | 0o644, 0, 0, 1, 0, 1, 0, 0, 0, 0, 2).pack()
    assert CpioHeader.parse(good.lower()) == CpioHeader.parse(good)  # lower case hex is fine
    for field in range(13):
        bad = good[: 6 + 8 * field] + value + good[14 + 8 * field :]
        with pytest.raises(ImageError, match="8 hex digits"):
            CpioHeader.parse(bad)
        with pytest.raises(ImageError):
            list(iter_entries(io.BytesIO(bad + b"a\0" + b"x\0\0\0")))


@pytest.mark.parametrize(
    ("namesize", "field"),
    [
        (4, b"a\0b\0"),  # NUL inside the name
        (3, b"abc"),  # not NUL-terminated
        (1, b"\0"),  # empty name
        (0, b""),  # no room even for the NUL
        (4097, b"a" * 4096 + b"\0"),  # longer than PATH_MAX
    ],
)
def test_bad_names_are_image_errors(namesize: int, field: bytes) -> None:
    header = CpioHeader(1, stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, 0, 0, 0, 0, namesize).pack()
    member = header + field + b"\0" * (-(len(header) + len(field)) & 3)
    with pytest.raises(ImageError):
        list(iter_entries(io.BytesIO(member + CpioEntry(TRAILER, 0).pack())))
    with pytest.raises(ImageError):
        CpioEntry.parse(member)


def _compressed(kind: str, data: bytes) -> bytes:
    import bz2
    import gzip
    import lzma

    return {
        "gzip": lambda: gzip.compress(data),
        "zstd": lambda: pyzstd.compress(data),
        "xz": lambda: lzma.compress(data, check=lzma.CHECK_CRC32),
        "lzma": lambda: lzma.compress(data, format=lzma.FORMAT_ALONE),
        "bzip2": lambda: bz2.compress(data),
    }[kind]()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "xz", "lzma", "bzip2"])
def test_corrupt_and_truncated_compressed_streams_are_image_errors(tmp_path: Path, kind: str) -> None:
    plain = _raw_archive(*(CpioEntry.file(f"f{i}", os.urandom(200)) for i in range(20)))
    good = _compressed(kind, plain)
    assert [e.name for e in read_entries(io.BytesIO(good))] == [f"f{i}" for i in range(20)]
    corrupt = bytearray(good)
    for i in range(len(good) // 3, len(good) - 8, 7):
        corrupt[i] ^= 0x5A
    for data in (bytes(corrupt), good[: len(good) // 2], good[:12]):
        path = tmp_path / "initrd.img"
        path.write_bytes(data)
        with pytest.raises(ImageError) as info:
            read_entries(path)
        assert info.value.path == path
        dest = tmp_path / "dest"
        dest.mkdir(exist_ok=True)
        with pytest.raises(ImageError):
            extract(path, dest)


def test_lzma_dictionary_beyond_the_memory_limit_is_refused() -> None:
    import lzma

    data = bytearray(lzma.compress(_raw_archive(CpioEntry.file("a", b"x")), format=lzma.FORMAT_ALONE))
    data[1:5] = (1 << 30).to_bytes(4, "little")  # the .lzma header's dictionary size: 1 GiB
    with pytest.raises(ImageError, match="MiB to decompress"):
        list(iter_entries(io.BytesIO(bytes(data))))


@pytest.mark.parametrize(
    "evil",
    [
        [CpioEntry.file("a/" + "n" * 256, b"x")],  # ENAMETOOLONG: refused before any syscall
        [CpioEntry.file("f", b"x"), CpioEntry.file("f/g", b"x")],  # ENOTDIR
        [CpioEntry.symlink("l", "l"), CpioEntry.file("l/x", b"x")],  # ELOOP
        [CpioEntry.file("d/x", b"x"), CpioEntry.file("d", b"x")],  # non-empty dir replaced
        [CpioEntry.char_device("dev/null", 0x1000, 3)],  # impossible device number
        [CpioEntry.symlink("l", "")],  # empty target
    ],
)
def test_extraction_failures_are_image_errors(tmp_path: Path, evil: list[CpioEntry]) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ImageError):
        extract(io.BytesIO(_raw_archive(*evil)), dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_many_tiny_segments_take_linear_time() -> None:
    """Each compressed segment pushes back the input after its end: that must not copy the rest
    of the file per segment (about 20 us per segment is Python's own overhead)."""
    import time

    frame = pyzstd.compress(b"")
    data = frame * (1_000_000 // len(frame))
    start = time.process_time()
    assert list(iter_entries(io.BytesIO(data))) == []
    assert time.process_time() - start < 8


def test_gigabytes_of_zero_padding_are_skipped_quickly() -> None:
    import time

    c = pyzstd.ZstdCompressor(3)
    zeros = bytes(16 << 20)
    chunks = [c.compress(zeros) for _ in range(16)]  # 256 MiB of padding in about 8 KiB
    bomb = b"".join(chunks) + c.compress(_raw_archive(CpioEntry.file("a", b"x"))) + c.flush()
    assert len(bomb) < 64 * 1024
    start = time.process_time()
    assert [m.name for m in iter_entries(io.BytesIO(bomb))] == ["a"]
    assert time.process_time() - start < 2


def test_deep_paths_use_a_bounded_number_of_fds(tmp_path: Path) -> None:
    """Parents are opened one component at a time; the fd cache stays bounded at any depth."""
    deep = "/".join(["d"] * 300)
    entries = [CpioEntry.directory("/".join(["d"] * i), mode=0o555) for i in range(1, 301)]
    entries += [CpioEntry.file(f"{deep}/f{i}", b"x") for i in range(3)]
    entries += [CpioEntry.file(f"d/d/g{i}", b"y") for i in range(3)]
    dest = tmp_path / "dest"
    dest.mkdir()
    fds = len(os.listdir("/proc/self/fd"))
    assert extract(io.BytesIO(_raw_archive(*entries)), dest).entries == 306
    assert len(os.listdir("/proc/self/fd")) == fds
    fd = os.open(dest, os.O_RDONLY)
    try:
        for _ in range(300):
            nfd = os.open("d", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
            assert stat.S_IMODE(os.fstat(nfd).st_mode) == 0o555
            os.close(fd)
            fd = nfd
        assert sorted(os.listdir(fd)) == ["f0", "f1", "f2"]
    finally:
        os.close(fd)
    for dirpath, dirnames, _ in os.walk(dest):  # let pytest remove the tree
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
