"""Initramfs: a built initrd as a value -- which mode, for which kernel, where it is, how it was made.

Two constructors build one: :meth:`Initramfs.bootstrap` runs the image's own dracut with the
live modules (a small initrd that finds or downloads the root image), :meth:`Initramfs.full_os`
streams the whole OS into a compressed CPIO (no ``root=``, no pivot).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from liveos.cpio.reader import main_compression
from liveos.initramfs.compression import initrd_compression
from liveos.initramfs.dracut import DracutInfo, build_bootstrap_initrd
from liveos.initramfs.fullos import build_full_os_initrd
from liveos.layout import FULL_OS_EXCLUDED
from liveos.rootfs import RootFs
from liveos.settings import Compression, InitramfsMode, Preset


@dataclass(frozen=True)
class Initramfs:
    """One built initrd."""

    mode: InitramfsMode
    path: Path
    size: int
    compression: str  #: the main archive's compressor (``zstd``, ``gzip``, ``xz``, ``none``...)
    level: int | None  #: its level when liveos chose it (full-os); None: the image's dracut chose
    kernel_version: str | None  #: the kernel it serves; None: every kernel (full-os)
    builder: str  #: ``dracut 059-4`` (the image's own) or ``liveos cpio``
    entries: int | None = None  #: archive members (full-os)

    @classmethod
    def bootstrap(
        cls, rootfs: RootFs, kernel_version: str, out: Path, *, preset: Preset = Preset.FAST
    ) -> Initramfs:
        """The image's dracut, sandboxed, with dmsquash-live + livenet; the initrd lands at ``out``.

        ``preset`` decides the compression level (the compressor stays the image's choice).
        """
        info = DracutInfo.probe(rootfs)
        compression = initrd_compression(rootfs, preset)
        build_bootstrap_initrd(rootfs, kernel_version, out, info=info, compress=compression.command)
        found = main_compression(out)
        return cls(
            mode=InitramfsMode.BOOTSTRAP,
            path=out,
            size=out.stat().st_size,
            compression=found,
            level=compression.level if found == compression.name else None,
            kernel_version=kernel_version,
            builder=f"dracut {info.version or '(unknown version)'}",
        )

    @classmethod
    def full_os(
        cls,
        rootfs: RootFs,
        out: Path,
        *,
        compression: Compression,
        level: int,
        exclude: Sequence[str] = FULL_OS_EXCLUDED,
    ) -> Initramfs:
        """The whole OS minus /boot and /etc/fstab (``exclude``) as a compressed newc CPIO at ``out``."""
        stats = build_full_os_initrd(rootfs, out, compression=compression, level=level, exclude=exclude)
        return cls(
            mode=InitramfsMode.FULL_OS,
            path=out,
            size=stats.bytes_out,
            compression=compression.value,
            level=level if compression is not Compression.NONE else None,
            kernel_version=None,
            builder="liveos cpio",
            entries=stats.entries,
        )
