"""Boot-chain discovery: the architecture comes from the image's own EFI binaries."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from liveos.bootfiles import find_boot_files, find_grub_cfg
from liveos.errors import ImageError
from liveos.pe import pe_arch
from liveos.rootfs import RootFs, kernel_version_of
from liveos.settings import Arch
from tests.imagekit import pe_stub


def make_esp(rootfs: RootFs, layout: dict[str, bytes]) -> None:
    for path, data in layout.items():
        rootfs.write_bytes(path, data)


def test_pe_arch(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(pe_stub(0x8664))
    (tmp_path / "a").write_bytes(pe_stub(0xAA64))
    (tmp_path / "n").write_bytes(b"not a PE file at all" * 10)
    assert pe_arch(tmp_path / "x") is Arch.X64
    assert pe_arch(tmp_path / "a") is Arch.AA64
    assert pe_arch(tmp_path / "n") is None


def test_debian_layout_prefers_removable_path(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    make_esp(
        rootfs,
        {
            "/boot/efi/EFI/debian/shimx64.efi": pe_stub(0x8664),
            "/boot/efi/EFI/debian/grubx64.efi": pe_stub(0x8664),
            "/boot/efi/EFI/BOOT/BOOTX64.EFI": pe_stub(0x8664),
            "/boot/efi/EFI/BOOT/grubx64.efi": pe_stub(0x8664),
            "/boot/efi/EFI/BOOT/mmx64.efi": pe_stub(0x8664),
            "/boot/grub/grub.cfg": b"menuentry x { linux /vmlinuz }\n",
        },
    )
    boot = find_boot_files(rootfs)
    assert boot.arch is Arch.X64
    assert boot.shim.name == "BOOTX64.EFI"
    assert boot.grub.parent.name == "BOOT"
    assert boot.mokmanager is not None
    assert boot.grub_cfg == PurePosixPath("/boot/grub/grub.cfg")


def test_arm64_image_on_any_host(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    make_esp(
        rootfs,
        {
            "/boot/efi/EFI/BOOT/bootaa64.efi": pe_stub(0xAA64),
            "/boot/efi/EFI/BOOT/grubaa64.efi": pe_stub(0xAA64),
            "/boot/grub2/grub.cfg": b"linux /boot/vmlinuz-1\n",
        },
    )
    assert find_boot_files(rootfs).arch is Arch.AA64


def test_missing_pieces_are_image_errors(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    with pytest.raises(ImageError, match="no shim"):
        find_boot_files(rootfs)
    rootfs.write_bytes("/boot/efi/EFI/BOOT/bootx64.efi", pe_stub(0x8664))
    with pytest.raises(ImageError, match="no grub EFI binary"):
        find_boot_files(rootfs)
    with pytest.raises(ImageError, match="no grub config"):
        find_grub_cfg(rootfs)
    rootfs.write_text("/boot/grub2/grub.cfg", "search -n -u 1 -s\nconfigfile $prefix/x.cfg\n")
    with pytest.raises(ImageError, match="only redirect"):
        find_grub_cfg(rootfs)


def test_kernel_version_of_prefers_the_longest_match() -> None:
    versions = ["6.6.10", "6.6.10.1", "6.1.0-56-amd64"]
    assert kernel_version_of("initramfs-6.6.10.1.img", versions) == "6.6.10.1"
    assert kernel_version_of("initramfs-6.6.10.img", versions) == "6.6.10"
    assert kernel_version_of("initrd.img-6.1.0-56-amd64", versions) == "6.1.0-56-amd64"
    assert kernel_version_of("initrd.img", versions) is None
