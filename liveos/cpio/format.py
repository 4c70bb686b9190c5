"""The newc ("070701") CPIO format: the 110-byte header and one archive member, as values.

``pack``/``parse`` are inverses. Format rules (the kernel's ``init/initramfs.c``, GNU cpio and
bsdtar agree): 13 fields of 8 hex digits, then the NUL-terminated name, padding to 4 bytes, the
data, padding to 4 bytes; names are relative (the root is ``.``); the archive ends with a
``TRAILER!!!`` member.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass, field

from liveos.confined import PATH_MAX
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
#: Longest name field read, its NUL included (Linux PATH_MAX); longer ones are refused unread.
MAX_NAME_SIZE = PATH_MAX
#: Longest symlink target read (PATH_MAX with the NUL the kernel adds).
MAX_LINK_SIZE = PATH_MAX - 1
#: The 13 fields: exactly 8 hex digits each (``int(x, 16)`` alone accepts ``-1``, ``+1``, `` 1``, ``0_1``).
_FIELDS = re.compile(rb"[0-9A-Fa-f]{104}")


#: Names what :mod:`liveos.cpio.writer` produces for the same tree and options; bumped when
#: that changes (cached full-os archives are keyed by it).
CPIO_FORMAT = "liveos-newc-1"


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
        raw = bytes(data[6:HEADER_SIZE])
        if not _FIELDS.fullmatch(raw):
            raise ImageError(f"corrupt newc header (fields must be 8 hex digits each): {magic + raw!r}")
        return cls(*struct.unpack(">13I", bytes.fromhex(raw.decode("ascii"))))

    def check_sizes(self) -> None:
        """Refuse name and symlink sizes no real archive has, before their bytes are read."""
        if not 2 <= self.namesize <= MAX_NAME_SIZE:
            raise ImageError(
                f"corrupt newc header: name size {self.namesize} (2 to {MAX_NAME_SIZE}, the NUL included)"
            )
        if stat.S_ISLNK(self.mode) and self.filesize > MAX_LINK_SIZE:
            raise ImageError(
                f"corrupt newc header: symlink target of {self.filesize} bytes (at most {MAX_LINK_SIZE})"
            )

    def decode_name(self, raw: bytes) -> str:
        """The name from the ``namesize`` bytes of the name field: NUL-terminated, no other NUL."""
        if len(raw) != self.namesize or raw[-1:] != b"\0" or b"\0" in raw[:-1] or len(raw) < 2:
            raise ImageError(
                f"corrupt newc name {raw[:64]!r}: empty, not NUL-terminated or with a NUL inside"
            )
        return os.fsdecode(raw[:-1])

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
        header.check_sizes()
        name_end = HEADER_SIZE + header.namesize
        if len(data) < name_end:
            raise ImageError("truncated newc name")
        name = header.decode_name(bytes(data[HEADER_SIZE:name_end]))
        start = header.data_offset
        if len(data) < start + header.filesize:
            raise ImageError(f"truncated data of {name!r}")
        return cls.from_header(header, name, bytes(data[start : start + header.filesize]))
