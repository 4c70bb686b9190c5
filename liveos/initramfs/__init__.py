"""Initramfs: the two ways a live OS starts.

* :meth:`Initramfs.bootstrap` -- a small dracut initrd (built inside the image) that finds
  ``/liveos/rootfs.img`` on the media, or downloads the ISO, and pivots into an overlay of it.
* :meth:`Initramfs.full_os` -- the whole OS (minus ``/boot``) as a compressed newc CPIO that the
  kernel unpacks into its rootfs; no ``root=``, no pivot.
"""

from __future__ import annotations

from pathlib import Path

from liveos.initramfs.cpio import CpioEntry, CpioHeader, CpioStats, write_newc
from liveos.initramfs.cpio_reader import extract, iter_entries, read_entries
from liveos.initramfs.dracut import DracutInfo, build_bootstrap_initrd
from liveos.initramfs.fullos import FullOsInitrd, build_full_os_initrd
from liveos.rootfs import RootFs
from liveos.settings import Compression

__all__ = [
    "CpioEntry",
    "CpioHeader",
    "CpioStats",
    "DracutInfo",
    "FullOsInitrd",
    "Initramfs",
    "extract",
    "iter_entries",
    "read_entries",
    "write_newc",
]


class Initramfs:
    """Builders of live initrds (stateless; see the module docstring)."""

    @staticmethod
    def bootstrap(rootfs: RootFs, kernel_version: str, out: Path) -> Path:
        """dracut in a chroot of ``rootfs`` with dmsquash-live + livenet; the initrd lands at ``out``."""
        return build_bootstrap_initrd(rootfs, kernel_version, out)

    @staticmethod
    def full_os(
        rootfs: RootFs,
        out: Path,
        *,
        compression: Compression = Compression.ZSTD,
        level: int | None = None,
    ) -> FullOsInitrd:
        """The whole OS minus /boot and /etc/fstab as a compressed newc CPIO at ``out``."""
        return build_full_os_initrd(rootfs, out, compression=compression, level=level)
