"""open_image() opens real crafted disks read-only as a writable merged tree and always cleans up."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import ImageError, UsageError
from liveos.image import DiskFormat, DiskImage, open_image
from liveos.settings import Arch
from tests.imagekit import (
    PartSpec,
    convert,
    esp_tree,
    make_disk,
    new_uuid,
    os_tree,
    our_loops,
    our_mounts,
    sh,
    sha256,
    write_tree,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]


@dataclass(frozen=True)
class Built:
    raw: Path
    root_uuid: str


@pytest.fixture(scope="module")
def simple(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """GPT: FAT ESP (by volume id) + ext4 root (by UUID)."""
    work = tmp_path_factory.mktemp("simple")
    root_uuid = new_uuid()
    fstab = f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\n"
    specs = [
        PartSpec(32, "vfat", esp_tree(work / "esp"), fs_uuid="ABCD1234", esp=True, name="ESP"),
        PartSpec(48, "ext4", os_tree(work / "root", fstab), fs_uuid=root_uuid, name="root"),
    ]
    return Built(make_disk(work / "simple.raw", specs).path, root_uuid)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """A work dir that must be empty again, with nothing mounted, when the test ends."""
    work = tmp_path / "work"
    work.mkdir()
    yield work
    assert our_mounts(str(work)) == [], "a mount was left behind"
    assert not any(work.iterdir()), "the scratch dir was not removed"


@contextlib.contextmanager
def open_disk(path: Path, *, workdir: Path) -> Iterator[DiskImage]:
    """Open a disk image (not a liveos ISO)."""
    with open_image(path, workdir=workdir) as image:
        assert isinstance(image, DiskImage)
        yield image


def open_fails(image: Path, workdir: Path, pattern: str) -> None:
    """Opening ``image`` raises an ImageError matching ``pattern``."""
    with pytest.raises(ImageError, match=pattern), open_disk(image, workdir=workdir):
        pass


def assert_released(image: Path, workdir: Path) -> None:
    assert our_mounts(str(workdir)) == []
    assert our_loops(image, workdir) == []
    assert not any(workdir.iterdir())


@pytest.mark.parametrize("fmt", ["raw", "qcow2", "vhd", "vhd-fixed", "vhdx"])
def test_open_every_format(simple: Built, fmt: str, workdir: Path) -> None:
    image = simple.raw if fmt == "raw" else convert(simple.raw, fmt)
    before = sha256(image)
    with open_disk(image, workdir=workdir) as img:
        assert img.format is DiskFormat(fmt)
        assert img.arch is Arch.X64
        assert [(str(m.mountpoint), m.fstype) for m in img.mounts] == [("/", "ext4"), ("/boot/efi", "vfat")]
        assert img.rootfs.read_text("/usr/share/marker") == "root filesystem\n"
        assert img.rootfs.os_release()["ID"] == "testos"
        assert img.rootfs.read_text("/boot/efi/EFI/BOOT/grub.cfg") == "set timeout=1\n"
        assert img.esp is not None and img.esp.mountpoint == PurePosixPath("/boot/efi")
        assert img.esp.volume.volume_id == "ABCD-1234"
        assert [p.number for p in img.partitions] == [1, 2]
        # writes land in the overlay upper dirs, never in the image
        img.rootfs.write_text("/etc/new-file", "written\n")
        img.rootfs.write_text("/boot/efi/EFI/BOOT/grub.cfg", "changed\n")
        img.rootfs.remove("/usr/share/marker")
        root_upper, esp_upper = img.mounts[0].upper, img.mounts[1].upper
        assert (root_upper / "etc" / "new-file").read_text() == "written\n"
        assert (esp_upper / "EFI" / "BOOT" / "grub.cfg").read_text() == "changed\n"
        assert (img.esp.extracted / "EFI" / "BOOT" / "grub.cfg").read_text() == "set timeout=1\n"
        assert (img.mounts[0].lower / "usr" / "share" / "marker").exists()
        assert not img.rootfs.exists("/usr/share/marker")
        assert any(str(img.root) in line for line in our_mounts(str(workdir)))
    assert sha256(image) == before, "the input image changed"
    assert_released(image, workdir)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GPT: ESP (by LABEL) + ext4 /boot (by PARTUUID) + xfs root (by UUID), in odd partition order."""
    work = tmp_path_factory.mktemp("split")
    root_uuid, boot_partuuid = new_uuid(), new_uuid()
    boot = write_tree(work / "boot", {"/vmlinuz-6.1.0": "kernel\n", "/grub/grub.cfg": "menu\n"})
    (boot / "efi").mkdir()
    fstab = (
        f"UUID={root_uuid} / xfs defaults 0 1\n"
        "LABEL=EFI /boot/efi vfat umask=0077 0 1\n"  # listed before its parent on purpose
        f"PARTUUID={boot_partuuid} /boot ext4 defaults 0 2\n"
        "tmpfs /tmp tmpfs defaults 0 0\n"
        "UUID=00000000-0000-0000-0000-000000000001 /data ext4 nofail 0 0\n"
    )
    specs = [
        PartSpec(300, "xfs", os_tree(work / "root", fstab), fs_uuid=root_uuid, name="root"),
        PartSpec(24, "ext4", boot, name="boot"),
        PartSpec(32, "vfat", esp_tree(work / "esp", machine=0xAA64), label="EFI", esp=True),
    ]
    disk = make_disk(work / "split.raw", specs)
    sh("sgdisk", "-u", f"2:{boot_partuuid}", disk.path)
    return disk.path


def test_open_split_layout(split: Path, workdir: Path) -> None:
    before = sha256(split)
    with open_disk(split, workdir=workdir) as img:
        assert [(str(m.mountpoint), m.fstype, m.partition.number) for m in img.mounts] == [
            ("/", "xfs", 1),
            ("/boot", "ext4", 2),
            ("/boot/efi", "vfat", 3),
        ]
        assert img.rootfs.read_text("/boot/vmlinuz-6.1.0") == "kernel\n"
        assert [k.version for k in img.rootfs.kernels()] == ["6.1.0"]
        assert img.rootfs.exists("/boot/efi/EFI/BOOT/BOOTAA64.EFI")
        assert img.arch is Arch.AA64  # the image decides, not the x86 host
        img.rootfs.write_text("/boot/new", "x\n")
        assert (img.mounts[1].upper / "new").read_text() == "x\n"
    assert sha256(split) == before
    assert_released(split, workdir)


def test_mbr_layout_with_device_paths(tmp_path: Path, workdir: Path) -> None:
    fstab = "/dev/sda2 / ext4 defaults 0 1\nPARTUUID=1234abcd-01 /boot/efi vfat defaults 0 1\n"
    specs = [
        PartSpec(16, "vfat", esp_tree(tmp_path / "esp"), esp=True),
        PartSpec(24, "ext4", os_tree(tmp_path / "root", fstab)),
    ]
    disk = make_disk(tmp_path / "mbr.raw", specs, table="mbr")
    with open_disk(disk.path, workdir=workdir) as img:
        assert img.table.kind == "mbr"
        assert [str(m.mountpoint) for m in img.mounts] == ["/", "/boot/efi"]
        assert img.rootfs.exists("/boot/efi/EFI/BOOT/BOOTX64.EFI")
    assert_released(disk.path, workdir)


def test_btrfs_root_in_a_subvolume(tmp_path: Path, workdir: Path) -> None:
    fstab = "LABEL=broot / btrfs subvol=@,compress=zstd 0 0\n"
    specs = [
        PartSpec(16, "vfat", esp_tree(tmp_path / "esp"), esp=True),
        PartSpec(128, "btrfs", os_tree(tmp_path / "root", fstab), label="broot", subvol="@"),
    ]
    disk = make_disk(tmp_path / "btrfs.raw", specs)
    with open_disk(disk.path, workdir=workdir) as img:
        assert [(str(m.mountpoint), m.subvol) for m in img.mounts] == [("/", "@")]
        assert img.rootfs.read_text("/usr/share/marker") == "root filesystem\n"
        assert img.esp is not None and img.esp.mountpoint is None  # not in fstab, still extracted
        assert img.arch is Arch.X64
    assert_released(disk.path, workdir)


# -- cleanup on every way out ---------------------------------------------------------------
class Boom(Exception):
    pass


@pytest.mark.parametrize("raised", [Boom, KeyboardInterrupt])
def test_released_on_exception_and_ctrl_c(simple: Built, workdir: Path, raised: type[BaseException]) -> None:
    image = convert(simple.raw, "qcow2")
    with pytest.raises(raised), open_disk(image, workdir=workdir) as img:
        img.rootfs.write_text("/etc/x", "x")
        raise raised()
    assert_released(image, workdir)


def test_released_on_sigterm(simple: Built, workdir: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exc, open_disk(simple.raw, workdir=workdir):
        os.kill(os.getpid(), signal.SIGTERM)
        signal.pause()  # never reached: the handler raises
    assert exc.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == previous
    assert_released(simple.raw, workdir)


def test_mounts_are_private_to_the_opening_thread(simple: Built, workdir: Path) -> None:
    """Other processes (here: a fresh `findmnt`) do not see the image's mounts; this thread does."""
    with open_disk(simple.raw, workdir=workdir) as img:
        assert our_mounts(str(img.root)), "the opened tree should be mounted for liveos itself"
        host_view = Path("/proc/1/mountinfo").read_text()
        assert str(img.root) not in host_view, "an image mount leaked into the host's mount table"
        assert not (img.root / "proc" / "self").exists(), "nothing of the host is mounted in the tree"
    assert_released(simple.raw, workdir)


# -- broken and hostile inputs --------------------------------------------------------------
def test_iso_not_written_by_liveos_is_refused(tmp_path: Path, workdir: Path) -> None:
    write_tree(tmp_path / "tree", {"/a": "a\n"})
    iso = tmp_path / "live.img"
    sh("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, tmp_path / "tree")
    with pytest.raises(UsageError, match="not written by liveos"), open_image(iso, workdir=workdir):
        pass


def test_empty_and_zeroed_inputs(tmp_path: Path, workdir: Path) -> None:
    empty = tmp_path / "empty.raw"
    empty.touch()
    with pytest.raises(ImageError, match="empty"), open_disk(empty, workdir=workdir):
        pass
    zeroed = tmp_path / "zeroed.qcow2"
    sh("qemu-img", "create", "-f", "qcow2", zeroed, "16M")
    with (
        pytest.raises(ImageError, match="no readable partition table"),
        open_disk(zeroed, workdir=workdir),
    ):
        pass
    assert_released(zeroed, workdir)


def test_no_root_candidate(tmp_path: Path, workdir: Path) -> None:
    tree = write_tree(tmp_path / "data", {"/README": "no fstab here\n"})
    disk = make_disk(tmp_path / "noroot.raw", [PartSpec(16, "vfat", esp=True), PartSpec(16, "ext4", tree)])
    open_fails(disk.path, workdir, r"failed to find rootfs.*partition 2 \(ext4\)")
    assert_released(disk.path, workdir)


def test_two_root_candidates(tmp_path: Path, workdir: Path) -> None:
    one = os_tree(tmp_path / "one", "LABEL=one / ext4 defaults 0 1\n")
    two = os_tree(tmp_path / "two", "LABEL=two / ext4 defaults 0 1\n")
    disk = make_disk(
        tmp_path / "two.raw", [PartSpec(16, "ext4", one, label="one"), PartSpec(16, "ext4", two)]
    )
    open_fails(disk.path, workdir, r"too many rootfs partition candidates \(2\)")
    assert_released(disk.path, workdir)


def test_hostile_fstab_symlink_resolves_inside_the_image(tmp_path: Path, workdir: Path) -> None:
    # /etc/fstab -> /../../../etc/passwd: inside the image that is the image's own /etc/passwd, which
    # here holds a valid fstab. Resolved on the host it would read the host's passwd and fail to parse.
    fstab = "LABEL=hostile / ext4 defaults 0 1\n"
    root = os_tree(tmp_path / "root", "", {"/etc/passwd": fstab})
    (root / "etc" / "fstab").unlink()
    (root / "etc" / "fstab").symlink_to("/../../../etc/passwd")
    disk = make_disk(tmp_path / "hostile.raw", [PartSpec(24, "ext4", root, label="hostile")])
    with open_disk(disk.path, workdir=workdir) as img:
        assert [str(m.mountpoint) for m in img.mounts] == ["/"]
        assert img.rootfs.read_text("/etc/fstab") == fstab
    assert_released(disk.path, workdir)


def test_fstab_naming_a_missing_partition(tmp_path: Path, workdir: Path) -> None:
    fstab = "LABEL=r / ext4 defaults 0 1\nUUID=0000-0000 /boot/efi vfat defaults 0 1\n"
    disk = make_disk(
        tmp_path / "missing.raw", [PartSpec(24, "ext4", os_tree(tmp_path / "root", fstab), label="r")]
    )
    open_fails(disk.path, workdir, r"UUID=0000-0000 for /boot/efi matches no partition")
    assert_released(disk.path, workdir)
