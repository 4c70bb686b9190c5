"""liveos ISOs boot under BIOS (SeaBIOS): a bootstrap ISO as a CD, a full-os ISO as a raw disk.

The same files boot under UEFI: every ISO the other boot tests build has BIOS boot on (the
default), e.g. tests/integration/test_live_iso.py boots the azl bootstrap ISO under UEFI with
Secure Boot as a CD and as a USB disk, and test_full_os.py full-os ISOs as a CD and as a disk.

The azl fixture is UEFI only (no i386-pc GRUB in the image), so the BIOS path is the host's
``grub-pc-bin`` GRUB while UEFI keeps the image's shim -> grub chain; the plan says which GRUB
was used. Each boot must reach the fixture's marker with ``/`` on the live overlay, which proves
GRUB's core found the media by label (CD: El Torito; disk: boot_hybrid.img in the MBR), read the
one grub.cfg both firmwares use, and loaded the kernel and initrd.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, Disk, Firmware, boot
from liveos.image.isofs import IsoReader
from liveos.iso.hybrid import HybridLayout
from liveos.live import LiveOS
from liveos.result import BuildResult
from liveos.run import output
from liveos.verification import CheckKind, verify
from tests.conftest import FixtureImageFactory

pytestmark = [pytest.mark.root]

LABEL = "LIVEOS_BIOS"
FULL_OS_MEMORY_MIB = 3584  # the compressed initrd and the unpacked tree both sit in RAM


@pytest.fixture(scope="module")
def both(
    fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, BuildResult]:
    """The azl fixture as a bootstrap and a full-os ISO with BIOS boot (the default), built once."""
    image = fixture_image("azl", "qcow2")
    out = tmp_path_factory.mktemp("bios")
    with LiveOS.open(image.path, workdir=out) as live:
        media = live.with_label(LABEL)
        return {
            "bootstrap": media.bootstrap().write_iso(out / "bios.iso"),
            "full-os": media.full_os().write_iso(out / "bios-full.iso"),
        }


@pytest.fixture
def built(both: dict[str, BuildResult]) -> BuildResult:
    return both["bootstrap"]


def test_the_result_says_which_grub_boots_bios(built: BuildResult) -> None:
    note = "BIOS: host GRUB 2."
    assert any(w.startswith(note) and "the image has no i386-pc GRUB" in w for w in built.plan.warnings)
    assert "El Torito BIOS + EFI" in built.plan.step("iso").detail
    assert note in built.plan.step("eltorito.img").detail
    step = built.step("eltorito.img")
    assert step.tool == "grub-mkimage" and step.size is not None and step.size > 2048 + 512


def test_the_iso_carries_both_entries_and_verifies(built: BuildResult) -> None:
    report = output(["xorriso", "-indev", built.output, "-report_el_torito", "plain"])
    entries = [line.split()[5:8] for line in report.splitlines() if line.startswith("El Torito boot img :")]
    assert entries == [["1", "BIOS", "y"], ["2", "UEFI", "y"]], report
    with IsoReader(built.output) as reader:
        names = {entry.path for entry in reader.walk()}
    for expected in ("eltorito.img", "normal.mod", "linux.mod", "biosdisk.mod", "moddep.lst"):
        assert f"/boot/grub2/i386-pc/{expected}" in names
    with built.output.open("rb") as f:
        assert [p.type for p in HybridLayout.parse(f).mbr] == [0xEE]  # GPT intact, CRCs checked
    checks = verify(built.output)
    assert checks.ok, checks.describe()
    assert "MBR boot code for USB" in checks.check(CheckKind.BIOS_BOOT).detail


@pytest.mark.boot
@pytest.mark.parametrize(
    ("mode", "medium"), [("bootstrap", "cd"), ("full-os", "disk")], ids=["bootstrap-cd", "full-os-disk"]
)
def test_boots_under_seabios(both: dict[str, BuildResult], mode: str, medium: str, tmp_path: Path) -> None:
    iso = both[mode].output
    media = CdRom(iso) if medium == "cd" else Disk(iso, format="raw")
    log = tmp_path / "serial.log"
    memory = FULL_OS_MEMORY_MIB if mode == "full-os" else 2048
    result = boot(BootConfig(media, firmware=Firmware.BIOS, memory_mib=memory, log_path=log, timeout=600))
    assert result.ok, result.describe()
    fstype = "rootfs" if mode == "full-os" else "overlay"
    assert result.marker_line is not None and f"fstype={fstype}" in result.marker_line, result.marker_line
