"""``/etc/fstab`` entries and how they map to the partitions of the image.

fstab names filesystems (``UUID=``, ``LABEL=``) or partitions (``PARTUUID=``, ``PARTLABEL=``, a
``/dev`` path); the identity of each partition's filesystem is probed in userspace with
``blkid -p`` at the partition's offset in the raw disk -- no loop device, no mount.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.errors import ImageError
from liveos.image.fat import FatVolume
from liveos.image.partitions import Partition
from liveos.run import run

log = logging.getLogger("liveos")

ROOT_FSTYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs"})
FAT_ALIASES = frozenset({"vfat", "fat", "msdos", "umsdos"})


class SpecKind(enum.StrEnum):
    """What the first fstab field names."""

    UUID = "UUID"
    PARTUUID = "PARTUUID"
    LABEL = "LABEL"
    PARTLABEL = "PARTLABEL"
    DEVICE = "device"  #: a /dev path
    OTHER = "other"  #: tmpfs, proc, a network share, a bind source ...


_BY_DIR = {
    "/dev/disk/by-uuid/": SpecKind.UUID,
    "/dev/disk/by-partuuid/": SpecKind.PARTUUID,
    "/dev/disk/by-label/": SpecKind.LABEL,
    "/dev/disk/by-partlabel/": SpecKind.PARTLABEL,
}


#: Longest fstab line read: a spec and a mount point of PATH_MAX each, options of a page.
MAX_LINE = 16 * 1024
#: freq and passno: small non-negative decimal numbers (dump frequency, fsck order).
_NUMBER = re.compile(r"[0-9]{1,9}")
_SHOWN = 80


def _shown(line: str) -> str:
    """A line for an error message: repr'd and cut short (a hostile one may be huge)."""
    text = line.strip()
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} characters)"


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _escape(field: str) -> str:
    return re.sub(r"[\s\\]", lambda m: f"\\{ord(m.group(0)):03o}", field)


@dataclass(frozen=True)
class FstabEntry:
    """One fstab line: ``spec file vfstype options freq passno``."""

    spec: str
    file: PurePosixPath
    vfstype: str
    options: tuple[str, ...] = ("defaults",)
    freq: int = 0
    passno: int = 0

    @classmethod
    def parse(cls, line: str, *, path: Path | None = None) -> FstabEntry | None:
        """Parse one line; None for blank lines and comments. Raises :class:`ImageError` on a
        malformed line (see :func:`parse_fstab`, which also names the line number)."""
        try:
            return cls._parse(line)
        except ValueError as exc:
            raise ImageError(f"fstab line is malformed ({exc}): {_shown(line)}", path=path) from exc

    @classmethod
    def _parse(cls, line: str) -> FstabEntry | None:
        """:meth:`parse`, raising ValueError saying what is wrong."""
        if len(line) > MAX_LINE:
            raise ValueError(f"{len(line)} characters long, more than {MAX_LINE}")
        text = line.strip()
        if not text or text.startswith("#"):
            return None
        fields = text.split()
        if len(fields) < 2 or len(fields) > 6:
            raise ValueError(f"expected 2-6 fields, found {len(fields)}")
        fields += ["auto", "defaults", "0", "0"][len(fields) - 2 :]
        spec, file, vfstype, options, freq, passno = fields
        for name, number in (("freq", freq), ("passno", passno)):
            if not _NUMBER.fullmatch(number):
                raise ValueError(f"{name} {number[:20]!r} is not a small number")
        entry = cls(
            spec=_unescape(spec),
            file=PurePosixPath(_unescape(file)) if file.startswith("/") else PurePosixPath(file),
            vfstype=vfstype,
            options=tuple(o for o in options.split(",") if o),
            freq=int(freq),
            passno=int(passno),
        )
        if "\0" in entry.spec or "\0" in str(entry.file) or "\0" in vfstype or "\0" in options:
            raise ValueError("a field holds a NUL character")
        return entry

    def line(self) -> str:
        """The fstab line for this entry (inverse of :meth:`parse`)."""
        return " ".join(
            [_escape(self.spec), _escape(str(self.file)), self.vfstype, ",".join(self.options) or "defaults",
             str(self.freq), str(self.passno)]
        )  # fmt: skip

    @property
    def kind(self) -> SpecKind:
        """How the entry names its device (UUID=, LABEL=, a /dev/disk/by-* path, a device path...)."""
        prefix, sep, _ = self.spec.partition("=")
        if sep and prefix.upper() in SpecKind.__members__:
            return SpecKind[prefix.upper()]
        for directory, kind in _BY_DIR.items():
            if self.spec.startswith(directory):
                return kind
        return SpecKind.DEVICE if self.spec.startswith("/dev/") else SpecKind.OTHER

    @property
    def value(self) -> str:
        """The identifier without its ``UUID=`` prefix or ``/dev/disk/by-*/`` directory."""
        _, sep, rest = self.spec.partition("=")
        if sep and self.kind not in (SpecKind.DEVICE, SpecKind.OTHER):
            return rest.strip("\"'")
        for directory in _BY_DIR:
            if self.spec.startswith(directory):
                return self.spec[len(directory) :]
        return self.spec

    def option(self, name: str) -> str | None:
        """Value of ``name=value`` in the options (``""`` for a bare flag), None if absent."""
        for opt in self.options:
            key, sep, val = opt.partition("=")
            if key == name:
                return val if sep else ""
        return None

    @property
    def subvol(self) -> str | None:
        """btrfs ``subvol=`` option (``subvolid=`` is kept in options and passed through)."""
        return self.option("subvol")

    @property
    def optional(self) -> bool:
        """True if boot does not need it (``noauto``/``nofail``): a missing device is not an error."""
        return self.option("noauto") is not None or self.option("nofail") is not None

    @property
    def is_disk(self) -> bool:
        """True for entries that mount a filesystem of a partition at a path (not swap, tmpfs, NFS ...)."""
        if not str(self.file).startswith("/") or self.vfstype in ("swap", "none"):
            return False
        if self.option("bind") is not None or self.option("rbind") is not None:
            return False
        return self.kind is not SpecKind.OTHER


def parse_fstab(text: str, *, path: Path | None = None) -> list[FstabEntry]:
    """Parse fstab text; a malformed line raises :class:`ImageError` naming the line."""
    entries: list[FstabEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            entry = FstabEntry._parse(line)
        except ValueError as exc:
            raise ImageError(f"fstab line {number} is malformed ({exc}): {_shown(line)}", path=path) from exc
        if entry is not None:
            entries.append(entry)
    return entries


@dataclass(frozen=True)
class Filesystem:
    """What a partition holds, as blkid (or the FAT boot sector) reports it."""

    partition: Partition
    fstype: str | None
    uuid: str | None = None
    label: str | None = None

    def matches(self, entry: FstabEntry) -> bool:
        """Whether ``entry``'s device spec names this filesystem."""
        kind, value = entry.kind, entry.value
        p = self.partition
        if kind is SpecKind.UUID:
            return self.uuid is not None and value.lower() == self.uuid.lower()
        if kind is SpecKind.LABEL:
            return self.label is not None and value == self.label
        if kind is SpecKind.PARTUUID:
            return p.partuuid is not None and value.lower() == p.partuuid.lower()
        if kind is SpecKind.PARTLABEL:
            return p.partlabel is not None and value == p.partlabel
        if kind is SpecKind.DEVICE:
            number = re.search(r"(?:[sv]d[a-z]|xvd[a-z]|nvme\d+n\d+p|mmcblk\d+p|loop\d+p)(\d+)$", entry.spec)
            return number is not None and int(number.group(1)) == p.number
        return False


def probe(raw: Path, partition: Partition) -> Filesystem:
    """Identify the filesystem of ``partition`` with ``blkid -p`` at its offset (userspace, no mount)."""
    proc = run(
        ["blkid", "-p", "-o", "export", "-O", str(partition.start), "-S", str(partition.size), raw],
        step=f"probing partition {partition.number}",
        check=False,
    )
    values: dict[str, str] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        key, sep, val = line.partition("=")
        if sep:
            values[key] = val
    fstype = values.get("TYPE")
    if fstype == "vfat":
        try:
            with raw.open("rb") as f:
                f.seek(partition.start)
                volume = FatVolume.parse(f.read(512))
            return Filesystem(partition, "vfat", volume.volume_id, volume.label or values.get("LABEL"))
        except ValueError:
            pass
    return Filesystem(partition, fstype, values.get("UUID"), values.get("LABEL"))


def match(entry: FstabEntry, filesystems: Sequence[Filesystem]) -> Filesystem | None:
    """The filesystem an fstab entry names; ImageError if several match (ambiguous image)."""
    found = [fs for fs in filesystems if fs.matches(entry)]
    if len(found) > 1:
        numbers = ", ".join(str(fs.partition.number) for fs in found)
        raise ImageError(f"fstab entry {entry.spec} matches several partitions ({numbers})")
    if found and entry.kind is SpecKind.DEVICE:
        log.warning(
            "fstab names %s by device path; assuming partition %d", entry.spec, found[0].partition.number
        )
    return found[0] if found else None


def disk_entries(entries: Iterable[FstabEntry]) -> list[FstabEntry]:
    """Entries that mount a partition, parents first (``/``, then ``/boot``, then ``/boot/efi``)."""
    disk = [e for e in entries if e.is_disk]
    return sorted(disk, key=lambda e: len(PurePosixPath("/", e.file).parts))
