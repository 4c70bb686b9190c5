"""BIOS boot of the hybrid ISO: the El Torito entries, the MBR and GRUB block-list bytes, which
GRUB is used, and the grub.cfg both firmwares read.

The bytes are checked against xorriso (an independent reader that knows GRUB's ``--grub2-mbr``
and ``--grub2-boot-info`` conventions) and against GRUB's own images from the host's
``grub-pc-bin``; the boots are in tests/integration/test_bios_boot.py.
"""

from __future__ import annotations

import os
import shutil
import struct
import uuid
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import HostError, ImageError, InternalError
from liveos.grub import GrubConfig
from liveos.image.base import SourceImage
from liveos.image.formats import DiskFormat
from liveos.iso import HybridLayout, IsoWriter
from liveos.iso.biosboot import (
    BIOS_PRODUCT,
    HOST_PLATFORM_DIR,
    MBR_LBA_OFFSET,
    REQUIRED,
    GrubSource,
    bios_files,
    bios_grub_cfg,
    boot_info_checksum,
    build_bios_image,
    find_bios_grub,
    mbr_boot_code,
    read_bios_image,
)
from liveos.iso.hybrid import MBR_CODE_SIZE, Extent, PartitionScheme
from liveos.iso.output import plan_iso
from liveos.plan import Origin, StepKind
from liveos.rootfs import RootFs
from liveos.run import output
from liveos.settings import LiveSettings
from liveos.verification import CheckKind, _eltorito_bios, verify
from tests.liveimagekit import GRUB_CFG, build_tree, esp_files, root_files

GRUB2 = PurePosixPath("/boot/grub2")
BIOS_IMAGE = "/boot/grub2/i386-pc/eltorito.img"
LABEL = "LIVEOS_BIOS"


def test_mbr_code_is_boot_hybrid_pointed_at_the_core() -> None:
    boot_hybrid = bytes(range(256)) * 2
    code = mbr_boot_code(boot_hybrid, 2796 * 2048)
    assert len(code) == MBR_CODE_SIZE == 440
    assert code[:MBR_LBA_OFFSET] == boot_hybrid[:MBR_LBA_OFFSET]
    assert struct.unpack_from("<Q", code, 0x1B0) == (2796 * 4 + 4,)  # xorriso --grub2-mbr
    with pytest.raises(InternalError):
        mbr_boot_code(boot_hybrid, 2796 * 2048 + 512)  # not a CD sector


def test_boot_info_checksum_sums_words_from_byte_64() -> None:
    image = bytes(64) + struct.pack("<3I", 1, 2, 0xFFFFFFFF) + b"\x01"
    assert boot_info_checksum(image) == (1 + 2 + 0xFFFFFFFF + 1) & 0xFFFFFFFF


def test_mbr_sector_keeps_the_table_and_refuses_oversized_code() -> None:
    layout = HybridLayout.build(
        100_000, Extent(100 * 2048, 64 * 1024), PartitionScheme.GPT, uuid.UUID(int=1), uuid.UUID(int=2)
    )
    plain = layout.mbr_sector(0x1234)
    with_code = layout.mbr_sector(0x1234, b"\xeb" * 440)
    assert plain[:440] == bytes(440) and with_code[:440] == b"\xeb" * 440
    assert plain[440:] == with_code[440:]
    with pytest.raises(InternalError):
        layout.mbr_sector(0x1234, bytes(441))


@pytest.fixture(scope="module")
def host_grub() -> Path:
    missing = [n for n in REQUIRED if not (HOST_PLATFORM_DIR / n).is_file()]
    assert not missing, f"install grub-pc-bin (tools/setup-host.sh): {missing}"
    return HOST_PLATFORM_DIR


@pytest.fixture(scope="module")
def bios_iso(host_grub: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small hybrid ISO with GRUB's real BIOS image first and a (dummy) EFI image second."""
    tmp = tmp_path_factory.mktemp("bios-iso")
    platform = {p.name: p for p in host_grub.iterdir() if p.suffix in (".mod", ".lst", ".img")}
    eltorito = build_bios_image(platform, tmp, label=LABEL, grub_dir=GRUB2)
    efi = tmp / "efiboot.img"
    efi.write_bytes(os.urandom(64 * 1024))
    writer = IsoWriter(LABEL)
    writer.add_bytes("/boot/grub2/grub.cfg", b"linux /vmlinuz\n")
    writer.add_file(BIOS_IMAGE, eltorito)
    writer.add_file("/boot/grub2/i386-pc/normal.mod", host_grub / "normal.mod")
    writer.set_efi_boot("/boot/efiboot.img", efi)
    writer.set_bios_boot(BIOS_IMAGE, (host_grub / "boot_hybrid.img").read_bytes())
    out = tmp / "bios.iso"
    written = writer.write(out)
    assert written.bios_image_offset is not None
    return out


def test_xorriso_sees_the_bios_entry_first_and_the_efi_entry(bios_iso: Path) -> None:
    report = output(["xorriso", "-indev", bios_iso, "-report_el_torito", "plain"])
    entries = [line.split() for line in report.splitlines() if line.startswith("El Torito boot img :")]
    assert [(e[5], e[6], e[7]) for e in entries] == [("1", "BIOS", "y"), ("2", "UEFI", "y")], report
    assert entries[0][8] == "none" and entries[0][11] == "4", report  # no emulation, 4 sectors
    assert "El Torito img path :   1  /boot/grub2/i386-pc/eltorito.img" in report
    assert "boot-info-table grub2-boot-info" in report  # xorriso recognises the block list patch
    area = output(["xorriso", "-indev", bios_iso, "-report_system_area", "plain"])
    summary = next(line for line in area.splitlines() if line.startswith("System area summary:"))
    assert "grub2-mbr" in summary and "GPT" in summary, area  # the MBR code, next to the GPT


def test_the_bytes_point_at_the_core(bios_iso: Path) -> None:
    entry = _eltorito_bios(bios_iso)
    assert entry is not None
    rba, sectors, media_type, initial = entry
    assert (sectors, media_type, initial) == (4, 0, True)
    size = (bios_iso.parent / "bios" / BIOS_PRODUCT).stat().st_size  # as grub-mkimage wrote it
    with bios_iso.open("rb") as f:
        facts = read_bios_image(f, rba * 2048, size)
        f.seek(0)
        mbr = f.read(512)
        layout = HybridLayout.parse(f)  # the GPT is intact (CRCs checked)
    assert facts.boot_info == (16, rba, size, facts.checksum)
    assert facts.blocklist_start == rba * 4 + 5  # xorriso --grub2-boot-info
    assert struct.unpack_from("<Q", mbr, 0x1B0) == (rba * 4 + 4,)
    assert mbr[:0x1B0] == (HOST_PLATFORM_DIR / "boot_hybrid.img").read_bytes()[:0x1B0]
    assert [p.type for p in layout.mbr] == [0xEE]


def test_without_bios_the_iso_is_uefi_only(tmp_path: Path) -> None:
    writer = IsoWriter(LABEL)
    efi = tmp_path / "efiboot.img"
    efi.write_bytes(os.urandom(64 * 1024))
    writer.set_efi_boot("/boot/efiboot.img", efi)
    out = tmp_path / "uefi.iso"
    assert writer.write(out).bios_image_offset is None
    assert _eltorito_bios(out) is None
    assert out.read_bytes()[:440] == bytes(440)
    report = output(["xorriso", "-indev", out, "-report_el_torito", "plain"])
    assert "BIOS" not in report and "UEFI" in report


def _image(tmp_path: Path) -> RootFs:
    root = tmp_path / "root"
    (root / "usr/lib/grub").mkdir(parents=True)
    return RootFs(root)


def test_the_image_without_i386_pc_grub_gets_the_hosts(host_grub: Path, tmp_path: Path) -> None:
    bios = find_bios_grub(_image(tmp_path), GRUB2)
    assert bios.source is GrubSource.HOST
    assert "host GRUB 2." in bios.description and "grub-pc-bin" in bios.description
    assert "the image has no i386-pc GRUB" in bios.description
    image, platform = bios_files(bios.files)
    assert image is not None and image.path == PurePosixPath(BIOS_IMAGE) and image.origin is Origin.BUILT
    names = {f.path.name for f in platform}
    assert {"normal.mod", "linux.mod", "cdboot.img", "boot_hybrid.img", "moddep.lst"} <= names
    assert all(f.path.parent == GRUB2 / "i386-pc" for f in platform)


def test_the_images_own_grub_is_read_through_rootfs(host_grub: Path, tmp_path: Path) -> None:
    rootfs = _image(tmp_path)
    own = rootfs.path("/usr/lib/grub") / "i386-pc"
    shutil.copytree(host_grub, own)
    (own / "modinfo.sh").write_text('grub_package_version="2.12-9.azl3"\n')
    bios = find_bios_grub(rootfs, PurePosixPath("/boot/grub"))
    assert bios.source is GrubSource.IMAGE
    assert bios.description == "BIOS: the image's GRUB 2.12-9.azl3 (i386-pc)"
    _, platform = bios_files(bios.files)
    normal = next(f for f in platform if f.path.name == "normal.mod")
    assert normal.data == (host_grub / "normal.mod").read_bytes() and normal.host is None
    assert normal.path == PurePosixPath("/boot/grub/i386-pc/normal.mod")

    (own / "cdboot.img").unlink()  # incomplete: the host's, and the plan says why
    bios = find_bios_grub(rootfs, GRUB2)
    assert bios.source is GrubSource.HOST and "lacks cdboot.img" in bios.description

    shutil.copy(host_grub / "cdboot.img", own)
    (own / "normal.mod").unlink()  # a link out of the image is resolved inside it: missing
    outside = tmp_path / "outside.mod"
    shutil.copy(host_grub / "normal.mod", outside)
    (own / "normal.mod").symlink_to(outside)
    assert find_bios_grub(rootfs, GRUB2).source is GrubSource.HOST

    (own / "normal.mod").unlink()
    with (own / "normal.mod").open("wb") as f:  # a sparse 2 MiB module is refused, not read
        f.truncate(2 << 20)
    with pytest.raises(ImageError, match="too large"):
        find_bios_grub(rootfs, GRUB2)


def test_no_grub_anywhere_is_a_host_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("liveos.iso.biosboot.HOST_PLATFORM_DIR", tmp_path / "none")
    with pytest.raises(HostError, match="grub-pc-bin"):
        find_bios_grub(_image(tmp_path), GRUB2)


def test_linuxefi_is_guarded_for_bios_grub() -> None:
    text = "menuentry 'Linux' {\n\tlinuxefi /vmlinuz root=live:CDLABEL=X quiet\n\tinitrdefi /initrd.img\n}\n"
    out = bios_grub_cfg(text, path=GRUB2 / "grub.cfg")
    assert 'if [ "$grub_platform" = pc ]; then linux /vmlinuz root=live:CDLABEL=X quiet; else ' in out
    assert "else linuxefi /vmlinuz root=live:CDLABEL=X quiet; fi" in out
    assert 'if [ "$grub_platform" = pc ]; then initrd /initrd.img; else initrdefi /initrd.img; fi' in out
    config = GrubConfig.parse(out)
    assert [str(a) for a in config.kernel_args()] == ["root=live:CDLABEL=X quiet"] * 2
    assert [c.name for c in config.initrd_commands()] == ["initrd", "initrdefi"]
    plain = "menuentry 'Linux' {\n\tlinux /vmlinuz\n\tinitrd /initrd.img\n}\n"
    assert bios_grub_cfg(plain, path=GRUB2 / "grub.cfg") == plain


def test_verify_checks_the_bios_bytes(bios_iso: Path, tmp_path: Path) -> None:
    assert verify(bios_iso).check(CheckKind.BIOS_BOOT).ok
    broken = tmp_path / "broken.iso"
    shutil.copyfile(bios_iso, broken)
    with broken.open("r+b") as f:  # the MBR code now loads the wrong sector
        f.seek(0x1B0)
        (lba,) = struct.unpack("<Q", f.read(8))
        f.seek(0x1B0)
        f.write(struct.pack("<Q", lba + 1))
    check = verify(broken).check(CheckKind.BIOS_BOOT)
    assert not check.ok and f"the MBR boot code loads LBA {lba + 1}" in check.detail


def _tree(tmp_path: Path, grub_cfg: str = GRUB_CFG) -> SourceImage:
    files = {**root_files(), **{f"/boot/efi{k}": v for k, v in esp_files().items()}}
    root = build_tree(tmp_path / "root", {**files, "/boot/grub2/grub.cfg": grub_cfg})
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"a disk image")
    return SourceImage(path=disk, format=DiskFormat.RAW, root=root, scratch=tmp_path)


def test_the_plan_has_a_bios_step_and_says_whose_grub(host_grub: Path, tmp_path: Path) -> None:
    efi_cfg = GRUB_CFG.replace("\tlinux ", "\tlinuxefi ").replace("\tinitrd ", "\tinitrdefi ")
    plan = plan_iso(_tree(tmp_path, efi_cfg), LiveSettings(label="PLANNED"), "PLANNED")
    assert [s.kind for s in plan.steps][-3:] == [StepKind.EFIBOOT, StepKind.BIOSBOOT, StepKind.ISO]
    detail = plan.step(BIOS_PRODUCT).detail
    assert "prefix /boot/grub2" in detail and "host GRUB 2." in detail and "grub-pc-bin" in detail
    assert any("the image has no i386-pc GRUB" in w for w in plan.warnings)
    bios = [f for f in plan.files if f.path.parent == GRUB2 / "i386-pc"]
    assert {f.origin for f in bios} == {Origin.GENERATED, Origin.BUILT}
    assert all(
        f.host is not None and f.host.parent == HOST_PLATFORM_DIR
        for f in bios
        if f.origin is Origin.GENERATED
    )
    config = (plan.file("/boot/grub2/grub.cfg").data or b"").decode()
    assert 'if [ "$grub_platform" = pc ]; then linux /boot/vmlinuz-' in config  # the one grub.cfg
    assert "else linuxefi /boot/vmlinuz-" in config and "else initrdefi /boot/initramfs-" in config

    uefi = plan_iso(_tree(tmp_path / "off"), LiveSettings(label="PLANNED", bios=False), "PLANNED")
    assert StepKind.BIOSBOOT not in [s.kind for s in uefi.steps] and not uefi.warnings
    assert not [f for f in uefi.files if "i386-pc" in str(f.path)]
    assert (uefi.file("/boot/grub2/grub.cfg").data or b"").decode().count("linux ") == 1
