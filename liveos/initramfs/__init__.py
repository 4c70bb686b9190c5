"""Initramfs: the two ways a live OS starts.

* :meth:`Initramfs.bootstrap` -- a small dracut initrd (built inside the image) that finds
  ``/liveos/rootfs.img`` on the media, or downloads the ISO, and pivots into an overlay of it.
* :meth:`Initramfs.full_os` -- the whole OS (minus ``/boot``) as a compressed newc CPIO that the
  kernel unpacks into its rootfs; no ``root=``, no pivot.
"""

from __future__ import annotations

from pathlib import Path

from liveos.initramfs.dracut import DracutInfo, build_bootstrap_initrd
from liveos.rootfs import RootFs

__all__ = ["DracutInfo", "Initramfs"]


class Initramfs:
    """Builders of live initrds (stateless; see the module docstring)."""

    @staticmethod
    def bootstrap(rootfs: RootFs, kernel_version: str, out: Path) -> Path:
        """dracut in a chroot of ``rootfs`` with dmsquash-live + livenet; the initrd lands at ``out``."""
        return build_bootstrap_initrd(rootfs, kernel_version, out)
