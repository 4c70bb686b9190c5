"""The PXE output: :mod:`.output` (a plan becomes a TFTP tree), :mod:`.bundle` (the tree and its
folder / .tar.gz writers), :mod:`.netgrub` (which grub can boot over TFTP), :mod:`.urls` (the
bootstrap ISO's URL)."""

from __future__ import annotations

from liveos.pxe.bundle import PxeBundle, Symlink
from liveos.pxe.urls import BootstrapUrl

__all__ = ["BootstrapUrl", "PxeBundle", "Symlink"]
