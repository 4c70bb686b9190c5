"""UEFI Live ISO output: the El Torito FAT image, the ISO 9660 writer, USB hybrid tables, a reader."""

from __future__ import annotations

from liveos.iso.efiboot import EfiBootFiles, build_efiboot, build_efiboot_image
from liveos.iso.hybrid import HybridLayout, PartitionScheme, make_hybrid
from liveos.iso.reader import EntryKind, IsoEntry, IsoReader
from liveos.iso.writer import IsoWriter, WrittenIso, validate_label
from liveos.reproducible import source_date_epoch

__all__ = [
    "EfiBootFiles",
    "EntryKind",
    "HybridLayout",
    "IsoEntry",
    "IsoReader",
    "IsoWriter",
    "PartitionScheme",
    "WrittenIso",
    "build_efiboot",
    "build_efiboot_image",
    "make_hybrid",
    "source_date_epoch",
    "validate_label",
]
