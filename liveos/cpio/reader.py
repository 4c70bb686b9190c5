"""Read and extract initrds: one or more newc CPIO archives, each plain or compressed.

A real initrd is often several segments: an uncompressed early-microcode CPIO, zero padding,
then the compressed main CPIO (dracut, mkinitcpio, ``cat a.cpio b.cpio.zst``). The kernel
(``init/initramfs.c``) skips zero bytes between segments and detects each one's compressor by
its magic; this reader does the same, streaming (bounded memory whatever the archive size).
Our own reader instead of libarchive-c: it follows the kernel's segment rules exactly and gives
exact newc fields (inode, nlink, rdev) for round-trip tests; its speed is measured in
``benchmarks/bench_cpio.py``.

:func:`extract` never writes outside ``dest``: every name is validated before use (no ``..``, no
leading ``/``, no NUL, PATH_MAX), entries are created through :class:`liveos.confined.ConfinedTree`
(parents opened ``O_NOFOLLOW`` one component at a time, attributes set without following links),
so a symlink in the archive cannot redirect a later entry nor the final directory pass.
Every header is checked before its name or symlink target is read (PATH_MAX caps), so a small
compressed initrd cannot make the reader allocate or loop without bound.
"""

from __future__ import annotations

import bz2
import contextlib
import dataclasses
import logging
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pyzstd

from liveos.confined import ConfinedTree, split_relative
from liveos.cpio.format import HEADER_SIZE, NEWC_CRC_MAGIC, NEWC_MAGIC, TRAILER, CpioEntry, CpioHeader
from liveos.errors import ImageError, UsageError

log = logging.getLogger("liveos")

__all__ = ["CpioMember", "ExtractStats", "extract", "iter_entries", "read_entries"]

_CHUNK = 1 << 20
#: Most decompressed bytes produced per call: memory stays bounded even for zip bombs.
_MAX_OUT = 4 << 20


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...

    @property
    def unused_data(self) -> bytes: ...

    @property
    def needs_input(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int = ...) -> bytes: ...


#: Most memory an xz/lzma decoder may take (mostly its dictionary): ``xz -9`` and ``lzma -9`` need
#: 65 MiB; a header asking for more is refused before anything is allocated.
_LZMA_MEMLIMIT = 80 << 20
#: First input piece given to a decompressor (doubled on every read, up to ``_CHUNK``).
_FIRST_PIECE = 1 << 10
#: What the decompressors raise on corrupt input (bz2: OSError; after the end: EOFError).
_DECOMPRESS_ERRORS = (pyzstd.ZstdError, lzma.LZMAError, OSError, EOFError, ValueError)

#: Segment magic -> (name, decompressor factory). Order matters only for shared prefixes.
_MAGICS: tuple[tuple[bytes, str, Callable[[], _Decompressor] | None], ...] = (
    (b"\x1f\x8b", "gzip", None),
    (b"\x28\xb5\x2f\xfd", "zstd", lambda: pyzstd.ZstdDecompressor()),
    (b"\xfd7zXZ\x00", "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ, memlimit=_LZMA_MEMLIMIT)),
    (b"\x5d\x00\x00", "lzma", lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE, memlimit=_LZMA_MEMLIMIT)),
    (b"BZh", "bzip2", lambda: bz2.BZ2Decompressor()),
    (b"\x02\x21\x4c\x18", "lz4", None),
    (b"\x89LZO", "lzo", None),
)


class _Stream:
    """Bytes from a chunk iterator, with peek and push-back (for the bytes after a segment).

    Linear in its input whatever the request pattern: a chunk is handed over without a copy when
    it is read whole, and only ``read``/``peek`` (at most a header, a name or a symlink target:
    a few KiB) gather bytes across chunks into a fresh buffer.
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf: bytes | bytearray = b""
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    def _next(self) -> bytes | None:
        """The next non-empty chunk of the source, None at its end."""
        for chunk in self._chunks:
            if chunk:
                return chunk
        return None

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available if the source has them."""
        if len(self._buf) - self._pos >= n:
            return True
        if self._pos >= len(self._buf):
            chunk = self._next()
            if chunk is None:
                return False
            self._buf, self._pos = chunk, 0
            if len(chunk) >= n:
                return True
        gathered = bytearray(memoryview(self._buf)[self._pos :])
        ok = True
        while len(gathered) < n:
            chunk = self._next()
            if chunk is None:
                ok = False
                break
            gathered += chunk
        self._buf, self._pos = gathered, 0
        return ok

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return bytes(memoryview(self._buf)[self._pos : self._pos + n])

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, fewer only at the end of the stream (``n`` is small: a header,
        a name, a symlink target; bulk data goes through :meth:`read_chunk`)."""
        self._fill(n)
        data = bytes(memoryview(self._buf)[self._pos : self._pos + n])
        self._pos += len(data)
        self.offset += len(data)
        return data

    def read_chunk(self, limit: int = _CHUNK) -> bytes:
        """Whatever is available, at most ``limit`` bytes (empty at the end)."""
        if self._pos >= len(self._buf):
            chunk = self._next()
            if chunk is None:
                return b""
            self._buf, self._pos = chunk, 0
        if self._pos == 0 and len(self._buf) <= limit and isinstance(self._buf, bytes):
            data = self._buf  # hand the whole chunk over without a copy
        else:
            data = bytes(memoryview(self._buf)[self._pos : self._pos + limit])
        self._pos += len(data)
        self.offset += len(data)
        return data

    def skip(self, n: int) -> int:
        """Drop ``n`` bytes without keeping them; returns how many there were."""
        left = n
        while left:
            chunk = self.read_chunk(min(left, _CHUNK))
            if not chunk:
                break
            left -= len(chunk)
        return n - left

    def unread(self, data: bytes) -> None:
        """Push back the tail of what was read last (a decompressor's unused input)."""
        if not data:
            return
        n = len(data)
        if self._pos >= n and self._buf[self._pos - n : self._pos] == data:
            self._pos -= n  # still buffered: just step back, no copy
        else:
            self._buf = bytes(data) + memoryview(self._buf)[self._pos :]
            self._pos = 0
        self.offset -= n

    def skip_zeros(self) -> int:
        """Skip zero padding between segments/archives; returns how many bytes were skipped.

        At memcmp speed: a small compressed initrd may expand to gigabytes of zeros."""
        skipped = 0
        while self._fill(1):
            buf, start, end = self._buf, self._pos, len(self._buf)
            pos = start
            found = False
            while pos < end:
                block = buf[pos : pos + len(_ZEROS)]
                if block == _ZEROS[: len(block)]:
                    pos += len(block)
                    continue
                pos += len(block) - len(block.lstrip(b"\0"))
                found = True
                break
            self._pos = pos
            self.offset += pos - start
            skipped += pos - start
            if found:
                break
        return skipped


_ZEROS = bytes(1 << 16)


def _file_chunks(fp: BinaryIO) -> Iterator[bytes]:
    while chunk := fp.read(_CHUNK):
        yield chunk


def _decompressed(raw: _Stream, name: str, factory: Callable[[], _Decompressor] | None) -> Iterator[bytes]:
    """Decompress one segment from ``raw``; the bytes after its end are pushed back into ``raw``.

    Input is fed in pieces that start small and double up to ``_CHUNK``: what is pushed back
    after a segment's end is at most about the segment's own size, so a file of many tiny
    segments costs linear time, not segments x chunk size.
    """
    if name == "gzip":
        yield from _gunzip(raw)
        return
    if factory is None:
        raise ImageError(
            f"initrd segment compressed with {name} at offset {raw.offset}: not supported by liveos",
            hint=f"decompress it first ({name} -dc) or rebuild the initrd with zstd, gzip or xz",
        )
    d = factory()
    piece = _FIRST_PIECE
    stalled = False
    while not d.eof:
        if d.needs_input:
            chunk = raw.read_chunk(piece)
            piece = min(piece * 2, _CHUNK)
            if not chunk:
                raise ImageError(f"truncated {name} segment in initrd")
        else:
            chunk = b""
        try:
            out = d.decompress(chunk, _MAX_OUT)
        except _DECOMPRESS_ERRORS as exc:
            if isinstance(exc, lzma.LZMAError) and "limit" in str(exc):
                raise ImageError(
                    f"{name} segment in initrd needs more than {_LZMA_MEMLIMIT >> 20} MiB to decompress",
                    hint="recompress the initrd with a smaller dictionary (xz -6) or with zstd",
                ) from None
            raise ImageError(f"corrupt {name} segment in initrd: {exc}") from None
        if not chunk and not out and not d.eof:
            if stalled:  # no input wanted, no output given: the decompressor is stuck
                raise ImageError(f"corrupt {name} segment in initrd: the decompressor makes no progress")
            stalled = True
        else:
            stalled = False
        yield out
    raw.unread(d.unused_data)


def _gunzip(raw: _Stream) -> Iterator[bytes]:
    d = zlib.decompressobj(31)
    piece = _FIRST_PIECE
    while not d.eof:
        chunk = d.unconsumed_tail or raw.read_chunk(piece)
        piece = min(piece * 2, _CHUNK)
        if not chunk:
            raise ImageError("truncated gzip segment in initrd")
        try:
            yield d.decompress(chunk, _MAX_OUT)
        except zlib.error as exc:
            raise ImageError(f"corrupt gzip segment in initrd: {exc}") from None
    raw.unread(d.unused_data)


@dataclass
class CpioMember:
    """One entry of an initrd while it is being read: metadata plus access to its data.

    ``read()`` / ``copy_to()`` only work until the iterator advances (the archive is a stream).
    ``archive`` counts the CPIO archives (``TRAILER!!!``) so far: hard-link inode numbers are
    only unique inside one archive. ``compression`` is the segment's compressor (``none``...).
    """

    entry: CpioEntry
    archive: int
    compression: str
    _stream: _Stream | None = dataclasses.field(default=None, repr=False)
    _left: int = 0

    @property
    def name(self) -> str:
        """The member's path inside the archive."""
        return self.entry.name

    @property
    def size(self) -> int:
        """The member's data size in bytes."""
        return self.entry.filesize

    def read(self) -> bytes:
        """The whole payload (file data or symlink target)."""
        if self.entry.linkname is not None:
            return os.fsencode(self.entry.linkname)
        parts = []
        while chunk := self._next_chunk():
            parts.append(chunk)
        return b"".join(parts)

    def copy_to(self, fd: int) -> int:
        """Write the file data to ``fd`` in chunks; returns the byte count."""
        total = 0
        while chunk := self._next_chunk():
            view = memoryview(chunk)
            while view:
                view = view[os.write(fd, view) :]
            total += len(chunk)
        return total

    def _next_chunk(self) -> bytes:
        if not self._left or self._stream is None:
            return b""
        chunk = self._stream.read_chunk(min(self._left, _CHUNK))
        if not chunk:
            raise ImageError(f"initrd ends inside the data of {self.name!r}")
        self._left -= len(chunk)
        return chunk

    def _skip_rest(self) -> None:
        while self._next_chunk():
            pass


def _archive_members(stream: _Stream, archive: int, compression: str) -> Iterator[CpioMember]:
    """The members of one CPIO archive, up to and excluding ``TRAILER!!!``."""
    where = f"archive {archive}, {compression}"
    while True:
        raw = stream.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise ImageError(f"initrd ends inside a cpio header ({where})")
        header = CpioHeader.parse(raw)
        header.check_sizes()  # before reading: a header may declare a 4 GiB name
        rest = stream.read(header.data_offset - HEADER_SIZE)
        if len(rest) < header.namesize:
            raise ImageError(f"initrd ends inside a cpio name ({where})")
        name = header.decode_name(rest[: header.namesize])
        pad = -header.filesize & 3
        if name == TRAILER:
            stream.skip(header.filesize + pad)
            return
        if stat.S_ISLNK(header.mode):
            target = stream.read(header.filesize)  # at most MAX_LINK_SIZE (check_sizes)
            if len(target) < header.filesize:
                raise ImageError(f"initrd ends inside the symlink {name!r} ({where})")
            stream.skip(pad)
            yield CpioMember(CpioEntry.from_header(header, name, target), archive, compression)
            continue
        member = CpioMember(
            CpioEntry.from_header(header, name, None), archive, compression, stream, header.filesize
        )
        yield member
        member._skip_rest()
        stream.skip(pad)


def _cpio_stream(stream: _Stream, first_archive: int, compression: str) -> Iterator[CpioMember]:
    """Archives back to back (zero padding between them) until the stream ends."""
    archive = first_archive
    while True:
        stream.skip_zeros()
        magic = stream.peek(6)
        if not magic:
            return
        if magic not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
            raise ImageError(
                f"unexpected data {magic!r} at offset {stream.offset} of a {compression} initrd segment",
                hint="only newc cpio archives are supported",
            )
        yield from _archive_members(stream, archive, compression)
        archive += 1
        if compression != "none":
            continue
        return


def _source_path(source: Path | BinaryIO) -> Path | None:
    """The file behind ``source``, for error messages (None for an in-memory stream)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    name = getattr(source, "name", None)
    return Path(name) if isinstance(name, str) else None


@contextlib.contextmanager
def _naming(path: Path | None) -> Iterator[None]:
    """Give an :class:`ImageError` raised without a file the initrd's ``path``."""
    try:
        yield
    except ImageError as exc:
        if exc.path is not None or path is None:
            raise
        raise ImageError(exc.message, path=path, hint=exc.hint) from exc


def iter_entries(source: Path | BinaryIO) -> Iterator[CpioMember]:
    """Every entry of an initrd, across all its segments, in archive order (streaming).

    Corrupt or hostile input raises :class:`ImageError` (naming the file when it has one);
    memory stays bounded and time linear in the input, whatever the headers claim."""
    path = _source_path(source)
    with _naming(path):
        yield from _iter_entries(source)


def _iter_entries(source: Path | BinaryIO) -> Iterator[CpioMember]:
    with contextlib.ExitStack() as stack:
        if isinstance(source, (str, os.PathLike)):
            fp: BinaryIO = stack.enter_context(open(source, "rb"))
        else:
            fp = source
        raw = _Stream(_file_chunks(fp))
        archive = 0
        while True:
            raw.skip_zeros()
            magic = raw.peek(6)
            if not magic:
                return
            if magic in (NEWC_MAGIC, NEWC_CRC_MAGIC):
                yield from _cpio_stream(raw, archive, "none")
                archive += 1
                continue
            found = next((m for m in _MAGICS if magic.startswith(m[0])), None)
            if found is None:
                raise ImageError(
                    f"unknown data {magic!r} at offset {raw.offset} of the initrd",
                    hint="not a cpio archive nor a gzip/zstd/xz/lzma/bzip2 compressed one",
                )
            _, name, factory = found
            inner = _Stream(_decompressed(raw, name, factory))
            before = archive
            for member in _cpio_stream(inner, archive, name):
                archive = member.archive
                yield member
            archive = max(archive + 1, before + 1)


def read_entries(source: Path | BinaryIO) -> list[CpioEntry]:
    """All entries with their data loaded (for small initrds and tests)."""
    out = []
    with _naming(_source_path(source)):
        for member in iter_entries(source):
            entry = member.entry
            if member.entry.linkname is None and member.size:
                entry = dataclasses.replace(entry, data=member.read())
            out.append(entry)
    return out


def main_compression(path: Path) -> str:
    """The compressor of an initrd's main archive: the first compressed segment's (``zstd``,
    ``gzip``, ...), or ``none``. Uncompressed segments (early microcode) are skipped by seeking
    over their data, so this reads only headers, whatever the initrd's size."""
    with open(path, "rb") as f, _naming(Path(path)):
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < size:
            offset = _skip_zero_run(f, offset)
            f.seek(offset)
            head = f.read(HEADER_SIZE)
            if not head:
                break
            if head[:6] not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
                found = next((m for m in _MAGICS if head.startswith(m[0])), None)
                return found[1] if found else "unknown"
            header = CpioHeader.parse(head)
            offset += header.data_offset + header.filesize + (-header.filesize & 3)
        return "none"


def _skip_zero_run(f: BinaryIO, offset: int) -> int:
    """The offset of the first non-zero byte at or after ``offset`` (or of the end)."""
    f.seek(offset)
    while block := f.read(len(_ZEROS)):
        if block != _ZEROS[: len(block)]:
            return offset + len(block) - len(block.lstrip(b"\0"))
        offset += len(block)
    return offset


# ---------------------------------------------------------------------------------------------
# Extraction.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractStats:
    """What :func:`extract` created."""

    entries: int
    data_bytes: int
    skipped: int


class _Extractor:
    """Applies members to a :class:`ConfinedTree`: hard links, later entries win, dirs last."""

    def __init__(self, tree: ConfinedTree, same_owner: bool) -> None:
        self.tree = tree
        self.same_owner = same_owner
        #: (archive, inode) -> the first name of a hard-link group and its (st_dev, st_ino)
        self.links: dict[tuple[int, int], tuple[tuple[str, ...], tuple[int, int]]] = {}
        #: directory -> its entry (the last listing wins); attributes are set by finish_dirs
        self.dirs: dict[tuple[str, ...], CpioEntry] = {}
        self.entries = 0
        self.bytes = 0
        self.skipped = 0

    def owner(self, e: CpioEntry) -> tuple[int, int] | None:
        return (e.uid, e.gid) if self.same_owner else None

    def member(self, m: CpioMember) -> None:
        e = m.entry
        parts = split_relative(e.name, what="initrd", source=self.tree.source)
        fmt = stat.S_IFMT(e.mode)
        if not parts:  # the root entry "." describes dest itself
            if fmt == stat.S_IFDIR:
                self.dirs[parts] = e
            return
        if fmt == stat.S_IFDIR:
            self.tree.mkdir(parts)
            self.dirs.pop(parts, None)
            self.dirs[parts] = e
        elif fmt == stat.S_IFREG:
            self.regular(m, parts)
        elif fmt == stat.S_IFLNK:
            self.tree.symlink(parts, e.linkname or "")
            self.tree.set_attrs(parts, owner=self.owner(e), mtime=e.mtime)  # never chmod a link
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            self.tree.mknod(parts, fmt | 0o600, self.device(e) if fmt != stat.S_IFIFO else 0)
            self.tree.set_attrs(parts, mode=e.mode, owner=self.owner(e), mtime=e.mtime)
        else:
            log.warning("cpio: skipping %r: unsupported file type %o", e.name, fmt)
            self.skipped += 1
            return
        self.entries += 1

    def device(self, e: CpioEntry) -> int:
        """The device number of a node; Linux has 12-bit majors and 20-bit minors."""
        if e.rdevmajor > 0xFFF or e.rdevminor > 0xFFFFF:
            raise ImageError(
                f"initrd device node {e.name!r} has an impossible number {e.rdevmajor}:{e.rdevminor}",
                path=self.tree.source,
            )
        return os.makedev(e.rdevmajor, e.rdevminor)

    def regular(self, m: CpioMember, parts: tuple[str, ...]) -> None:
        e = m.entry
        key = (m.archive, e.ino)
        first = self.links.get(key) if e.nlink > 1 else None
        fd = None
        if first is not None and self.tree.hardlink(parts, *first):
            # newc hard link: link to the first name; the data may come with any link (the last).
            if not m.size:
                return
            fd = self.tree.open_file(parts)
        if fd is None:
            fd = self.tree.create_file(parts)
            if e.nlink > 1:
                st = os.fstat(fd)
                self.links[key] = (parts, (st.st_dev, st.st_ino))
        try:
            with self.tree.errors(parts, "write"):
                self.bytes += m.copy_to(fd)
                ConfinedTree.set_fd_attrs(fd, mode=e.mode, owner=self.owner(e), mtime=e.mtime)
        finally:
            os.close(fd)

    def finish_dirs(self) -> None:
        """Directory owners/modes/mtimes last, deepest first: children would change mtimes,
        read-only dirs block writes. Each is opened O_NOFOLLOW: a name a later entry turned into
        a symlink or file is skipped, so no attribute ever reaches a link's target."""
        for parts, e in sorted(self.dirs.items(), key=lambda item: -len(item[0])):
            self.tree.set_dir_attrs(parts, mode=e.mode, owner=self.owner(e), mtime=e.mtime)


def extract(source: Path | BinaryIO, dest: Path, *, same_owner: bool | None = None) -> ExtractStats:
    """Extract every entry of an initrd into the existing directory ``dest``.

    Modes, mtimes, symlinks, device nodes, fifos and hard links are restored; owners too when
    ``same_owner`` (default: when running as root). Nothing is ever created, changed or followed
    outside ``dest`` (:class:`ConfinedTree`); bad names and a corrupt archive raise ImageError.
    """
    dest = Path(dest)
    if not dest.is_dir():
        raise UsageError(f"extraction target {dest} is not a directory", path=dest, hint="create it first")
    if same_owner is None:
        same_owner = os.geteuid() == 0
    path = _source_path(source)
    with _naming(path), ConfinedTree(dest, what="initrd", source=path) as tree:
        ex = _Extractor(tree, same_owner)
        for member in iter_entries(source):
            ex.member(member)
        ex.finish_dirs()
    return ExtractStats(entries=ex.entries, data_bytes=ex.bytes, skipped=ex.skipped)
