"""Debian 13 (trixie: dracut 106, kernel 6.12, grub 2.12) through every mode, and erofs roots.

Three boots, each waiting for the fixture's marker (UEFI, OVMF + TCG, the CPU without ERMS: see
:data:`NO_ERMS`):

* the bootstrap ISO from CD, built with an **erofs** root image: proves dracut 106's
  dmsquash-live boots liveos' bootstrap media and mounts erofs from ``/liveos/rootfs.img``;
* the full-os ISO from CD;
* a bootstrap PXE bundle over HTTP livenet, with the default **squashfs** root image in the ISO
  it downloads: proves squashfs on dracut 106 and its livenet with network-legacy.

Each medium is built once (module-scoped). The refusals (erofs with dracut 059, erofs in full-os
mode) only plan, so they cost no boot.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from liveos.boottest import GUEST_HTTP_ADDR, BootConfig, CdRom, Firmware, PxeBoot, boot
from liveos.erofs import dracut_boots_erofs, is_erofs
from liveos.errors import UsageError
from liveos.image.isofs import IsoReader
from liveos.initramfs.dracut import DracutInfo
from liveos.live import LiveOS
from liveos.result import BuildResult
from liveos.settings import RootFsFormat
from liveos.verification import verify
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage

pytestmark = [pytest.mark.root]

LABEL = "LIVEOS_TRIXIE"
BOOT_TIMEOUT = 600.0
#: full-os keeps the whole OS in RAM; livenet downloads the ISO into RAM next to the system.
BIG_MEMORY_MIB = 3584
#: QEMU's ``-cpu max`` without ERMS. With it, Linux zeroes pages with ``rep stosb``
#: (``clear_page_erms``), which TCG emulates byte by byte: trixie's boots then stall for minutes
#: in soft lockups wherever many fresh pages are needed (systemd 257 verifying its bpf-restrict-fs
#: LSM program: 290 s; erofs decompressing into new pages). Measured: bpf-restrict-fs attached at
#: 432 s with ERMS, 10 s without. An emulator setting only: media and image stay as shipped.
NO_ERMS = ("-cpu", "max,erms=off")
#: What Linux 6.12 prints when it mounts an erofs (the loop device dmsquash-live set up).
EROFS_MOUNTED = re.compile(r"erofs: \(device loop\d+\): mounted")


def root_image_header(iso: Path) -> bytes:
    """The first 4 KiB of ``/liveos/rootfs.img`` on ``iso``."""
    with IsoReader(iso) as reader:
        offset, _size = reader.extent("/liveos/rootfs.img")
    with iso.open("rb") as f:
        f.seek(offset)
        return f.read(4096)


@pytest.fixture(scope="module")
def trixie(fixture_image: FixtureImageFactory) -> FixtureImage:
    return fixture_image("trixie", "qcow2")


@pytest.fixture(scope="module")
def media(trixie: FixtureImage, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three media the boots use, each built once: erofs CD, full-os CD, squashfs PXE bundle."""
    out = tmp_path_factory.mktemp("trixie")
    built: dict[str, Path] = {}
    with LiveOS.open(trixie.path, workdir=out) as live:
        live = live.with_label(LABEL)
        erofs = live.bootstrap().with_rootfs_format(RootFsFormat.EROFS).write_iso(out / "erofs.iso")
        assert erofs.step("rootfs.img").tool == "mkfs.erofs (fast preset)", erofs.step("rootfs.img")
        built["erofs"] = erofs.output
        built["full-os"] = live.full_os().write_iso(out / "full-os.iso").output
        pxe: BuildResult = live.bootstrap().write_pxe(out / "pxe", base_url=f"http://{GUEST_HTTP_ADDR}/")
        built["pxe"] = pxe.output
    return built


def test_trixie_carries_dracut_106_which_mounts_erofs(trixie: FixtureImage) -> None:
    with LiveOS.open(trixie.path) as live:
        info = DracutInfo.probe(live.rootfs)
        assert info.version is not None and info.version.startswith("106"), info.version
        assert {"dmsquash-live", "livenet", "network-legacy"} <= info.modules
        assert dracut_boots_erofs(live.rootfs)


def test_erofs_is_refused_with_dracut_059(fixture_image: FixtureImageFactory) -> None:
    """Debian 12's dmsquash-live mounts the root image ``-t squashfs``: the error says which dracut."""
    with LiveOS.open(fixture_image("debian", "qcow2").path) as live:
        assert not dracut_boots_erofs(live.rootfs)
        with pytest.raises(UsageError, match=r"dracut 059\S* cannot boot an erofs root image"):
            live.bootstrap().with_rootfs_format("erofs").plan()
        live.bootstrap().plan()  # squashfs stays fine


def test_erofs_is_refused_in_full_os_mode(trixie: FixtureImage) -> None:
    refused = pytest.raises(UsageError, match="erofs root image is a bootstrap-mode setting")
    with LiveOS.open(trixie.path) as live, refused:
        live.full_os().with_rootfs_format("erofs").plan()


def test_erofs_iso_carries_an_erofs_that_verifies(media: dict[str, Path]) -> None:
    assert is_erofs(root_image_header(media["erofs"]))
    with IsoReader(media["erofs"]) as reader:
        config = reader.read_bytes("/boot/grub/grub.cfg").decode()
    assert "rd.live.squashimg=rootfs.img" in config  # the same path and arguments as squashfs
    report = verify(media["erofs"])
    assert report.ok, report
    root = [c for c in report.checks if c.kind == "root-image"]
    assert root and "erofs" in root[0].detail, root


@pytest.mark.boot
def test_erofs_bootstrap_iso_boots_from_cd(
    media: dict[str, Path], trixie: FixtureImage, tmp_path: Path
) -> None:
    log = tmp_path / "serial.log"
    config = BootConfig(CdRom(media["erofs"]), marker=trixie.marker, timeout=BOOT_TIMEOUT, log_path=log)
    result = boot(replace(config, extra_qemu_args=NO_ERMS))
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line, result.marker_line
    assert EROFS_MOUNTED.search(log.read_text(errors="replace")), "no erofs was mounted"


@pytest.mark.boot
def test_full_os_iso_boots_from_cd(media: dict[str, Path], trixie: FixtureImage, tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    result = boot(
        BootConfig(
            CdRom(media["full-os"]),
            firmware=Firmware.UEFI_SECURE_BOOT,  # Debian 13's signed shim, grub and kernel
            marker=trixie.marker,
            memory_mib=BIG_MEMORY_MIB,
            timeout=BOOT_TIMEOUT,
            log_path=log,
            extra_qemu_args=NO_ERMS,
        )
    )
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=rootfs" in result.marker_line, result.marker_line
    assert "secureboot: Secure boot enabled" in log.read_text(errors="replace")


@pytest.mark.boot
def test_bootstrap_pxe_bundle_boots_over_http_livenet(
    media: dict[str, Path], trixie: FixtureImage, tmp_path: Path
) -> None:
    folder = media["pxe"]
    header = root_image_header(folder / "live.iso")
    assert header[:4] == b"hsqs", "the PXE bundle's ISO should carry the default squashfs"
    log = tmp_path / "serial.log"
    result = boot(
        BootConfig(
            PxeBoot(folder, "bootx64.efi"),
            http_root=folder,
            marker=trixie.marker,
            memory_mib=BIG_MEMORY_MIB,
            timeout=BOOT_TIMEOUT,
            log_path=log,
            extra_qemu_args=NO_ERMS,
        )
    )
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line, result.marker_line
