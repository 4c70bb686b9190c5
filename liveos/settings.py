"""Closed choices (enums) and build settings (frozen dataclasses) shared by every module."""

from __future__ import annotations

import enum


class InitramfsMode(enum.StrEnum):
    """How the OS reaches the booted machine.

    ``BOOTSTRAP``: a small dracut initrd finds ``/liveos/rootfs.img`` (squashfs) on the media or
    downloads the ISO (PXE) and pivots into an overlay of it.
    ``FULL_OS``: the whole OS is the initrd (a compressed newc CPIO); no ``root=``, no pivot.
    """

    BOOTSTRAP = "bootstrap"
    FULL_OS = "full-os"


class Compression(enum.StrEnum):
    """Compressor for a CPIO initrd stream."""

    ZSTD = "zstd"
    GZIP = "gzip"
    XZ = "xz"
    NONE = "none"


class Arch(enum.StrEnum):
    """UEFI architecture of an image, named by its EFI file-name suffix."""

    X64 = "x64"
    AA64 = "aa64"

    @property
    def shim_name(self) -> str:
        """File name of shim on removable media (``bootx64.efi``)."""
        return f"boot{self.value}.efi"

    @property
    def grub_name(self) -> str:
        """File name of grub next to shim (``grubx64.efi``)."""
        return f"grub{self.value}.efi"
