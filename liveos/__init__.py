"""liveos: turn an existing OS disk image into a bootable Live OS (UEFI ISO and PXE).

    from liveos import LiveOS

    with LiveOS.open("disk.qcow2") as live:
        live.rootfs.remove_fstab()
        live.with_kernel_args("quiet").bootstrap().write_iso("live.iso")

The building blocks are public too: :class:`SourceImage` (open an image read-only as an OS tree),
:class:`RootFs` (the customisable tree), :class:`GrubConfig` (lossless grub.cfg edits),
:class:`Initramfs` (bootstrap dracut initrd or full-os CPIO), :class:`IsoWriter`,
:class:`PxeBundle`. Errors are split by fault; see :mod:`liveos.errors`.
"""

from __future__ import annotations

from liveos.errors import (
    CommandError,
    HostError,
    ImageError,
    InternalError,
    LiveOSError,
    MissingToolError,
    UsageError,
)
from liveos.grub import BlsEntry, GrubConfig
from liveos.image import SourceImage
from liveos.initramfs import Initramfs
from liveos.iso import IsoReader, IsoWriter
from liveos.live import LiveOS, LiveSettings
from liveos.pxe import PxeBundle, write_pxe
from liveos.rootfs import RootFs
from liveos.settings import Arch, Compression, InitramfsMode
from liveos.squashfs import SquashfsPreset

__version__ = "0.1.0"

__all__ = [
    "Arch",
    "BlsEntry",
    "CommandError",
    "Compression",
    "GrubConfig",
    "HostError",
    "ImageError",
    "Initramfs",
    "InitramfsMode",
    "InternalError",
    "IsoReader",
    "IsoWriter",
    "LiveOS",
    "LiveOSError",
    "LiveSettings",
    "MissingToolError",
    "PxeBundle",
    "RootFs",
    "SourceImage",
    "SquashfsPreset",
    "UsageError",
    "__version__",
    "write_pxe",
]
