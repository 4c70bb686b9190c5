"""FAT filesystems (the ESP) read in userspace: the build kernel has no vfat driver.

Files are listed and extracted with mtools at a byte offset of the disk image
(``mcopy -i disk.raw@@OFFSET``: 0.08 s for a 96 MB ESP, perf-baselines §5); the volume id and
label, which fstab's ``UUID=ABCD-1234`` / ``LABEL=`` refer to, are parsed from the boot sector.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from pathlib import Path

from liveos.errors import ImageError
from liveos.run import output, run

#: mtools refuses some valid-but-odd geometries (e.g. mkfs.vfat --offset images) without this.
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


class FatType(enum.StrEnum):
    """The FAT variant of a filesystem (decided by its cluster count)."""

    FAT12 = "fat12"
    FAT16 = "fat16"
    FAT32 = "fat32"


@dataclass(frozen=True)
class FatVolume:
    """Identity of a FAT filesystem as fstab and blkid name it."""

    fat_type: FatType
    volume_id: str  #: ``ABCD-1234`` (upper-case hex, as blkid prints it)
    label: str | None  #: volume label from the boot sector, None if unset

    @classmethod
    def parse(cls, boot_sector: bytes) -> FatVolume:
        """Parse a FAT boot sector (BPB + extended BPB). Raises ValueError if it is not FAT."""
        if len(boot_sector) < 512 or boot_sector[510:512] != b"\x55\xaa":
            raise ValueError("no boot sector signature")
        if boot_sector[0] not in (0xEB, 0xE9):
            raise ValueError("no x86 jump instruction at byte 0")
        bytes_per_sector, _, reserved, fats = struct.unpack_from("<HBHB", boot_sector, 0x0B)
        if bytes_per_sector not in (512, 1024, 2048, 4096) or reserved == 0 or fats == 0:
            raise ValueError("implausible BIOS parameter block")
        (sectors_per_fat16,) = struct.unpack_from("<H", boot_sector, 0x16)
        if sectors_per_fat16 == 0:  # FAT32: extended BPB after the FAT32 fields
            fat_type, ext = FatType.FAT32, 0x40
        else:
            kind = boot_sector[0x36:0x3E]
            fat_type, ext = (FatType.FAT12 if kind.startswith(b"FAT12") else FatType.FAT16), 0x24
        if boot_sector[ext + 2] not in (0x28, 0x29):
            raise ValueError("no extended boot signature (no volume id)")
        (volume_id,) = struct.unpack_from("<I", boot_sector, ext + 3)
        label = None
        if boot_sector[ext + 2] == 0x29:
            text = boot_sector[ext + 7 : ext + 18].decode("latin-1").rstrip()
            label = text if text and text != "NO NAME" else None
        return cls(fat_type, f"{volume_id >> 16:04X}-{volume_id & 0xFFFF:04X}", label)


def read_volume(image: Path, offset: int) -> FatVolume:
    """Volume id and label of the FAT filesystem at ``offset`` of ``image``."""
    with image.open("rb") as f:
        f.seek(offset)
        sector = f.read(512)
    try:
        return FatVolume.parse(sector)
    except ValueError as exc:
        raise ImageError(f"no FAT filesystem at byte {offset} of {image}: {exc}", path=image) from exc


def _drive(image: Path, offset: int) -> str:
    return f"{image}@@{offset}"


def list_files(image: Path, offset: int) -> list[str]:
    """Every path in the FAT filesystem at ``offset`` (directories end with ``/``), e.g. ``/EFI/BOOT/``."""
    text = output(
        ["mdir", "-/", "-b", "-i", _drive(image, offset), "::/"],
        step=f"listing the FAT filesystem at byte {offset} of {image}",
        env=MTOOLS_ENV,
        check=False,
    )
    return sorted(line[2:] if line.startswith("::") else line for line in text.splitlines() if line.strip())


def extract(image: Path, offset: int, dest: Path) -> Path:
    """Copy the whole FAT filesystem at ``offset`` into ``dest`` (created), keeping attributes and times."""
    dest.mkdir(parents=True, exist_ok=True)
    if not list_files(image, offset):
        read_volume(image, offset)  # an empty ESP is fine; a non-FAT one is not
        return dest
    run(
        ["mcopy", "-s", "-n", "-p", "-m", "-i", _drive(image, offset), "::/", f"{dest}/"],
        step=f"extracting the FAT filesystem at byte {offset} of {image}",
        hint="the ESP may be corrupt; check it with: fsck.vfat -n",
        env=MTOOLS_ENV,
    )
    return dest
