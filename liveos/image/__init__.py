"""Opening inputs: a disk image or a liveos ISO, read-only, as a writable OS tree.

:func:`open_image` is the entry point (the content decides the kind); the submodules are its
steps and usable alone: :mod:`.formats` (detection, raw view), :mod:`.partitions` (GPT/MBR),
:mod:`.fstab`, :mod:`.fat` (the ESP in userspace), :mod:`.disk` (:class:`DiskImage`),
:mod:`.isofs` (reading ISO 9660) and :mod:`.live_iso` (:class:`LiveIsoImage`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from liveos.image.base import SourceImage
from liveos.image.disk import DiskImage, Esp, Mount
from liveos.image.fat import FatVolume
from liveos.image.formats import DiskFormat, ImageInfo, RawView, detect
from liveos.image.fstab import Filesystem, FstabEntry, parse_fstab
from liveos.image.isofs import IsoReader
from liveos.image.live_iso import LiveIsoImage
from liveos.image.partitions import Partition, PartitionTable, TableKind, read_partition_table


@contextlib.contextmanager
def open_image(path: str | os.PathLike[str], *, workdir: Path | None = None) -> Iterator[SourceImage]:
    """Open ``path`` read-only as a writable OS tree: a :class:`DiskImage` (raw, qcow2, vhd, vhdx)
    or a :class:`LiveIsoImage` (an ISO liveos wrote), detected from the content.

    ``workdir`` (default ``/var/tmp``) holds the scratch dir, removed on exit. Needs root.
    """
    info = detect(Path(path))
    opened: contextlib.AbstractContextManager[SourceImage]
    if info.format is DiskFormat.ISO:
        opened = LiveIsoImage.open(info.path, workdir=workdir)
    else:
        opened = DiskImage.open(info, workdir=workdir)
    with opened as image:
        yield image


__all__ = [
    "DiskFormat",
    "DiskImage",
    "Esp",
    "FatVolume",
    "Filesystem",
    "FstabEntry",
    "ImageInfo",
    "IsoReader",
    "LiveIsoImage",
    "Mount",
    "Partition",
    "PartitionTable",
    "RawView",
    "SourceImage",
    "TableKind",
    "detect",
    "open_image",
    "parse_fstab",
    "read_partition_table",
]
