"""Streaming newc ("070701") CPIO writer: a directory tree -> a (compressed) initramfs archive.

Why not GNU cpio / bsdtar / libarchive-c: GNU cpio does all I/O in 512-byte blocks (2.6x slower),
libarchive-c stores the data of every hard link again, and every external tool needs a pipe into
the compressor. This writer walks the tree with ``os.scandir`` on directory fds (one ``lstat`` per
entry, names sorted for reproducible output), formats headers into one L2-sized buffer, reads
small files straight into that buffer and copies big ones in the kernel (``copy_file_range``,
then ``sendfile``) when the output is uncompressed; compressed output goes through libzstd's
worker threads in-process, so file I/O and compression overlap without a pipe.
See ``/work/shared/reference/perf-baselines.md`` section 1/1b for the measurements behind it.

Format rules followed (the kernel's ``init/initramfs.c``, GNU cpio and bsdtar all agree):
names relative (no ``/`` or ``./`` prefix, the root is ``.``), parents before children, inode
numbers renumbered from 1, hard links stored once: every link gets the same inode, earlier links
have size 0 and the data travels with the last one; ``TRAILER!!!``; 4-byte alignment; the
stream is padded to 512 bytes.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import pyzstd

from liveos.atomic import atomic_path
from liveos.errors import ImageError, InternalError, UsageError
from liveos.reproducible import source_date_epoch as env_source_date_epoch
from liveos.settings import Compression

log = logging.getLogger("liveos")

__all__ = [
    "MAX_FILE_SIZE",
    "NEWC_MAGIC",
    "TRAILER",
    "CpioEntry",
    "CpioHeader",
    "CpioStats",
    "default_level",
    "write_newc",
]

NEWC_MAGIC = b"070701"
HEADER_SIZE = 110
TRAILER = "TRAILER!!!"
#: newc stores sizes in 8 hex digits: a file of 4 GiB or more cannot be archived.
MAX_FILE_SIZE = 0xFFFFFFFF
_U32 = 0xFFFFFFFF

#: Output buffer: L2-sized; 1-4 MiB buffers measured 1.4-2x slower for read+write copying.
_BUF_SIZE = 256 * 1024
#: Files larger than this bypass the buffer (kernel copy when uncompressed, chunked otherwise).
_SMALL_FILE = 128 * 1024

#: zstd multi-threaded job size for levels whose window is <= 2 MiB (1-6). libzstd's default
#: (4x the window, 8 MiB at level 3) made the zstd writer peak at ~107 MB RSS; 2 MiB jobs peak at
#: ~58 MB on the 2.9 GB benchmark tree for +1.3 % output and ~1.05x wall (docs/performance.md).
_ZSTD_JOB_SIZE = 2 * 1024 * 1024
_ZSTD_SMALL_WINDOW_MAX_LEVEL = 6

_DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6, Compression.XZ: 6, Compression.NONE: 0}
_HEADER_FMT = b"070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X"
_O_NOATIME = getattr(os, "O_NOATIME", 0)


def default_level(compression: Compression) -> int:
    """The level used when the caller gives none (zstd 3: ~500 MB/s on 2 cores, ratio ~3.1)."""
    return _DEFAULT_LEVELS[compression]


def _pad4(n: int) -> int:
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
            if not 0 <= value <= _U32:
                raise UsageError(f"newc header field out of range: {value}", hint="values must fit 32 bits")
        return _HEADER_FMT % values

    @classmethod
    def parse(cls, data: bytes) -> CpioHeader:
        """Parse the first 110 bytes of ``data``; :class:`ImageError` if it is not a newc header."""
        if len(data) < HEADER_SIZE:
            raise ImageError(f"truncated newc header ({len(data)} of {HEADER_SIZE} bytes)")
        magic = bytes(data[:6])
        if magic not in (NEWC_MAGIC, b"070702"):
            raise ImageError(f"bad cpio magic {magic!r}: only newc (070701/070702) archives are supported")
        try:
            fields = [int(data[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
        except ValueError:
            raise ImageError(f"corrupt newc header: {bytes(data[:HEADER_SIZE])!r}") from None
        return cls(*fields)

    @property
    def data_offset(self) -> int:
        """Bytes from the start of the header to the start of the data (header + name + padding)."""
        return HEADER_SIZE + self.namesize + _pad4(HEADER_SIZE + self.namesize)


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
        return head + b"\0" * _pad4(len(head)) + payload + b"\0" * _pad4(len(payload))

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


@dataclass(frozen=True)
class CpioStats:
    """What :func:`write_newc` produced."""

    entries: int
    bytes_in: int
    archive_bytes: int
    bytes_out: int
    hardlinks: int = 0
    skipped: int = 0


# ---------------------------------------------------------------------------------------------
# Sinks: where the archive bytes go (a file descriptor, a compressor, a Python file object).
# ---------------------------------------------------------------------------------------------
class _Sink(Protocol):
    bytes_out: int

    def write(self, data: memoryview) -> None: ...

    def copy_from(self, fd: int, size: int) -> int: ...

    def close(self) -> None: ...


class _FdSink:
    """Uncompressed output to a file descriptor; big files are copied in the kernel."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes_out = 0
        self._use_cfr = stat.S_ISREG(os.fstat(fd).st_mode) and hasattr(os, "copy_file_range")
        self._use_sendfile = True

    def write(self, data: memoryview) -> None:
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
            self.bytes_out += n

    def copy_from(self, fd: int, size: int) -> int:
        """Copy ``size`` bytes of ``fd`` in the kernel; returns the bytes copied (0: not supported)."""
        done = 0
        if self._use_cfr:
            try:
                while done < size:
                    n = os.copy_file_range(fd, self.fd, size - done)
                    if n == 0:
                        break
                    done += n
            except OSError:
                if done:
                    raise
                self._use_cfr = False
        if not self._use_cfr and self._use_sendfile:
            try:
                while done < size:
                    n = os.sendfile(self.fd, fd, None, size - done)
                    if n == 0:
                        break
                    done += n
            except OSError:
                if done:
                    raise
                self._use_sendfile = False
        self.bytes_out += done
        return done

    def close(self) -> None:
        pass


class _CompressorSink:
    """Compressed output: every archive byte passes through ``compress`` and lands on ``fd``."""

    def __init__(
        self, compress: Callable[[memoryview], bytes], flush: Callable[[], bytes], out: _Sink
    ) -> None:
        self._compress = compress
        self._flush = flush
        self._out = out
        self.bytes_out = 0

    def write(self, data: memoryview) -> None:
        chunk = self._compress(data)
        if chunk:
            self._out.write(memoryview(chunk))

    def copy_from(self, fd: int, size: int) -> int:
        return 0

    def close(self) -> None:
        tail = self._flush()
        if tail:
            self._out.write(memoryview(tail))
        self.bytes_out = self._out.bytes_out


class _FileObjSink:
    """Output to a Python file object without a file descriptor (``io.BytesIO``)."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.bytes_out = 0

    def write(self, data: memoryview) -> None:
        self.fp.write(data)
        self.bytes_out += len(data)

    def copy_from(self, fd: int, size: int) -> int:
        return 0

    def close(self) -> None:
        self.fp.flush()


def _compressor_sink(compression: Compression, level: int, threads: int, out: _Sink) -> _Sink:
    """Wrap ``out`` in the in-process compressor the kernel can unpack."""
    if compression is Compression.NONE:
        return out
    if compression is Compression.ZSTD:
        # nbWorkers >= 1 always: libzstd's MT output does not depend on the worker count, so the
        # bytes are the same on every machine, and the workers compress while we do file I/O.
        options: dict[int, int] = {
            pyzstd.CParameter.compressionLevel: level,
            pyzstd.CParameter.nbWorkers: max(1, threads),
        }
        if level <= _ZSTD_SMALL_WINDOW_MAX_LEVEL:
            options[pyzstd.CParameter.jobSize] = _ZSTD_JOB_SIZE  # bounded memory, see the constant
        zc = pyzstd.ZstdCompressor(options)
        return _CompressorSink(zc.compress, lambda: zc.flush(), out)
    if compression is Compression.GZIP:
        zo = zlib.compressobj(level, zlib.DEFLATED, 31)
        return _CompressorSink(zo.compress, zo.flush, out)
    if compression is Compression.XZ:
        # The kernel's xz decoder only verifies CRC32 (or no) checks, not the default CRC64.
        lz = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=level)
        return _CompressorSink(lz.compress, lz.flush, out)
    raise InternalError(f"unhandled compression {compression!r}")


# ---------------------------------------------------------------------------------------------
# The writer.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Held:
    """The most recent link of a hard-linked inode: written last, with the data."""

    ino: int
    rel: bytes
    st: os.stat_result
    count: int = 1


class _Excluder:
    """Relative posix paths (or fnmatch globs) to leave out, each with everything under it."""

    def __init__(self, patterns: Collection[str]) -> None:
        exact: set[bytes] = set()
        globs: list[str] = []
        for raw in patterns:
            norm = _normalize_name(raw, what="exclude path")
            if any(c in norm for c in "*?["):
                globs.append(norm)
            else:
                exact.add(os.fsencode(norm))
        self.exact = exact
        self.globs = globs
        self.active = bool(exact or globs)

    def __call__(self, rel: bytes) -> bool:
        if rel in self.exact:
            return True
        return any(fnmatch.fnmatchcase(os.fsdecode(rel), g) for g in self.globs)


def _normalize_name(name: str, *, what: str) -> str:
    """``/./a/b/`` -> ``a/b``; refuse ``..`` and empty names."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UsageError(f"{what} {name!r} contains '..'", hint="use a path relative to the tree root")
    if not parts:
        raise UsageError(f"{what} {name!r} names the root", hint="name a path below the root")
    return "/".join(parts)


class _NewcWriter:
    """Formats entries into a buffer and pushes full buffers (or kernel copies) to a sink."""

    def __init__(self, sink: _Sink, *, sde: int | None, owner: tuple[int, int] | None) -> None:
        self.sink = sink
        self.sde = sde
        self.owner = owner
        self.buf = bytearray(_BUF_SIZE)
        self.mv = memoryview(self.buf)
        self.pos = 0
        self.offset = 0  # archive bytes produced so far (alignment is relative to it)
        self.next_ino = 1
        self.entries = 0
        self.bytes_in = 0
        self.hardlinks = 0
        self.skipped = 0
        self.links: dict[tuple[int, int], _Held] = {}
        self.root_fd = -1

    # -- low level ---------------------------------------------------------------------------
    def flush(self) -> None:
        if self.pos:
            self.sink.write(self.mv[: self.pos])
            self.pos = 0

    def put(self, data: bytes) -> None:
        n = len(data)
        if self.pos + n > _BUF_SIZE:
            self.flush()
            if n > _BUF_SIZE:
                self.sink.write(memoryview(data))
                self.offset += n
                return
        self.mv[self.pos : self.pos + n] = data
        self.pos += n
        self.offset += n

    def pad(self) -> None:
        n = _pad4(self.offset)
        if n:
            self.put(b"\0" * n)

    def header(
        self,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        nlink: int,
        mtime: int,
        size: int,
        ino: int,
        rdev: int,
    ) -> None:
        if self.owner is not None:
            uid, gid = self.owner
        if self.sde is not None and mtime > self.sde:
            mtime = self.sde
        mtime = min(max(mtime, 0), _U32)
        namesize = len(name) + 1
        head = _HEADER_FMT % (
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            size,
            0,
            0,
            os.major(rdev),
            os.minor(rdev),
            namesize,
            0,
        )
        self.put(head + name + b"\0" * (1 + _pad4(HEADER_SIZE + namesize)))
        self.entries += 1

    def alloc_ino(self) -> int:
        ino = self.next_ino
        self.next_ino += 1
        return ino

    # -- entries -----------------------------------------------------------------------------
    def synthetic(self, entry: CpioEntry, name: bytes) -> None:
        payload = entry.payload
        if len(payload) > MAX_FILE_SIZE:
            raise UsageError(f"extra entry {entry.name!r} is larger than newc's 4 GiB limit")
        rdev = os.makedev(entry.rdevmajor, entry.rdevminor)
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        self.header(
            name, entry.mode, entry.uid, entry.gid, nlink, entry.mtime, len(payload), self.alloc_ino(), rdev
        )
        if payload:
            self.put(payload)
            self.pad()

    def disk(self, dir_fd: int, name: str, rel: bytes, st: os.stat_result) -> bool:
        """Write one on-disk non-directory entry; False if its type cannot be archived."""
        mode = st.st_mode
        if stat.S_ISREG(mode):
            if st.st_size > MAX_FILE_SIZE:
                raise ImageError(
                    f"{os.fsdecode(rel)} is {st.st_size} bytes: newc CPIO cannot store files >= 4 GiB",
                    path=os.fsdecode(rel),
                    hint="exclude the file, or use the squashfs (bootstrap) initramfs mode",
                )
            if st.st_nlink > 1:
                self.hardlink(dir_fd, name, rel, st)
                return True
            self.header(
                rel, mode, st.st_uid, st.st_gid, 1, int(st.st_mtime), st.st_size, self.alloc_ino(), 0
            )
            if st.st_size:
                self.file_data(dir_fd, name, rel, st.st_size)
            return True
        if stat.S_ISLNK(mode):
            target = os.fsencode(os.readlink(name, dir_fd=dir_fd))
            self.header(
                rel, mode, st.st_uid, st.st_gid, 1, int(st.st_mtime), len(target), self.alloc_ino(), 0
            )
            self.put(target)
            self.pad()
            return True
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            rdev = 0 if stat.S_ISFIFO(mode) else st.st_rdev
            self.header(
                rel, mode, st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime), 0, self.alloc_ino(), rdev
            )
            return True
        log.warning("cpio: skipping %s: %s cannot be stored in an initramfs", os.fsdecode(rel), _kind(mode))
        self.skipped += 1
        return False

    def directory(self, rel: bytes, st: os.stat_result) -> None:
        self.header(
            rel, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime), 0, self.alloc_ino(), 0
        )

    def hardlink(self, dir_fd: int, name: str, rel: bytes, st: os.stat_result) -> None:
        """newc hard links: same ino for all links, data on the last one (size 0 before).

        The last link is the one that completes ``st_nlink``; links outside the tree never come,
        so the newest link of each inode is held back and written with the data at the end.
        """
        key = (st.st_dev, st.st_ino)
        held = self.links.get(key)
        if held is None:
            held = _Held(self.alloc_ino(), rel, st)
            self.links[key] = held
        else:
            self.hardlinks += 1
            self.header(
                held.rel, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime), 0, held.ino, 0
            )
            held.rel = rel
            held.count += 1
        if held.count >= st.st_nlink:
            del self.links[key]
            self.header(
                rel, st.st_mode, st.st_uid, st.st_gid, st.st_nlink, int(st.st_mtime), st.st_size, held.ino, 0
            )
            if st.st_size:
                self.file_data(dir_fd, name, rel, st.st_size)

    def finish_hardlinks(self) -> None:
        """Write the held last link of inodes whose other links lie outside the archive."""
        for held in sorted(self.links.values(), key=lambda h: h.rel):
            st = held.st
            self.header(
                held.rel,
                st.st_mode,
                st.st_uid,
                st.st_gid,
                st.st_nlink,
                int(st.st_mtime),
                st.st_size,
                held.ino,
                0,
            )
            if st.st_size:
                self.file_data(self.root_fd, os.fsdecode(held.rel), held.rel, st.st_size)
        self.links.clear()

    def file_data(self, dir_fd: int, name: str, rel: bytes, size: int) -> None:
        """Append exactly ``size`` bytes of the file, then the 4-byte padding."""
        fd = _open_file(name, dir_fd)
        try:
            if size <= _SMALL_FILE:
                if self.pos + size > _BUF_SIZE:
                    self.flush()
                got = os.readv(fd, [self.mv[self.pos : self.pos + size]])
                if got != size:
                    got += _read_rest(fd, self.mv[self.pos + got : self.pos + size])
                if got != size:
                    raise _changed(rel, size, got)
                self.pos += size
            else:
                self.flush()
                done = self.sink.copy_from(fd, size)
                while done < size:
                    room = min(_BUF_SIZE, size - done)
                    got = os.readv(fd, [self.mv[:room]])
                    if got == 0:
                        break
                    self.pos = got
                    self.flush()
                    done += got
                if done != size:
                    raise _changed(rel, size, done)
        finally:
            os.close(fd)
        self.offset += size
        self.bytes_in += size
        self.pad()

    def trailer(self) -> None:
        self.header(TRAILER.encode(), 0, 0, 0, 1, 0, 0, 0, 0)
        n = -self.offset & 511
        if n:
            self.put(b"\0" * n)
        self.flush()


def _kind(mode: int) -> str:
    return "a socket" if stat.S_ISSOCK(mode) else f"file type {stat.S_IFMT(mode):o}"


def _open_file(name: str, dir_fd: int) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(name, flags | _O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # O_NOATIME needs ownership or CAP_FOWNER
        return os.open(name, flags, dir_fd=dir_fd)


def _read_rest(fd: int, view: memoryview) -> int:
    done = 0
    while done < len(view):
        n = os.readv(fd, [view[done:]])
        if n == 0:
            break
        done += n
    return done


def _changed(rel: bytes, size: int, got: int) -> ImageError:
    return ImageError(
        f"{os.fsdecode(rel)} changed while it was archived (expected {size} bytes, read {got})",
        path=os.fsdecode(rel),
        hint="do not modify the tree while the initramfs is written",
    )


class _Extras:
    """Synthetic entries grouped by parent directory, plus the parents they need."""

    def __init__(self, extra: Sequence[CpioEntry]) -> None:
        self.children: dict[bytes, dict[bytes, CpioEntry | None]] = {}
        for entry in extra:
            name = os.fsencode(_normalize_name(entry.name, what="extra entry"))
            parent, _, base = name.rpartition(b"/")
            if base in self.children.setdefault(parent, {}) and self.children[parent][base] is not None:
                raise UsageError(f"extra entry {entry.name!r} is given twice")
            self.children[parent][base] = entry
            while parent:  # make sure every ancestor is reachable from the root
                grand, _, pbase = parent.rpartition(b"/")
                self.children.setdefault(grand, {}).setdefault(pbase, None)
                parent = grand
        for parent in self.children:
            grand, _, base = parent.rpartition(b"/")
            holder = self.children[grand].get(base) if parent else None
            if holder is not None and not stat.S_ISDIR(holder.mode):
                raise UsageError(f"extra entries below {os.fsdecode(parent)!r}, which is not a directory")

    def under(self, rel: bytes) -> dict[bytes, CpioEntry | None]:
        return self.children.get(rel, {})


_SYNTH_DIR = CpioEntry.directory("synthetic")


def _walk(w: _NewcWriter, dir_fd: int | None, rel: bytes, excluded: _Excluder, extras: _Extras) -> None:
    """Write the children of directory ``rel`` (open as ``dir_fd``, or absent on disk) in sorted order."""
    children: dict[bytes, str] = {}
    if dir_fd is not None:
        with os.scandir(dir_fd) as it:
            for de in it:
                children[os.fsencode(de.name)] = de.name
    synthetic = extras.under(rel)
    prefix = rel + b"/" if rel else b""
    for bname in sorted(children.keys() | synthetic.keys()) if synthetic else sorted(children):
        child_rel = prefix + bname
        name = children.get(bname)
        if name is not None and excluded.active and excluded(child_rel):
            name = None  # exclusions hide disk entries; extra entries always go in
        st = None if name is None else os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if bname in synthetic:
            extra = synthetic[bname]
            if extra is not None:
                w.synthetic(extra, child_rel)
                if not stat.S_ISDIR(extra.mode):
                    continue
            elif st is None or not stat.S_ISDIR(st.st_mode):
                w.synthetic(_SYNTH_DIR, child_rel)  # a parent needed only by extra entries
                st = None
            else:
                w.directory(child_rel, st)
        elif st is None:
            continue
        elif not stat.S_ISDIR(st.st_mode):
            w.disk(dir_fd, name, child_rel, st)  # type: ignore[arg-type]
            continue
        else:
            w.directory(child_rel, st)
        disk_dir = name if st is not None and stat.S_ISDIR(st.st_mode) else None
        _descend(w, dir_fd, disk_dir, child_rel, excluded, extras)


def _descend(
    w: _NewcWriter, dir_fd: int | None, name: str | None, rel: bytes, excluded: _Excluder, extras: _Extras
) -> None:
    if dir_fd is None or name is None:
        _walk(w, None, rel, excluded, extras)
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        _walk(w, fd, rel, excluded, extras)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _output_fd(out: Path | BinaryIO) -> Iterator[tuple[_Sink, Callable[[], int]]]:
    """A raw sink for ``out``: an atomically replaced file for a Path, the caller's file otherwise."""
    if isinstance(out, (str, os.PathLike)):
        with atomic_path(Path(out)) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                sink = _FdSink(fd)
                yield sink, lambda: sink.bytes_out
            finally:
                os.close(fd)
        return
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        fsink = _FileObjSink(out)
        yield fsink, lambda: fsink.bytes_out
        fsink.close()
        return
    out.flush()
    raw = _FdSink(fd)
    yield raw, lambda: raw.bytes_out


def write_newc(
    root: Path,
    out: Path | BinaryIO,
    *,
    compression: Compression = Compression.ZSTD,
    level: int | None = None,
    threads: int | None = None,
    exclude: Collection[str] = (),
    extra: Sequence[CpioEntry] = (),
    source_date_epoch: int | None = None,
    owner: tuple[int, int] | None = None,
    include_root: bool = True,
) -> CpioStats:
    """Archive the directory ``root`` as a newc CPIO, compressed, into ``out``.

    ``exclude``: relative posix paths (or fnmatch globs such as ``boot/*``) left out together
    with everything below them. ``extra``: synthetic entries merged into the sorted order; an
    extra entry replaces an on-disk entry of the same name (a non-directory also hides the disk
    subtree), missing parents are created as 0755 directories. ``owner``: (uid, gid) for every
    entry. ``source_date_epoch`` (default: ``$SOURCE_DATE_EPOCH``) clamps mtimes, making the
    output bit-identical run to run. ``threads``: zstd workers (default: all CPUs).
    A Path is written atomically (no partial file on error); a file object is written from its
    current position on.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"CPIO source {root} is not a directory", path=root)
    compression = Compression(compression)
    level = default_level(compression) if level is None else level
    threads = threads or os.cpu_count() or 1
    sde = source_date_epoch if source_date_epoch is not None else env_source_date_epoch()
    excluded = _Excluder(exclude)
    extras = _Extras(extra)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with _output_fd(out) as (raw, bytes_out):
            sink = _compressor_sink(compression, level, threads, raw)
            w = _NewcWriter(sink, sde=sde, owner=owner)
            w.root_fd = root_fd
            if include_root:
                w.directory(b".", os.stat(root_fd))
            _walk(w, root_fd, b"", excluded, extras)
            w.finish_hardlinks()
            w.trailer()
            sink.close()
            stats = CpioStats(
                entries=w.entries - 1,
                bytes_in=w.bytes_in,
                archive_bytes=w.offset,
                bytes_out=bytes_out(),
                hardlinks=w.hardlinks,
                skipped=w.skipped,
            )
    finally:
        os.close(root_fd)
    log.info(
        "cpio: %d entries, %d bytes of data -> %d archive bytes -> %d bytes (%s)",
        stats.entries,
        stats.bytes_in,
        stats.archive_bytes,
        stats.bytes_out,
        compression,
    )
    return stats
