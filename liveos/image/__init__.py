"""Opening an input disk image: format detection, partition tables, mounts, the merged OS tree.

``SourceImage.open(path)`` is the entry point; the submodules are its steps and are usable alone.
"""

from __future__ import annotations

from liveos.image.fat import FatVolume
from liveos.image.formats import DiskFormat, ImageInfo, RawView, detect
from liveos.image.fstab import Filesystem, FstabEntry, parse_fstab
from liveos.image.mounts import chroot_mounts, signals_as_exceptions
from liveos.image.partitions import Partition, PartitionTable, TableKind, read_partition_table
from liveos.image.source import Esp, Mount, SourceImage

__all__ = [
    "DiskFormat",
    "Esp",
    "FatVolume",
    "Filesystem",
    "FstabEntry",
    "ImageInfo",
    "Mount",
    "Partition",
    "PartitionTable",
    "RawView",
    "SourceImage",
    "TableKind",
    "chroot_mounts",
    "detect",
    "parse_fstab",
    "read_partition_table",
    "signals_as_exceptions",
]
