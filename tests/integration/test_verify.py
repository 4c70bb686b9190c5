"""verify on real media: what liveos builds from the azl fixture passes every check, and each way
of damaging it fails exactly the check concerned while the others still pass.

Three builds per module (bootstrap ISO, full-os ISO, bootstrap PXE folder); every test damages a
copy (an ISO is patched at the byte offsets of the file it damages, read from its ISO 9660
directory; a PXE folder is hard-link copied and one file replaced). ``inspect`` is checked on the
same media and on the disk image itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.boottest import GUEST_HTTP_ADDR
from liveos.cli import main
from liveos.cpio.reader import extract
from liveos.cpio.writer import write_newc
from liveos.image.isofs import IsoReader
from liveos.inspection import DiskInfo, MediaInfo, MediaKind, inspect
from liveos.live import LiveOS
from liveos.settings import Compression, InitramfsMode
from liveos.verification import CheckKind, VerifyReport, verify
from tests.conftest import FixtureImageFactory

pytestmark = [pytest.mark.root]

LABEL = "VERIFY_ME"
ROOT_IMAGE = "/liveos/rootfs.img"
STATE = "/liveos/state.json"
EFIBOOT = "/boot/efiboot.img"


@dataclass(frozen=True)
class Built:
    disk: Path
    bootstrap: Path  #: ISO
    full_os: Path  #: ISO
    pxe: Path  #: bootstrap PXE folder (carries /live.iso)
    kernel: str  #: the kernel version
    bootstrap_md5: str | None  #: the implanted MD5 the bootstrap ISO's BuildResult reported


@pytest.fixture(scope="module")
def built(fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    image = fixture_image("azl", "qcow2")
    out = tmp_path_factory.mktemp("media")
    with LiveOS.open(image.path) as live:
        media = live.with_label(LABEL)
        bootstrap_md5 = media.bootstrap().write_iso(out / "bootstrap.iso").implanted_md5
        media.full_os().write_iso(out / "full-os.iso")
        media.bootstrap().write_pxe(out / "pxe", base_url=f"http://{GUEST_HTTP_ADDR}/")
    yield Built(
        image.path,
        out / "bootstrap.iso",
        out / "full-os.iso",
        out / "pxe",
        image.kernel_version,
        bootstrap_md5,
    )
    shutil.rmtree(out)  # hundreds of MB: not kept for pytest's last three runs


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A directory for damaged copies, removed after the test (they are big)."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def copy_iso(iso: Path, scratch: Path) -> Path:
    out = scratch / iso.name
    subprocess.run(["cp", "--reflink=auto", str(iso), str(out)], check=True)
    return out


def copy_folder(folder: Path, scratch: Path) -> Path:
    """Hard links: the test replaces files (unlink + write), never writes into the originals."""
    out = scratch / folder.name
    subprocess.run(["cp", "-al", str(folder), str(out)], check=True)
    return out


def extent(iso: Path, path: str) -> tuple[int, int]:
    with IsoReader(iso) as reader:
        return reader.extent(path)


def patch(iso: Path, offset: int, data: bytes) -> None:
    with iso.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def only_failure(report: VerifyReport, kind: CheckKind, media: str = "") -> str:
    """The one failed check is ``kind`` (of ``media``); returns its detail. The implanted MD5
    covers nearly every byte of an ISO, so its failure beside ``kind`` is expected, not counted."""
    failures = [(c.media, c.kind) for c in report.failures if c.kind is not CheckKind.MD5]
    assert failures == [(media, kind)], report.describe()
    return report.check(kind, media).detail


# ------------------------------------------------------------------------------ good media


def test_a_bootstrap_iso_passes_every_check(built: Built) -> None:
    report = verify(built.bootstrap)
    assert report.ok, report.describe()
    assert [c.kind for c in report.checks] == [
        CheckKind.STATE, CheckKind.GRUB_REFERENCES, CheckKind.LABELS, CheckKind.EFI_IMAGE,
        CheckKind.BIOS_BOOT, CheckKind.PARTITION_TABLES, CheckKind.INITRD_MODULES, CheckKind.ROOT_IMAGE,
        CheckKind.MD5,
    ]  # fmt: skip
    assert "matches" in report.check(CheckKind.MD5).detail
    assert built.bootstrap_md5 is not None and built.bootstrap_md5 in report.check(CheckKind.MD5).detail
    checked = subprocess.run(["checkisomd5", str(built.bootstrap)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # the independent checker agrees
    assert "dmsquash-live" in report.check(CheckKind.INITRD_MODULES).detail
    assert "every block decompressed" in report.check(CheckKind.ROOT_IMAGE).detail
    assert repr(LABEL) in report.check(CheckKind.LABELS).detail


def test_a_full_os_iso_passes_every_check(built: Built) -> None:
    report = verify(built.full_os)
    assert report.ok, report.describe()
    assert "read to the end" in report.check(CheckKind.ROOT_IMAGE).detail


def test_a_bootstrap_pxe_folder_passes_every_check_and_so_does_its_iso(built: Built) -> None:
    report = verify(built.pxe)
    assert report.ok, report.describe()
    assert "livenet" in report.check(CheckKind.INITRD_MODULES).detail
    assert "/live.iso" in report.check(CheckKind.LABELS).detail
    carried = {c.kind for c in report.checks if c.media == "/live.iso"}
    assert carried == set(CheckKind)


# ------------------------------------------------------------------------------ damaged ISOs


def test_a_flipped_byte_in_the_gpt_header_fails_the_partition_tables(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    patch(iso, 512 + 40, b"\x77")  # first usable LBA: the header's CRC no longer matches
    assert "primary GPT header" in only_failure(verify(iso), CheckKind.PARTITION_TABLES)


def test_a_damaged_backup_gpt_fails_the_partition_tables(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    patch(iso, iso.stat().st_size - 33 * 512 + 60, b"\x77")  # in the backup entry array
    detail = only_failure(verify(iso), CheckKind.PARTITION_TABLES)
    assert "backup GPT partition entries have a bad CRC" in detail
    assert main(["verify", str(iso)]) == 1


def test_another_volume_label_fails_the_labels(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    patch(iso, 16 * 2048 + 40, b"OTHER_LABEL".ljust(32))  # the primary volume descriptor's label
    detail = only_failure(verify(iso), CheckKind.LABELS)
    assert "ISO volume label 'OTHER_LABEL'" in detail and f"state.json {LABEL!r}" in detail


def test_damaged_squashfs_blocks_fail_the_root_image(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    offset, size = extent(iso, ROOT_IMAGE)
    patch(iso, offset + size // 2, b"\x55" * 65536)  # data blocks: only a full read notices
    assert "not readable end to end" in only_failure(verify(iso), CheckKind.ROOT_IMAGE)


def test_a_truncated_squashfs_fails_the_root_image(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    offset, size = extent(iso, ROOT_IMAGE)
    patch(iso, offset + size // 2, bytes(size - size // 2))  # its second half lost
    only_failure(verify(iso), CheckKind.ROOT_IMAGE)


def test_a_corrupt_state_file_fails_the_state(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    offset, _ = extent(iso, STATE)
    patch(iso, offset, b"[")
    assert "not valid JSON" in only_failure(verify(iso), CheckKind.STATE)


def test_an_el_torito_image_without_grub_fails_the_efi_image(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.bootstrap, scratch)
    offset, _ = extent(iso, EFIBOOT)
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    subprocess.run(["mdel", "-i", f"{iso}@@{offset}", "::/EFI/BOOT/grubx64.efi"], check=True, env=env)
    assert "grubx64.efi" in only_failure(verify(iso), CheckKind.EFI_IMAGE)


def test_a_corrupt_full_os_initrd_fails_the_root_image(built: Built, scratch: Path) -> None:
    iso = copy_iso(built.full_os, scratch)
    offset, size = extent(iso, "/boot/initrd.img")
    patch(iso, offset + size // 2, b"\x55" * 4096)
    assert "initrd" in only_failure(verify(iso), CheckKind.ROOT_IMAGE)


# ------------------------------------------------------------------------------ damaged PXE folders


def test_a_pxe_folder_without_its_kernel_fails_the_references(built: Built, scratch: Path) -> None:
    folder = copy_folder(built.pxe, scratch)
    (folder / f"boot/vmlinuz-{built.kernel}").unlink()
    detail = only_failure(verify(folder), CheckKind.GRUB_REFERENCES)
    assert f"linux /boot/vmlinuz-{built.kernel}': no such file" in detail


def test_an_initrd_without_dmsquash_live_fails_the_modules(built: Built, scratch: Path) -> None:
    folder = copy_folder(built.pxe, scratch)
    initrd = folder / f"boot/initramfs-{built.kernel}.img"
    tree = scratch / "initrd"
    tree.mkdir()
    extract(initrd, tree)
    removed = [p for p in tree.rglob("*") if "dmsquash-live" in p.name]
    assert removed, "the built initrd has no dmsquash-live files"
    for path in removed:
        path.unlink()
    modules = tree / "usr/lib/dracut/modules.txt"
    modules.write_text("".join(m + "\n" for m in modules.read_text().split() if m != "dmsquash-live"))
    initrd.unlink()
    write_newc(tree, initrd, compression=Compression.ZSTD, level=1)
    detail = only_failure(verify(folder), CheckKind.INITRD_MODULES)
    assert "lacks the dracut module(s) dmsquash-live" in detail and "livenet" not in detail


# ------------------------------------------------------------------------------ inspect


def test_inspect_an_iso_and_a_pxe_folder(built: Built) -> None:
    info = inspect(built.bootstrap)
    assert isinstance(info, MediaInfo) and info.kind is MediaKind.ISO
    assert info.label == LABEL and info.mode is InitramfsMode.BOOTSTRAP
    assert all(f"root=live:CDLABEL={LABEL}" in e.cmdline for e in info.entries) and info.entries
    sizes = {f.path: f.size for f in info.files}
    assert sizes[ROOT_IMAGE] == extent(built.bootstrap, ROOT_IMAGE)[1]
    assert "rootfs.img" in info.describe()
    pxe = inspect(built.pxe)
    assert isinstance(pxe, MediaInfo) and pxe.kind is MediaKind.PXE_FOLDER and pxe.label == LABEL
    assert pxe.iso is not None and pxe.iso.label == LABEL
    assert any(f"root=live:http://{GUEST_HTTP_ADDR}/live.iso" in e.cmdline for e in pxe.entries)


def test_inspect_a_disk_image(built: Built) -> None:
    info = inspect(built.disk)
    assert isinstance(info, DiskInfo)
    summary = info.summary
    assert summary.format == "qcow2" and summary.table == "gpt" and summary.os_name
    assert [k.version for k in summary.kernels] == [built.kernel]
    assert info.entries and info.entries[0].kernel == f"/boot/vmlinuz-{built.kernel}"
    assert "boot entries" in info.describe() and info.to_dict()["entries"]
