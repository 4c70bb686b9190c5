"""End to end: a real Debian disk image becomes a bootstrap live ISO that boots in QEMU + OVMF.

Each boot must reach the fixture's marker service with ``/`` on the dmsquash-live overlay, which
proves grub found the media by label, dracut found the squashfs, and systemd reached
multi-user.target without the removed /etc/fstab.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, Disk, Firmware, boot
from liveos.grub import GrubConfig
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from tests.conftest import FixtureImageFactory
from tests.imagekit import our_loops, our_mounts, sha256, stamp_marker

pytestmark = [pytest.mark.root]

#: layout -> input format: every layout once, and every disk format among them.
CASES = {"azl": "qcow2", "debian": "qcow2", "split": "vhdx", "bls": "vhd"}
#: layouts whose booted ISO is a rebuild reusing the first build's products, with the marker
#: script changed on top (the booted system must print the token).
UPDATED = {"azl": f"token-{secrets.token_hex(4)}"}
GRUB_CFG = {"debian": "/boot/grub/grub.cfg", "split": "/boot/grub/grub.cfg"}
#: layouts whose CD boot runs under OVMF's Secure Boot build with the Microsoft keys enrolled
#: (enforcing: tests/integration/test_iso_boot.py shows it refuses an unsigned loader). The
#: media must keep the image's signed shim -> grub -> kernel chain for this boot to succeed.
SECURE_BOOT = {"azl"}
#: What the booted kernel prints about the firmware's Secure Boot state.
SB_ENABLED = "secureboot: Secure boot enabled"


@pytest.fixture(scope="module")
def built_isos(
    fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Build one bootstrap ISO per layout (module-scoped: the boots below share them)."""
    out = tmp_path_factory.mktemp("isos")
    isos: dict[str, Path] = {}
    for layout, fmt in CASES.items():
        image = fixture_image(layout, fmt)
        before = sha256(image.path)
        workdir = out / f"work-{layout}"
        workdir.mkdir()
        with LiveOS.open(image.path, workdir=workdir) as live:
            live.rootfs.write_text("/etc/liveos-test", f"customised {layout}\n")
            media = live.with_label(f"LIVEOS_{layout.upper()}").bootstrap()
            iso = media.write_iso(out / f"{layout}.iso").output
            if layout in UPDATED:  # rebuilt after one more change: cached initrd + root image, /updates
                stamp_marker(live.rootfs, UPDATED[layout])
                result = media.write_iso(out / f"{layout}-updated.iso")
                assert all(result.step(p).cached for p in ("rootfs.img", f"initrd-{image.kernel_version}"))
                iso = result.output
        assert sha256(image.path) == before, "the input image changed"
        assert our_mounts(str(workdir)) == [], "a mount was left behind"
        assert our_loops(image.path, workdir) == []
        assert not any(workdir.iterdir()), "the work dir was not cleaned up"
        isos[layout] = iso
    return isos


@pytest.mark.parametrize("layout", list(CASES))
def test_iso_layout(built_isos: dict[str, Path], layout: str) -> None:
    grub_cfg = GRUB_CFG.get(layout, "/boot/grub2/grub.cfg")
    with IsoReader(built_isos[layout]) as reader:
        names = {entry.path for entry in reader.walk()}
        config = reader.read_bytes(grub_cfg).decode()
    for expected in ("/EFI/BOOT/bootx64.efi", "/EFI/BOOT/grubx64.efi", "/liveos/rootfs.img", grub_cfg):
        assert expected in names, f"{expected} missing from the {layout} ISO"
    label = f"LIVEOS_{layout.upper()}"
    assert f"root=live:CDLABEL={label}" in config
    assert f"--label {label}" in config
    assert "root=UUID=" not in config and "root=PARTUUID=" not in config
    entries = GrubConfig.parse(config).kernel_args()
    assert entries, "no linux command left in the media's grub.cfg"
    for args in entries:  # every boot entry boots the live root, none the original disk
        assert args.get("root") == f"live:CDLABEL={label}", args
        assert "rd.live.image" in args and args.get("rd.live.squashimg") == "rootfs.img", args
    assert not GrubConfig.parse(config).has_blscfg(), "BLS entries must be rendered into grub.cfg"


@pytest.mark.boot
@pytest.mark.parametrize("layout", list(CASES))
def test_iso_boots_from_cd(built_isos: dict[str, Path], layout: str, tmp_path: Path) -> None:
    firmware = Firmware.UEFI_SECURE_BOOT if layout in SECURE_BOOT else Firmware.UEFI
    log = tmp_path / "serial.log"
    result = boot(BootConfig(CdRom(built_isos[layout]), firmware=firmware, log_path=log, timeout=400))
    assert result.ok, result.describe()
    assert (SB_ENABLED in log.read_text(errors="replace")) == (layout in SECURE_BOOT), firmware
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line, result.marker_line
    if layout in UPDATED:  # the reused initrd booted, and dracut applied /updates over the root image
        assert f"updated={UPDATED[layout]} " in result.marker_line, result.marker_line


@pytest.mark.boot
def test_hybrid_iso_boots_as_usb_disk(built_isos: dict[str, Path], tmp_path: Path) -> None:
    """Under Secure Boot too: the firmware loads the image's signed shim from the hybrid GPT's ESP."""
    log = tmp_path / "serial.log"
    disk = Disk(built_isos["azl"], format="raw")
    result = boot(BootConfig(disk, firmware=Firmware.UEFI_SECURE_BOOT, log_path=log, timeout=400))
    assert result.ok, result.describe()
    assert SB_ENABLED in log.read_text(errors="replace")
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line


def test_cli_refuses_a_directory_as_output(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "liveos", "iso", str(tmp_path / "missing.qcow2"), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent.parent)},
    )
    assert proc.returncode != 0
    assert "liveos:" in proc.stderr
