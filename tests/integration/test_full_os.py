"""full-os media end to end: the whole OS is the initrd; the ISO boots with no root= and no pivot.

The marker service prints the type of ``/``: ``rootfs`` proves the system runs from the unpacked
initramfs itself (bootstrap media report ``overlay``).
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, Disk, boot
from liveos.cpio import CpioEntry, iter_entries
from liveos.grub import GrubConfig
from liveos.image.isofs import IsoReader
from liveos.initramfs import Initramfs
from liveos.live import LiveOS
from liveos.settings import Compression
from tests.conftest import FixtureImageFactory
from tests.imagekit import stamp_marker

pytestmark = [pytest.mark.root]

#: layout -> input format (raw is used in place, never copied)
CASES = {"azl": "qcow2", "debian": "qcow2", "split": "raw", "bls": "qcow2"}
LAYOUTS = tuple(CASES)
GRUB_CFG = {"debian": "/boot/grub/grub.cfg", "split": "/boot/grub/grub.cfg"}
FULL_OS_MEMORY_MIB = 3584
#: layouts whose full-os ISO boots written raw to a disk (a USB stick) instead of from a CD: the
#: boot matrix then has full-os on both media without an extra boot.
AS_USB = {"debian"}
#: layouts whose booted ISO is a rebuild: the first build's CPIO plus an update segment that
#: changes the marker script (the booted system must print the token).
UPDATED = {
    "azl": f"token-{secrets.token_hex(4)}"
}  # compressed initrd + the unpacked tree both sit in RAM while booting


@pytest.fixture(scope="module")
def full_os_isos(
    fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("full-os")
    isos: dict[str, Path] = {}
    for layout, fmt in CASES.items():
        image = fixture_image(layout, fmt)
        with LiveOS.open(image.path, workdir=out) as live:
            live.rootfs.write_text("/etc/liveos-test", f"full-os {layout}\n")
            media = live.with_label(f"FULL_{layout.upper()}").full_os()
            isos[layout] = media.write_iso(out / f"{layout}-full.iso").output
            if layout in UPDATED:  # rebuilt after one more change: the cached CPIO + an update segment
                stamp_marker(live.rootfs, UPDATED[layout])
                result = media.write_iso(out / f"{layout}-full-updated.iso")
                assert result.step("initrd.img").cached, result.describe()
                isos[layout] = result.output
    return isos


@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_os_iso_layout(full_os_isos: dict[str, Path], layout: str, tmp_path: Path) -> None:
    grub_cfg = GRUB_CFG.get(layout, "/boot/grub2/grub.cfg")
    with IsoReader(full_os_isos[layout]) as reader:
        names = {entry.path for entry in reader.walk()}
        config = reader.read_bytes(grub_cfg).decode()
        reader.extract("/boot/initrd.img", tmp_path / "initrd.img")
    assert "/liveos/rootfs.img" not in names, "full-os media carry no squashfs"
    assert not GrubConfig.parse(config).has_blscfg()
    kernel_args = GrubConfig.parse(config).kernel_args()
    assert kernel_args and all("root" not in args for args in kernel_args), kernel_args
    initrd_lines = [line.split() for line in config.splitlines() if line.strip().startswith("initrd")]
    assert initrd_lines and all(words[1:] == ["/boot/initrd.img"] for words in initrd_lines), initrd_lines
    entries: dict[str, CpioEntry] = {}
    for member in iter_entries(tmp_path / "initrd.img"):
        entries[member.entry.name] = member.entry
        if member.entry.name == "etc/liveos-test":
            assert member.read() == f"full-os {layout}\n".encode()
    assert entries["init"].linkname in {"/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init"}
    assert "dev/console" in entries and "etc/liveos-test" in entries
    assert "etc/fstab" not in entries
    assert not [name for name in entries if name.startswith("boot/")], "/boot must stay out of RAM"


def test_full_os_initrd_is_reproducible(
    fixture_image: FixtureImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    image = fixture_image("azl", "qcow2")
    with LiveOS.open(image.path, workdir=tmp_path) as live:
        live.rootfs.remove_fstab()
        first = Initramfs.full_os(live.rootfs, tmp_path / "a.img", compression=Compression.ZSTD, level=3)
        second = Initramfs.full_os(live.rootfs, tmp_path / "b.img", compression=Compression.ZSTD, level=3)
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in (first.path, second.path)}
    assert len(digests) == 1, "two builds with SOURCE_DATE_EPOCH differ"
    assert first.entries is not None and first.entries > 10_000


@pytest.mark.boot
@pytest.mark.parametrize("layout", LAYOUTS)
def test_full_os_iso_boots_without_pivot(full_os_isos: dict[str, Path], layout: str, tmp_path: Path) -> None:
    iso = full_os_isos[layout]
    result = boot(
        BootConfig(
            Disk(iso, format="raw") if layout in AS_USB else CdRom(iso),
            log_path=tmp_path / "serial.log",
            timeout=400,
            memory_mib=FULL_OS_MEMORY_MIB,
        )
    )
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=rootfs" in result.marker_line, result.marker_line
    if layout in UPDATED:  # the kernel unpacked the update segment over the cached archive
        assert f"updated={UPDATED[layout]} " in result.marker_line, result.marker_line
