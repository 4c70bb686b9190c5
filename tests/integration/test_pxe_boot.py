"""Real UEFI PXE boots of PXE bundles: OVMF -> shim -> grub over TFTP -> kernel -> marker.

QEMU's user-net (restrict=on) serves the bundle folder over TFTP with ``bootfile=bootx64.efi``;
for bootstrap the harness serves the same folder over HTTP at ``http://10.0.2.100/`` and dracut's
livenet downloads the bundled ISO into RAM (hence >= 3 GiB). The serial log must also show which
redirector grub.cfg the network grub read, and it must be one the bundle planned for it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from liveos.boottest import GUEST_HTTP_ADDR, BootConfig, Firmware, PxeBoot, boot
from liveos.live import LiveOS
from tests.conftest import FixtureImageFactory

pytestmark = [pytest.mark.root, pytest.mark.boot]

PXE_TIMEOUT = 500.0
PXE_MEMORY_MIB = 3584  # the downloaded ISO (~230 MB) lives in RAM next to the running system
#: What the booted kernel prints when the firmware enforces Secure Boot.
SB_ENABLED = "secureboot: Secure boot enabled"
REDIRECT = re.compile(r"liveos: PXE grub config (/\S+) -> (/\S+)")


def read_config(log: Path) -> tuple[str, str] | None:
    match = REDIRECT.search(log.read_text(errors="replace"))
    return (match.group(1), match.group(2)) if match else None


def test_bootstrap_bundle_boots_over_uefi_pxe(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """Written as .tar.gz, unpacked with GNU tar as an admin would, then served and booted."""
    image = fixture_image("azl", "qcow2")
    archive = tmp_path / "pxe.tar.gz"
    workdir = tmp_path / "work"
    workdir.mkdir()
    with LiveOS.open(image.path, workdir=workdir) as live:
        live.rootfs.write_text("/etc/liveos-test", "customised for pxe\n")
        live.bootstrap().write_pxe(archive, base_url=f"http://{GUEST_HTTP_ADDR}/")
    assert not any(workdir.iterdir()), "the work dir was not cleaned up"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pxe.tar.gz", "work"], "scratch left behind"
    folder = tmp_path / "tftp"
    folder.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(folder)], check=True)
    assert (folder / "live.iso").is_file()
    initrds = list((folder / "boot").glob("initramfs-*.img"))
    assert initrds and all(p.stat().st_mode & 0o777 == 0o644 for p in initrds)
    config = (folder / "boot/grub2/grub.cfg").read_text()
    assert f"root=live:http://{GUEST_HTTP_ADDR}/live.iso" in config
    assert "search" not in config
    log = tmp_path / "serial.log"
    result = boot(
        BootConfig(
            PxeBoot(folder, "bootx64.efi"),
            http_root=folder,
            memory_mib=PXE_MEMORY_MIB,
            timeout=PXE_TIMEOUT,
            log_path=log,
        )
    )
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line, result.marker_line
    # measured: Debian's grubnet reads $prefix/grub.cfg ([ -e ] of x86_64-efi/grub.cfg fails on TFTP)
    assert read_config(log) == ("/grub/grub.cfg", "/boot/grub2/grub.cfg")


def test_full_os_bundle_boots_over_uefi_pxe(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """Under Secure Boot (enforcing, Microsoft keys): shim, grub and kernel fetched over TFTP must
    be the image's signed ones, and the kernel must accept the CPIO initrd liveos wrote."""
    image = fixture_image("azl", "qcow2")
    folder = tmp_path / "tftp"
    workdir = tmp_path / "work"
    workdir.mkdir()
    with LiveOS.open(image.path, workdir=workdir) as live:
        live.full_os().write_pxe(folder)
    assert not list(folder.glob("*.iso"))
    log = tmp_path / "serial.log"
    result = boot(
        BootConfig(
            PxeBoot(folder, "bootx64.efi"),
            firmware=Firmware.UEFI_SECURE_BOOT,
            memory_mib=PXE_MEMORY_MIB,
            timeout=PXE_TIMEOUT,
            log_path=log,
        )
    )
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=rootfs" in result.marker_line, result.marker_line
    assert SB_ENABLED in log.read_text(errors="replace")
    assert read_config(log) is not None
