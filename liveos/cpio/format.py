"""The newc ("070701") CPIO format: the 110-byte header and one archive member, as values.

``pack``/``parse`` are inverses. Format rules (the kernel's ``init/initramfs.c``, GNU cpio and
bsdtar agree): 13 fields of 8 hex digits, then the NUL-terminated name, padding to 4 bytes, the
data, padding to 4 bytes; names are relative (the root is ``.``); the archive ends with a
``TRAILER!!!`` member.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from liveos.errors import ImageError, UsageError

NEWC_MAGIC = b"070701"
#: The "crc" variant: same layout, the check field holds a byte sum the kernel ignores.
NEWC_CRC_MAGIC = b"070702"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
#: newc stores sizes in 8 hex digits: a file of 4 GiB or more cannot be archived.
MAX_FILE_SIZE = 0xFFFFFFFF
U32 = 0xFFFFFFFF
HEADER_FMT = b"070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X"


def pad4(n: int) -> int:
    """Bytes of zero padding that bring offset ``n`` to a multiple of 4."""
    return -n & 3


@dataclass(frozen=True)
class CpioHeader:
    """The 13 numeric fields of a newc header plus the name; ``pack``/``parse`` are inverses."""

    ino: int
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    filesize: int
    devmajor: int
    devminor: int
    rdevmajor: int
    rdevminor: int
    namesize: int
    check: int = 0

    def pack(self) -> bytes:
        """The 110-byte ASCII header (without the name)."""
        values = (
            self.ino,
            self.mode,
            self.uid,
            self.gid,
            self.nlink,
            self.mtime,
            self.filesize,
            self.devmajor,
            self.devminor,
            self.rdevmajor,
            self.rdevminor,
            self.namesize,
            self.check,
        )
        for value in values:
            if not 0 <= value <= U32:
                raise UsageError(f"newc header field out of range: {value}", hint="values must fit 32 bits")
        return HEADER_FMT % values

    @classmethod
    def parse(cls, data: bytes) -> CpioHeader:
        """Parse the first 110 bytes of ``data``; :class:`ImageError` if it is not a newc header."""
        if len(data) < HEADER_SIZE:
            raise ImageError(f"truncated newc header ({len(data)} of {HEADER_SIZE} bytes)")
        magic = bytes(data[:6])
        if magic not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            raise ImageError(f"bad cpio magic {magic!r}: only newc (070701/070702) archives are supported")
        try:
            fields = [int(data[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ImageError(f"corrupt newc header: {bytes(data[:HEADER_SIZE])!r}") from None
        return cls(*fields)

    @property
    def data_offset(self) -> int:
        """Bytes from the start of the header to the start of the data (header + name + padding)."""
        return HEADER_SIZE + self.namesize + pad4(HEADER_SIZE + self.namesize)


@dataclass(frozen=True)
class CpioEntry:
    """One archive member as a value: what ``write_newc(extra=...)`` injects and the reader returns.

    ``name`` is relative posix (``dev/console``), non-UTF-8 bytes survive as surrogate escapes
    (``os.fsdecode``). ``data`` is a regular file's content; ``linkname`` a symlink's target.
    ``ino`` is only meaningful in parsed archives (hard links share it); the writer renumbers.
    """

    name: str
    mode: int
    uid: int = 0
    gid: int = 0
    nlink: int = 1
    mtime: int = 0
    rdevmajor: int = 0
    rdevminor: int = 0
    data: bytes = b""
    linkname: str | None = None
    ino: int = 0
    size: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if stat.S_ISLNK(self.mode) and self.linkname is None:
            raise UsageError(f"symlink entry {self.name!r} needs a linkname")
        if self.linkname is not None and not stat.S_ISLNK(self.mode):
            raise UsageError(f"entry {self.name!r} has a linkname but is not a symlink")
        if self.data and not stat.S_ISREG(self.mode):
            raise UsageError(f"entry {self.name!r} has data but is not a regular file")

    # -- constructors for synthetic entries -------------------------------------------------
    @classmethod
    def file(cls, name: str, data: bytes, *, mode: int = 0o644, uid: int = 0, gid: int = 0) -> CpioEntry:
        """A regular file with ``data`` as content."""
        return cls(name, stat.S_IFREG | mode, uid, gid, data=data)

    @classmethod
    def directory(cls, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> CpioEntry:
        """A directory (its children come from disk or from other entries)."""
        return cls(name, stat.S_IFDIR | mode, uid, gid, nlink=2)

    @classmethod
    def symlink(cls, name: str, target: str, *, uid: int = 0, gid: int = 0) -> CpioEntry:
        """A symlink ``name -> target`` (e.g. ``init -> /lib/systemd/systemd``)."""
        return cls(name, stat.S_IFLNK | 0o777, uid, gid, linkname=target)

    @classmethod
    def char_device(cls, name: str, major: int, minor: int, *, mode: int = 0o600) -> CpioEntry:
        """A character device node (``dev/console`` is 5:1, mode 0600)."""
        return cls(name, stat.S_IFCHR | mode, rdevmajor=major, rdevminor=minor)

    @classmethod
    def block_device(cls, name: str, major: int, minor: int, *, mode: int = 0o600) -> CpioEntry:
        """A block device node."""
        return cls(name, stat.S_IFBLK | mode, rdevmajor=major, rdevminor=minor)

    @classmethod
    def fifo(cls, name: str, *, mode: int = 0o644) -> CpioEntry:
        """A named pipe."""
        return cls(name, stat.S_IFIFO | mode)

    # -- derived -----------------------------------------------------------------------------
    @property
    def payload(self) -> bytes:
        """The bytes stored after the header: file data, or the symlink target."""
        if self.linkname is not None:
            return os.fsencode(self.linkname)
        return self.data

    @property
    def filesize(self) -> int:
        """Data size in the archive (``size`` when the reader did not load the data)."""
        return self.size if self.size is not None else len(self.payload)

    def header(self, *, ino: int | None = None, mtime: int | None = None) -> CpioHeader:
        """The newc header of this entry."""
        return CpioHeader(
            ino=self.ino if ino is None else ino,
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            nlink=self.nlink,
            mtime=self.mtime if mtime is None else mtime,
            filesize=self.filesize,
            devmajor=0,
            devminor=0,
            rdevmajor=self.rdevmajor,
            rdevminor=self.rdevminor,
            namesize=len(os.fsencode(self.name)) + 1,
        )

    def pack(self) -> bytes:
        """The complete archive member: header, name, padding, payload, padding."""
        name = os.fsencode(self.name) + b"\0"
        payload = self.payload
        head = self.header().pack() + name
        return head + b"\0" * pad4(len(head)) + payload + b"\0" * pad4(len(payload))

    @classmethod
    def from_header(cls, header: CpioHeader, name: str, payload: bytes | None) -> CpioEntry:
        """Build an entry from a parsed header (``payload=None``: data not loaded)."""
        is_link = stat.S_ISLNK(header.mode)
        return cls(
            name=name,
            mode=header.mode,
            uid=header.uid,
            gid=header.gid,
            nlink=header.nlink,
            mtime=header.mtime,
            rdevmajor=header.rdevmajor,
            rdevminor=header.rdevminor,
            data=b"" if is_link or payload is None else payload,
            linkname=os.fsdecode(payload or b"") if is_link else None,
            ino=header.ino,
            size=header.filesize,
        )

    @classmethod
    def parse(cls, data: bytes) -> CpioEntry:
        """Parse one complete member from the start of ``data`` (the inverse of :meth:`pack`)."""
        header = CpioHeader.parse(data)
        name_end = HEADER_SIZE + header.namesize
        if header.namesize < 1 or len(data) < name_end:
            raise ImageError("truncated newc name")
        name = os.fsdecode(bytes(data[HEADER_SIZE : name_end - 1]))
        start = header.data_offset
        if len(data) < start + header.filesize:
            raise ImageError(f"truncated data of {name!r}")
        return cls.from_header(header, name, bytes(data[start : start + header.filesize]))
