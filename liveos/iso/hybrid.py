"""Make a UEFI ISO bootable when written raw to a USB disk: a GPT in the ISO's system area.

The first 32 KiB of an ISO 9660 image are unused (pycdlib leaves them zero). We put there a
protective MBR and the primary GPT (512-byte sectors, LBA 1..33) whose only partition is an EFI
System Partition covering exactly the El Torito FAT image *inside* the ISO, and append a backup GPT
so the backup header is the last LBA of the file. Firmware booting the file as a disk finds the
ESP and loads ``EFI/BOOT/boot<arch>.efi`` from it; as a CD it still uses El Torito; the
ISO 9660 volume descriptors (from 32 KiB on) are untouched, and blkid still reports the iso9660
label on the whole disk (its superblock lies outside every partition).

BIOS boot from USB is GRUB's ``boot_hybrid.img`` in the MBR's boot code area
(:mod:`liveos.iso.biosboot`; none when BIOS boot is off). ``PartitionScheme.GPT`` (protective
MBR, the UEFI-spec way) is the default; ``HYBRID_MBR`` additionally lists the ESP as an MBR
partition of type 0xEF for firmware that only reads MBRs (UEFI firmware honours the GPT when an
0xEE entry exists).

GUIDs are derived from the primary volume descriptor, so reproducible ISOs stay reproducible.
"""

from __future__ import annotations

import enum
import hashlib
import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import BinaryIO

from liveos.errors import ImageError, InternalError

SECTOR = 512
ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
_ENTRY_COUNT = 128
_ENTRY_SIZE = 128
_ENTRY_SECTORS = _ENTRY_COUNT * _ENTRY_SIZE // SECTOR  # 32
_SYSTEM_AREA = 32 * 1024
MBR_CODE_SIZE = 440  #: the MBR's boot code area; the disk signature follows
_HEADER_FMT = "<8sIIIIQQQQ16sQIII"
_HEADER_SIZE = struct.calcsize(_HEADER_FMT)  # 92
_ENTRY_FMT = "<16s16sQQQ72s"
_MBR_ENTRY_FMT = "<B3sB3sII"
_GUID_NAMESPACE = uuid.UUID("6c1b9f0e-5d0a-4f0b-9a55-6c6976656f73")


class PartitionScheme(enum.StrEnum):
    """Partition table written into the ISO's system area."""

    GPT = "gpt"
    HYBRID_MBR = "hybrid-mbr"


@dataclass(frozen=True)
class Extent:
    """A byte range of the image (offset and size in bytes)."""

    offset: int
    size: int


@dataclass(frozen=True)
class MbrPartition:
    """One of the four MBR partition entries (LBA addressing; CHS fields are filler)."""

    type: int
    first_lba: int
    sectors: int
    bootable: bool = False

    def pack(self) -> bytes:
        """The 16-byte MBR partition entry."""
        chs = b"\xfe\xff\xff"
        return struct.pack(
            _MBR_ENTRY_FMT, 0x80 if self.bootable else 0, chs, self.type, chs, self.first_lba, self.sectors
        )

    @classmethod
    def parse(cls, data: bytes) -> MbrPartition:
        """Read a 16-byte MBR partition entry."""
        status, _, ptype, _, first, count = struct.unpack(_MBR_ENTRY_FMT, data)
        return cls(ptype, first, count, status == 0x80)


@dataclass(frozen=True)
class GptPartition:
    """A GPT partition entry; LBAs inclusive, in 512-byte sectors."""

    type_guid: uuid.UUID
    guid: uuid.UUID
    first_lba: int
    last_lba: int
    name: str = ""
    attributes: int = 0

    def pack(self) -> bytes:
        """The 128-byte GPT partition entry."""
        name = self.name.encode("utf-16-le")[:72]
        return struct.pack(
            _ENTRY_FMT, self.type_guid.bytes_le, self.guid.bytes_le, self.first_lba, self.last_lba,
            self.attributes, name,
        )  # fmt: skip

    @classmethod
    def parse(cls, data: bytes) -> GptPartition:
        """Read a 128-byte GPT partition entry."""
        ptype, guid, first, last, attrs, name = struct.unpack(_ENTRY_FMT, data)
        return cls(
            uuid.UUID(bytes_le=ptype), uuid.UUID(bytes_le=guid), first, last,
            name.decode("utf-16-le").rstrip("\0"), attrs,
        )  # fmt: skip


@dataclass(frozen=True)
class GptHeader:
    """A GPT header (primary or backup); ``pack`` computes its CRC."""

    current_lba: int
    backup_lba: int
    first_usable_lba: int
    last_usable_lba: int
    disk_guid: uuid.UUID
    entries_lba: int
    entries_crc: int
    entry_count: int = _ENTRY_COUNT
    entry_size: int = _ENTRY_SIZE

    def pack(self) -> bytes:
        """The 92-byte GPT header with its CRC filled in."""

        def raw(crc: int) -> bytes:
            return struct.pack(
                _HEADER_FMT, b"EFI PART", 0x00010000, _HEADER_SIZE, crc, 0, self.current_lba,
                self.backup_lba, self.first_usable_lba, self.last_usable_lba, self.disk_guid.bytes_le,
                self.entries_lba, self.entry_count, self.entry_size, self.entries_crc,
            )  # fmt: skip

        return raw(zlib.crc32(raw(0))).ljust(SECTOR, b"\0")

    @classmethod
    def parse(cls, sector: bytes) -> GptHeader:
        """Read a GPT header sector, checking its signature, size and CRC (ImageError otherwise)."""
        fields = struct.unpack(_HEADER_FMT, sector[:_HEADER_SIZE])
        sig, rev, hsize, crc, _, cur, backup, first, last, guid, elba, count, esize, ecrc = fields
        if sig != b"EFI PART" or hsize != _HEADER_SIZE:
            raise ImageError("no GPT header (bad signature or header size)")
        header = cls(cur, backup, first, last, uuid.UUID(bytes_le=guid), elba, ecrc, count, esize)
        if header.pack()[:_HEADER_SIZE] != sector[:_HEADER_SIZE]:
            raise ImageError(f"GPT header at LBA {cur} has a bad CRC (rev {rev:#x}, crc {crc:#x})")
        return header


@dataclass(frozen=True)
class HybridLayout:
    """The partition tables of a hybrid ISO: MBR entries, primary GPT header, partitions."""

    mbr: tuple[MbrPartition, ...]
    header: GptHeader
    partitions: tuple[GptPartition, ...]

    @classmethod
    def build(
        cls,
        total_sectors: int,
        esp: Extent,
        scheme: PartitionScheme,
        disk_guid: uuid.UUID,
        esp_guid: uuid.UUID,
        extra: tuple[GptPartition, ...] = (),
    ) -> HybridLayout:
        """The layout for an image of ``total_sectors`` with the ESP over ``esp`` (and ``extra``
        GPT partitions after it: a persistent USB's, :mod:`liveos.media.persistence`)."""
        if esp.offset % SECTOR or esp.size <= 0:
            raise InternalError(f"ESP extent {esp} is not sector aligned")
        last = total_sectors - 1
        first_usable = 2 + _ENTRY_SECTORS
        last_usable = last - 1 - _ENTRY_SECTORS
        esp_first = esp.offset // SECTOR
        esp_last = esp_first + -(-esp.size // SECTOR) - 1
        if esp_first < first_usable or esp_last > last_usable:
            raise InternalError(f"ESP extent {esp} lies outside the usable GPT area")
        part = GptPartition(ESP_TYPE, esp_guid, esp_first, esp_last, "EFI boot image")
        for other in extra:
            if other.first_lba < first_usable or other.last_lba > last_usable:
                raise InternalError(f"GPT partition {other.name!r} lies outside the usable GPT area")
        entries_crc = zlib.crc32(_entries_blob((part, *extra)))
        header = GptHeader(1, last, first_usable, last_usable, disk_guid, 2, entries_crc)
        mbr: tuple[MbrPartition, ...] = (MbrPartition(0xEE, 1, min(last, 0xFFFFFFFF)),)
        if scheme is PartitionScheme.HYBRID_MBR:
            mbr = (
                MbrPartition(0xEE, 1, first_usable - 1),
                MbrPartition(0xEF, esp_first, esp_last - esp_first + 1),
            )
        return cls(mbr, header, (part, *extra))

    def backup_header(self) -> GptHeader:
        """The backup header: at the last LBA, entries just before it."""
        h = self.header
        return GptHeader(
            h.backup_lba, h.current_lba, h.first_usable_lba, h.last_usable_lba, h.disk_guid,
            h.backup_lba - _ENTRY_SECTORS, h.entries_crc,
        )  # fmt: skip

    def mbr_sector(self, disk_signature: int, boot_code: bytes = b"") -> bytes:
        """Sector 0: boot code (BIOS, up to 440 bytes; none for UEFI only), disk signature, the
        partition entries, 0x55AA."""
        if len(boot_code) > MBR_CODE_SIZE:
            raise InternalError(f"{len(boot_code)} bytes of MBR boot code (at most {MBR_CODE_SIZE})")
        table = b"".join(p.pack() for p in self.mbr).ljust(64, b"\0")
        code = boot_code.ljust(MBR_CODE_SIZE, b"\0")
        return code + struct.pack("<IH", disk_signature, 0) + table + b"\x55\xaa"

    @classmethod
    def parse(cls, fp: BinaryIO) -> HybridLayout:
        """Read the MBR and the primary GPT (CRCs verified) from an image."""
        fp.seek(0)
        head = fp.read((2 + _ENTRY_SECTORS) * SECTOR)
        if len(head) < (2 + _ENTRY_SECTORS) * SECTOR or head[510:512] != b"\x55\xaa":
            raise ImageError("no MBR signature in sector 0")
        mbr = tuple(
            p for i in range(4) if (p := MbrPartition.parse(head[446 + 16 * i : 462 + 16 * i])).type != 0
        )
        header = GptHeader.parse(head[SECTOR : 2 * SECTOR])
        fp.seek(header.entries_lba * SECTOR)
        blob = fp.read(header.entry_count * header.entry_size)
        if zlib.crc32(blob) != header.entries_crc:
            raise ImageError("GPT partition entries have a bad CRC")
        parts = tuple(
            GptPartition.parse(blob[i : i + header.entry_size][:_ENTRY_SIZE])
            for i in range(0, len(blob), header.entry_size)
            if blob[i : i + 16] != b"\0" * 16
        )
        return cls(mbr, header, parts)


def make_hybrid(
    fp: BinaryIO,
    *,
    iso_size: int,
    esp: Extent,
    scheme: PartitionScheme = PartitionScheme.GPT,
    boot_code: bytes = b"",
    extra: tuple[GptPartition, ...] = (),
    end: int = 0,
) -> int:
    """Write the partition tables into the ISO in ``fp`` (``iso_size`` bytes); return the new size.
    ``boot_code`` goes into the MBR's first 440 bytes (BIOS boot from USB, :mod:`.biosboot`).

    The file grows by the backup GPT (33 sectors) and padding to a multiple of 2 KiB, so the
    image is still a whole number of CD sectors. ``extra`` partitions may lie after the ISO data,
    up to ``end`` (bytes): the backup GPT then follows them, still the file's last LBA.
    """
    fp.seek(0)
    if fp.read(_SYSTEM_AREA).strip(b"\0"):
        raise InternalError("the ISO system area is not empty; refusing to overwrite it")
    total = -(-(max(iso_size, end) + (1 + _ENTRY_SECTORS) * SECTOR) // 2048) * 2048
    fp.seek(16 * 2048)
    digest = hashlib.sha256(fp.read(2048)).hexdigest()
    disk_guid = uuid.uuid5(_GUID_NAMESPACE, f"disk:{digest}")
    esp_guid = uuid.uuid5(_GUID_NAMESPACE, f"esp:{digest}")
    layout = HybridLayout.build(total // SECTOR, esp, scheme, disk_guid, esp_guid, extra)
    entries = _entries_blob(layout.partitions)
    backup = layout.backup_header()
    _write_at(fp, 0, layout.mbr_sector(int.from_bytes(disk_guid.bytes[:4], "little"), boot_code))
    _write_at(fp, SECTOR, layout.header.pack())
    _write_at(fp, 2 * SECTOR, entries)
    fp.truncate(total)
    _write_at(fp, backup.entries_lba * SECTOR, entries)
    _write_at(fp, backup.current_lba * SECTOR, backup.pack())
    fp.flush()
    return total


def _entries_blob(partitions: tuple[GptPartition, ...]) -> bytes:
    return b"".join(p.pack() for p in partitions).ljust(_ENTRY_COUNT * _ENTRY_SIZE, b"\0")


def _write_at(fp: BinaryIO, offset: int, data: bytes) -> None:
    fp.seek(offset)
    fp.write(data)
