"""qcow2/vhd/vhdx are read on demand through qemu-storage-daemon's FUSE export, never converted.

What the export must give: the disk's bytes, a FUSE mount only in liveos' private mount namespace
(never in the host's), loop devices and mounts that work on it -- and nothing left when the image is
closed, when the block raises, or when the process that opened it is killed (SIGKILL included):
no daemon, no FUSE mount, no loop device. A corrupt cluster read later is a liveos error.
"""

from __future__ import annotations

import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import ImageError
from liveos.image import DiskImage, open_image
from liveos.image.formats import RawBacking
from liveos.settings import Arch
from tests.conftest import FixtureImageFactory
from tests.imagekit import comm, descendants, our_loops, our_mounts, sh, sha256
from tests.liveimagekit import FSTAB, leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="FUSE exports, loop devices and mounts need root"),
]
REPO = Path(__file__).resolve().parent.parent.parent
DAEMONS = ("qemu-storage-da", "qemu-nbd")  #: /proc/PID/comm (15 characters at most)
MIB = 1 << 20

#: Opens an image, prints its raw view's path, waits to be signalled.
OPENER = """
import sys, time
from pathlib import Path
from liveos.image import open_image
with open_image(sys.argv[1], workdir=Path(sys.argv[2])) as image:
    print(image.raw.path, flush=True)
    time.sleep(600)
"""


def daemons(pid: int) -> set[int]:
    """qemu-storage-daemon / qemu-nbd processes below ``pid``."""
    return {child for child in descendants(pid) if comm(child) in DAEMONS}


def fuse_lines(mountinfo: str, below: Path) -> list[str]:
    """Lines of a mountinfo text that are FUSE mounts at or below ``below``."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if fields[fields.index("-") + 1].startswith("fuse") and fields[4].startswith(str(below)):
            found.append(line)
    return found


def host_mountinfo() -> str:
    return Path("/proc/1/mountinfo").read_text()


def assert_nothing_left(workdir: Path, *, scratch_may_remain: bool = False) -> None:
    assert daemons(os.getpid()) == set(), "a daemon outlived the image"
    assert our_mounts(str(workdir)) == []
    assert fuse_lines(host_mountinfo(), workdir) == []
    assert our_loops(workdir) == []
    if not scratch_may_remain:
        assert list(workdir.iterdir()) == []


def same_bytes(view: Path, raw: Path, size: int) -> None:
    """The view reads as the raw disk: its start and end, and 16 random 1 MiB windows."""
    rng = random.Random(20261201)
    offsets = [0, size - MIB, *(rng.randrange(0, size - MIB, 4096) for _ in range(16))]
    with view.open("rb") as a, raw.open("rb") as b:
        for offset in offsets:
            a.seek(offset)
            b.seek(offset)
            assert a.read(MIB) == b.read(MIB), f"the view differs from the disk at {offset}"


@pytest.mark.parametrize("fmt", ["qcow2", "vhd", "vhdx"])
def test_fixture_opens_through_a_private_fuse_export(
    fixture_image: FixtureImageFactory, fmt: str, tmp_path: Path
) -> None:
    image = fixture_image("azl", fmt)
    raw = fixture_image("azl", "raw")
    digest = sha256(image.path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    with open_image(image.path, workdir=workdir) as opened:
        assert isinstance(opened, DiskImage)
        view = opened.raw
        assert view.backing is RawBacking.FUSE and workdir in view.path.parents
        assert view.size == raw.path.stat().st_size
        assert len(fuse_lines(Path("/proc/thread-self/mountinfo").read_text(), view.path)) == 1
        assert fuse_lines(host_mountinfo(), workdir) == [], "the FUSE mount is in the host's table"
        assert [comm(pid) for pid in daemons(os.getpid())] == ["qemu-storage-da"]
        loops = our_loops(view.path)
        assert loops and all(f"offset {opened.mounts[0].partition.start}" in line for line in loops)
        assert {(str(m.mountpoint), m.fstype) for m in opened.mounts} == {
            ("/", "ext4"),
            ("/boot/efi", "vfat"),
        }
        assert "bookworm" in opened.rootfs.read_text("/etc/os-release")
        assert opened.arch is Arch.X64
        assert opened.esp is not None and (opened.esp.extracted / "EFI/BOOT/grubx64.efi").is_file()
        same_bytes(view.path, raw.path, view.size)
    assert_nothing_left(workdir)
    assert sha256(image.path) == digest, "the input changed"


def test_exception_while_open_leaves_nothing(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    image = fixture_image("azl", "qcow2").path
    workdir = tmp_path / "work"
    workdir.mkdir()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), open_image(image, workdir=workdir) as opened:
        assert opened.rootfs.is_file("/etc/fstab")
        raise Boom
    assert_nothing_left(workdir)


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        proc.kill()
        raise AssertionError(f"the opener did not open the image within {timeout} s")
    line = proc.stdout.readline().strip()
    if not line:
        proc.wait()
        raise AssertionError(f"the opener failed: {proc.stderr.read() if proc.stderr else ''}")
    return line


@pytest.mark.parametrize(
    ("signum", "group"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGKILL", "SIGTERM", "Ctrl-C"],
)
def test_killed_opener_leaves_no_daemon_mount_or_loop(
    fixture_image: FixtureImageFactory, tmp_path: Path, signum: int, group: bool
) -> None:
    image = fixture_image("azl", "qcow2").path
    workdir = tmp_path / "work"
    workdir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(image), str(workdir)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    below: set[int] = set()
    try:
        view = Path(_read_line(proc, timeout=120))
        below = descendants(proc.pid)
        served_by = {pid for pid in below if comm(pid) in DAEMONS}
        assert [comm(pid) for pid in served_by] == ["qemu-storage-da"]
        assert fuse_lines(Path(f"/proc/{proc.pid}/mountinfo").read_text(), view)
        assert fuse_lines(host_mountinfo(), workdir) == [], "the FUSE mount is in the host's table"
        assert our_loops(workdir), "no loop device on the export"
        if group:
            os.killpg(proc.pid, signum)  # Ctrl-C: the daemon gets SIGINT too
        else:
            os.kill(proc.pid, signum)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        alive = {pid for pid in below if comm(pid)}
        if not alive and not our_loops(workdir):
            break
        time.sleep(0.1)
    assert {pid for pid in below if comm(pid)} == set(), "a process the opener started outlived it"
    assert our_loops(workdir) == [], "a loop device outlived the opener"
    assert fuse_lines(host_mountinfo(), workdir) == []
    if signum == signal.SIGKILL:
        # Nothing can catch SIGKILL: the scratch files stay until the next opening sweeps them.
        with open_image(image, workdir=workdir):
            pass
    assert list(workdir.iterdir()) == []


def _compressed_cluster(qcow2: Path, guest_offset: int) -> int:
    """Host offset of the compressed cluster holding ``guest_offset`` (qcow2 v2/v3 L1/L2 tables)."""
    with qcow2.open("rb") as f:
        header = f.read(48)
        (cluster_bits,) = struct.unpack_from(">I", header, 20)
        l1_size, l1_offset = struct.unpack_from(">IQ", header, 36)
        cluster = 1 << cluster_bits
        l2_entries = cluster // 8
        index = guest_offset // cluster
        assert index // l2_entries < l1_size
        f.seek(l1_offset + 8 * (index // l2_entries))
        (l1_entry,) = struct.unpack(">Q", f.read(8))
        f.seek((l1_entry & 0x00FFFFFFFFFFFE00) + 8 * (index % l2_entries))
        l2_entry: int = struct.unpack(">Q", f.read(8))[0]
    assert l2_entry & (1 << 62), "the cluster is not compressed"
    host_offset: int = l2_entry & ((1 << (62 - (cluster_bits - 8))) - 1)
    return host_offset


def test_corrupt_cluster_read_later_is_an_image_error(tmp_path: Path) -> None:
    marker = "# liveos: this fstab lies in a cluster the test corrupts\n"
    raw = live_image(tmp_path, root={"/etc/fstab": marker + FSTAB})
    found = raw.read_bytes().find(marker.encode())
    assert found > 0
    qcow2 = tmp_path / "corrupt.qcow2"
    sh("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow2)
    where = _compressed_cluster(qcow2, found)
    with qcow2.open("r+b") as f:  # garbage instead of deflate data; the metadata stays intact
        f.seek(where)
        f.write(b"\xff" * 256)
    workdir = tmp_path / "work"
    workdir.mkdir()
    unreadable = r"corrupt\.qcow2.*could not be read"
    with pytest.raises(ImageError, match=unreadable) as exc, open_image(qcow2, workdir=workdir):
        pass
    assert isinstance(exc.value.__cause__, OSError)
    assert exc.value.hint
    assert leftovers(qcow2, workdir) == []
    assert_nothing_left(workdir)


def test_open_mounts_the_tree_from_the_export(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """Reading a whole file through ext4 -> loop -> FUSE -> qcow2 gives the bytes of the raw disk's."""
    qcow2, raw = fixture_image("azl", "qcow2").path, fixture_image("azl", "raw").path
    workdir = tmp_path / "work"
    workdir.mkdir()
    with open_image(qcow2, workdir=workdir) as a, open_image(raw, workdir=workdir) as b:
        assert isinstance(a, DiskImage) and isinstance(b, DiskImage)
        assert b.raw.backing is RawBacking.INPUT
        kernels = sorted(p for p in (a.root / "boot").iterdir() if p.name.startswith("vmlinuz-"))
        assert kernels
        for path in (PurePosixPath("/etc/fstab"), PurePosixPath("/boot") / kernels[-1].name):
            assert sha256(a.root / path.relative_to("/")) == sha256(b.root / path.relative_to("/"))
    assert_nothing_left(workdir)
