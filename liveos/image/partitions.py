"""GPT and MBR partition tables, parsed in pure Python from a raw disk.

The build kernel has no partition-table parsers (``losetup -P`` makes no ``pN`` devices), so we
read the table ourselves and give each partition its own loop device by offset and size.
GPT headers and entry arrays are CRC-checked; a damaged primary falls back to the backup header.

A CRC only proves the table was written on purpose, not that it is sane: every table is also
checked for what the opener relies on. Each partition has a size, lies inside the disk and
shares no byte with another; there are at most :data:`MAX_PARTITIONS` (each costs a probe and
maybe a loop device), and an extended partition's chain of EBRs neither loops nor runs on.
"""

from __future__ import annotations

import enum
import itertools
import logging
import struct
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

from liveos.errors import ImageError

log = logging.getLogger("liveos")

ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
ESP_MBR_TYPE = 0xEF
GPT_PROTECTIVE = 0xEE
MBR_EXTENDED = frozenset({0x05, 0x0F, 0x85})
GPT_SIGNATURE = b"EFI PART"
MAX_LOGICAL = 128  #: most logical partitions (links of an EBR chain) accepted
#: Most partitions a table may list: an OS image has a handful; Linux itself stops at 256.
MAX_PARTITIONS = 128
#: Largest GPT partition entry array read (the usual one: 128 entries of 128 bytes, 16 KiB).
MAX_ENTRY_ARRAY = 1 << 20
MAX_ENTRY_SIZE = 4096


class TableKind(enum.StrEnum):
    """The partition table scheme of a disk."""

    GPT = "gpt"
    MBR = "mbr"


@dataclass(frozen=True)
class Partition:
    """One partition: where it is (bytes) and how the table names it."""

    number: int  #: 1-based, as Linux numbers it (MBR logical partitions start at 5)
    start: int  #: byte offset in the disk
    size: int  #: bytes
    type_guid: str | None = None  #: GPT partition type (lower-case GUID)
    type_byte: int | None = None  #: MBR partition type
    partuuid: str | None = None  #: GPT unique GUID, or MBR ``<disk signature>-<NN>``
    partlabel: str | None = None  #: GPT name
    is_esp: bool = False

    @property
    def end(self) -> int:
        """Byte offset just past the partition."""
        return self.start + self.size


@dataclass(frozen=True)
class PartitionTable:
    """A disk's partition table: its kind, disk id, sector size and partitions."""

    kind: TableKind
    disk_id: str  #: GPT disk GUID or MBR disk signature (8 hex digits)
    sector_size: int
    partitions: tuple[Partition, ...]

    def by_number(self, number: int) -> Partition:
        """The partition with this number (KeyError if there is none)."""
        for p in self.partitions:
            if p.number == number:
                return p
        raise KeyError(number)


def read_partition_table(path: Path, disk_size: int | None = None) -> PartitionTable:
    """Parse the GPT (preferred) or MBR of the raw disk ``path`` (first ``disk_size`` bytes)."""
    size = path.stat().st_size if disk_size is None else disk_size
    with path.open("rb") as f:
        disk = _Disk(f, size, path)
        try:
            mbr = disk.read(0, 512)
        except _TableError:
            mbr = b""
        has_mbr = len(mbr) == 512 and mbr[510:512] == b"\x55\xaa"
        mbr_types = [mbr[0x1BE + 16 * i + 4] for i in range(4)] if has_mbr else []
        errors: list[str] = []
        for sector in (512, 4096):
            try:
                table = _read_gpt(disk, sector)
            except _TableError as exc:
                errors.append(f"GPT ({sector}-byte sectors): {exc}")
                continue
            if table is not None:
                return table
        if has_mbr and GPT_PROTECTIVE not in mbr_types:
            return _read_mbr(disk, mbr)
        found = "; ".join(errors) if errors else "no GPT header"
        if not has_mbr:
            found += "; no MBR boot signature (55 aa) at byte 510"
        raise ImageError(
            f"{path} has no readable partition table ({found})",
            path=path,
            hint="liveos needs a partitioned disk image (GPT or MBR); the table may be zeroed or corrupt",
        )


class _TableError(Exception):
    """A header was found but is damaged (bad CRC, out of range)."""


class _Disk:
    def __init__(self, f: object, size: int, path: Path) -> None:
        self.f = f
        self.size = size
        self.path = path

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or offset + length > self.size:
            raise _TableError(
                f"read of {length} bytes at {offset} is past the end of the disk ({self.size})"
            )
        self.f.seek(offset)  # type: ignore[attr-defined]
        data: bytes = self.f.read(length)  # type: ignore[attr-defined]
        if len(data) != length:
            raise _TableError(f"short read at {offset}")
        return data


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=raw))


def _read_gpt(disk: _Disk, sector: int) -> PartitionTable | None:
    """Primary GPT, else the backup; None if neither header signature is present."""
    if disk.size < 2 * sector:
        return None
    primary = disk.read(sector, sector)
    last_lba = disk.size // sector - 1
    if primary[:8] == GPT_SIGNATURE:
        try:
            return _parse_gpt(disk, sector, primary, 1)
        except _TableError as exc:
            log.warning("%s: primary GPT is damaged (%s), trying the backup", disk.path, str(exc))
            (alternate,) = struct.unpack_from("<Q", primary, 32)
            candidates = [lba for lba in (alternate, last_lba) if 1 < lba <= last_lba]
            primary_error = exc
    else:
        candidates = [last_lba]
        primary_error = None
    for lba in dict.fromkeys(candidates):
        backup = disk.read(lba * sector, sector)
        if backup[:8] == GPT_SIGNATURE:
            table = _parse_gpt(disk, sector, backup, lba)
            log.warning("%s: using the backup GPT at LBA %d", disk.path, lba)
            return table
    if primary_error is not None:
        raise _TableError(f"primary header damaged ({primary_error}) and no backup header found")
    return None


def _parse_gpt(disk: _Disk, sector: int, header: bytes, my_lba: int) -> PartitionTable:
    (header_size,) = struct.unpack_from("<I", header, 12)
    if not 92 <= header_size <= sector:
        raise _TableError(f"header size {header_size} out of range")
    (crc,) = struct.unpack_from("<I", header, 16)
    check = header[:16] + b"\0\0\0\0" + header[20:header_size]
    if zlib.crc32(check) != crc:
        raise _TableError("header CRC mismatch")
    (lba,) = struct.unpack_from("<Q", header, 24)
    if lba != my_lba:
        raise _TableError(f"header says it is at LBA {lba}, found at LBA {my_lba}")
    disk_guid = _guid(header[56:72])
    entries_lba, count, entry_size, entries_crc = struct.unpack_from("<QIII", header, 72)
    if (
        not 128 <= entry_size <= MAX_ENTRY_SIZE
        or entry_size % 8
        or count > 4096
        or count * entry_size > MAX_ENTRY_ARRAY
    ):
        raise _TableError(f"implausible entry array ({count} entries of {entry_size} bytes)")
    array = disk.read(entries_lba * sector, count * entry_size)
    if zlib.crc32(array) != entries_crc:
        raise _TableError("partition entry array CRC mismatch")
    parts: list[Partition] = []
    for index in range(count):
        entry = array[index * entry_size : (index + 1) * entry_size]
        if not entry[:16].strip(b"\0"):
            continue
        first, last = struct.unpack_from("<QQ", entry, 32)
        if last < first:
            raise _TableError(f"partition {index + 1} ends (LBA {last}) before it starts (LBA {first})")
        if (last + 1) * sector > disk.size:
            raise _TableError(f"partition {index + 1} spans LBA {first}-{last}, outside the disk")
        type_guid = _guid(entry[:16])
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\0", 1)[0]
        parts.append(
            Partition(
                number=index + 1,
                start=first * sector,
                size=(last - first + 1) * sector,
                type_guid=type_guid,
                partuuid=_guid(entry[16:32]),
                partlabel=name,
                is_esp=type_guid == ESP_GUID,
            )
        )
    problem = _layout_problem(parts, sector)
    if problem:
        raise _TableError(problem)
    return PartitionTable(TableKind.GPT, disk_guid, sector, tuple(parts))


def _layout_problem(parts: list[Partition], sector: int) -> str | None:
    """What makes ``parts`` unusable: too many, an empty one, two sharing bytes; None if sane."""
    if len(parts) > MAX_PARTITIONS:
        return f"{len(parts)} partitions, more than {MAX_PARTITIONS}"
    for part in parts:
        if part.size <= 0 or part.start < 0:
            return f"partition {part.number} has no size"
    ordered = sorted(parts, key=lambda p: (p.start, p.end))
    for before, after in itertools.pairwise(ordered):
        if after.start < before.end:
            return (
                f"partitions {before.number} (LBA {before.start // sector}-{before.end // sector - 1}) and "
                f"{after.number} (LBA {after.start // sector}-{after.end // sector - 1}) overlap"
            )
    return None


def _mbr_entries(record: bytes) -> list[tuple[int, int, int]]:
    """(type, first LBA, sectors) of the four slots of an MBR/EBR, empty slots skipped."""
    out = []
    for i in range(4):
        kind = record[0x1BE + 16 * i + 4]
        first, count = struct.unpack_from("<II", record, 0x1BE + 16 * i + 8)
        if kind and count:
            out.append((kind, first, count))
    return out


def _read_mbr(disk: _Disk, mbr: bytes) -> PartitionTable:
    signature = f"{struct.unpack_from('<I', mbr, 0x1B8)[0]:08x}"
    parts: list[Partition] = []
    extended: tuple[int, int] | None = None
    for slot in range(4):
        base = 0x1BE + 16 * slot
        kind = mbr[base + 4]
        first, count = struct.unpack_from("<II", mbr, base + 8)
        if mbr[base] not in (0x00, 0x80):
            raise ImageError(
                f"{disk.path}: MBR slot {slot + 1} has an invalid boot flag 0x{mbr[base]:02x} "
                "(garbage table?)",
                path=disk.path,
            )
        if not kind or not count:
            continue
        if kind in MBR_EXTENDED:
            extended = (first, count)
            continue
        parts.append(_mbr_partition(disk, signature, slot + 1, kind, first, count))
    if extended is not None:
        parts.extend(_read_logical(disk, signature, *extended))
    if not parts:
        raise ImageError(f"{disk.path}: the MBR lists no partitions", path=disk.path)
    problem = _layout_problem(parts, 512)
    if problem:
        raise ImageError(
            f"{disk.path}: the MBR partition table is unusable: {problem}",
            path=disk.path,
            hint="the table is corrupt or was crafted; repair it with fdisk",
        )
    return PartitionTable(TableKind.MBR, signature, 512, tuple(parts))


def _mbr_partition(disk: _Disk, signature: str, number: int, kind: int, first: int, count: int) -> Partition:
    start, size = first * 512, count * 512
    if first == 0 or start + size > disk.size:
        raise ImageError(
            f"{disk.path}: MBR partition {number} (LBA {first}, {count} sectors) lies outside the "
            f"{disk.size}-byte disk (garbage or truncated table?)",
            path=disk.path,
        )
    return Partition(
        number=number,
        start=start,
        size=size,
        type_byte=kind,
        partuuid=f"{signature}-{number:02x}",
        is_esp=kind == ESP_MBR_TYPE,
    )


def _read_logical(disk: _Disk, signature: str, ext_first: int, ext_count: int) -> list[Partition]:
    """Follow the EBR chain of an extended partition; logical partitions are numbered from 5."""
    parts: list[Partition] = []
    ebr_lba = ext_first
    seen: set[int] = set()
    for number in range(5, 5 + MAX_LOGICAL + 1):
        if number == 5 + MAX_LOGICAL:
            raise ImageError(
                f"{disk.path}: the extended partition's chain has more than {MAX_LOGICAL} EBRs",
                path=disk.path,
                hint="the table is corrupt or was crafted; repair it with fdisk",
            )
        if ebr_lba in seen:
            raise ImageError(
                f"{disk.path}: the extended partition's chain of EBRs loops back to LBA {ebr_lba}",
                path=disk.path,
                hint="the table is corrupt or was crafted; repair it with fdisk",
            )
        seen.add(ebr_lba)
        try:
            ebr = disk.read(ebr_lba * 512, 512)
        except _TableError as exc:
            raise ImageError(
                f"{disk.path}: extended partition chain is broken ({exc})", path=disk.path
            ) from exc
        if ebr[510:512] != b"\x55\xaa":
            break
        entries = _mbr_entries(ebr)
        logical = [e for e in entries if e[0] not in MBR_EXTENDED]
        if logical:
            kind, rel, count = logical[0]
            parts.append(_mbr_partition(disk, signature, number, kind, ebr_lba + rel, count))
        links = [e for e in entries if e[0] in MBR_EXTENDED]
        if not links:
            break
        ebr_lba = ext_first + links[0][1]
        if not ext_first < ebr_lba < ext_first + ext_count:
            break
    return parts
