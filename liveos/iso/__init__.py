"""The ISO output: the El Torito FAT image (:mod:`.efiboot`), the ISO 9660 writer (:mod:`.writer`),
USB hybrid tables (:mod:`.hybrid`), and a plan turned into an ISO (:mod:`.output`).

Reading ISOs is input-side: :class:`liveos.image.isofs.IsoReader`.
"""

from __future__ import annotations

from liveos.iso.efiboot import EfiBootFiles, build_efiboot, build_efiboot_image
from liveos.iso.hybrid import HybridLayout, PartitionScheme, make_hybrid
from liveos.iso.writer import IsoWriter, WrittenIso

__all__ = [
    "EfiBootFiles",
    "HybridLayout",
    "IsoWriter",
    "PartitionScheme",
    "WrittenIso",
    "build_efiboot",
    "build_efiboot_image",
    "make_hybrid",
]
