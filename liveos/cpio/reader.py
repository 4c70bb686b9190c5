"""Read and extract initrds: one or more newc CPIO archives, each plain or compressed.

A real initrd is often several segments: an uncompressed early-microcode CPIO, zero padding,
then the compressed main CPIO (dracut, mkinitcpio, ``cat a.cpio b.cpio.zst``). The kernel
(``init/initramfs.c``) skips zero bytes between segments and detects each one's compressor by
its magic; this reader does the same, streaming (bounded memory whatever the archive size).
Our own reader instead of libarchive-c: it follows the kernel's segment rules exactly and gives
exact newc fields (inode, nlink, rdev) for round-trip tests; its speed is measured in
``benchmarks/bench_cpio.py``.

:func:`extract` never writes outside ``dest``: names with ``..`` or a leading ``/`` are refused,
parent directories are opened with ``O_NOFOLLOW`` one component at a time, so a symlink in the
archive cannot redirect a later entry.
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
from typing import BinaryIO, Protocol, TypeVar

import pyzstd

from liveos.cpio.format import HEADER_SIZE, NEWC_CRC_MAGIC, NEWC_MAGIC, TRAILER, CpioEntry, CpioHeader
from liveos.errors import ImageError, UsageError

log = logging.getLogger("liveos")
T = TypeVar("T")

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


#: Segment magic -> (name, decompressor factory). Order matters only for shared prefixes.
_MAGICS: tuple[tuple[bytes, str, Callable[[], _Decompressor] | None], ...] = (
    (b"\x1f\x8b", "gzip", None),
    (b"\x28\xb5\x2f\xfd", "zstd", lambda: pyzstd.ZstdDecompressor()),
    (b"\xfd7zXZ\x00", "xz", lambda: lzma.LZMADecompressor(lzma.FORMAT_XZ)),
    (b"\x5d\x00\x00", "lzma", lambda: lzma.LZMADecompressor(lzma.FORMAT_ALONE)),
    (b"BZh", "bzip2", lambda: bz2.BZ2Decompressor()),
    (b"\x02\x21\x4c\x18", "lz4", None),
    (b"\x89LZO", "lzo", None),
)


class _Stream:
    """Bytes from a chunk iterator, with peek and push-back (for the bytes after a segment)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    def _fill(self, n: int) -> bool:
        """Make ``n`` bytes available if the source has them."""
        while len(self._buf) - self._pos < n:
            chunk = next(self._chunks, None)
            if chunk is None:
                return False
            if chunk:
                self._buf = self._buf[self._pos :] + chunk if self._pos < len(self._buf) else chunk
                self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._pos : self._pos + n]

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, fewer only at the end of the stream."""
        self._fill(n)
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        self.offset += len(data)
        return data

    def read_chunk(self, limit: int = _CHUNK) -> bytes:
        """Whatever is available, at most ``limit`` bytes (empty at the end)."""
        if self._pos >= len(self._buf) and not self._fill(1):
            return b""
        if self._pos == 0 and len(self._buf) <= limit:
            data = self._buf  # hand the whole chunk over without a copy
        else:
            data = self._buf[self._pos : self._pos + limit]
        self._pos += len(data)
        self.offset += len(data)
        return data

    def unread(self, data: bytes) -> None:
        if data:
            self._buf = data + self._buf[self._pos :]
            self._pos = 0
            self.offset -= len(data)

    def skip_zeros(self) -> int:
        """Skip zero padding between segments/archives; returns how many bytes were skipped."""
        skipped = 0
        while self._fill(1):
            rest = self._buf[self._pos :]
            stripped = rest.lstrip(b"\0")
            n = len(rest) - len(stripped)
            self._pos += n
            self.offset += n
            skipped += n
            if stripped:
                break
        return skipped


def _file_chunks(fp: BinaryIO) -> Iterator[bytes]:
    while chunk := fp.read(_CHUNK):
        yield chunk


def _decompressed(raw: _Stream, name: str, factory: Callable[[], _Decompressor] | None) -> Iterator[bytes]:
    """Decompress one segment from ``raw``; the bytes after its end are pushed back into ``raw``."""
    if name == "gzip":
        yield from _gunzip(raw)
        return
    if factory is None:
        raise ImageError(
            f"initrd segment compressed with {name} at offset {raw.offset}: not supported by liveos",
            hint=f"decompress it first ({name} -dc) or rebuild the initrd with zstd, gzip or xz",
        )
    d = factory()
    while not d.eof:
        if d.needs_input:
            chunk = raw.read_chunk()
            if not chunk:
                raise ImageError(f"truncated {name} segment in initrd")
        else:
            chunk = b""
        yield d.decompress(chunk, _MAX_OUT)
    raw.unread(d.unused_data)


def _gunzip(raw: _Stream) -> Iterator[bytes]:
    d = zlib.decompressobj(31)
    while not d.eof:
        chunk = d.unconsumed_tail or raw.read_chunk()
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
        return self.entry.name

    @property
    def size(self) -> int:
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
    while True:
        raw = stream.read(HEADER_SIZE)
        if len(raw) < HEADER_SIZE:
            raise ImageError(f"initrd ends inside a cpio header (archive {archive}, {compression})")
        header = CpioHeader.parse(raw)
        rest = stream.read(header.data_offset - HEADER_SIZE)
        if len(rest) < header.namesize or header.namesize < 1 or rest[header.namesize - 1] != 0:
            raise ImageError(f"corrupt cpio name in archive {archive} ({compression})")
        name = os.fsdecode(rest[: header.namesize - 1])
        if name == TRAILER:
            stream.read(header.filesize + (-header.filesize & 3))
            return
        pad = -header.filesize & 3
        if stat.S_ISLNK(header.mode):
            target = stream.read(header.filesize)
            if len(target) < header.filesize:
                raise ImageError(f"initrd ends inside the symlink {name!r}")
            stream.read(pad)
            yield CpioMember(CpioEntry.from_header(header, name, target), archive, compression)
            continue
        member = CpioMember(
            CpioEntry.from_header(header, name, None), archive, compression, stream, header.filesize
        )
        yield member
        member._skip_rest()
        stream.read(pad)


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


def iter_entries(source: Path | BinaryIO) -> Iterator[CpioMember]:
    """Every entry of an initrd, across all its segments, in archive order (streaming)."""
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
                    path=source if isinstance(source, (str, os.PathLike)) else None,
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
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        offset = 0
        while offset < size:
            f.seek(offset)
            head = f.read(HEADER_SIZE)
            stripped = head.lstrip(b"\0")
            if not stripped:
                offset += len(head)
                continue
            offset += len(head) - len(stripped)
            if head[len(head) - len(stripped) :][:6] not in (NEWC_MAGIC, NEWC_CRC_MAGIC):
                f.seek(offset)
                magic = f.read(8)
                found = next((m for m in _MAGICS if magic.startswith(m[0])), None)
                return found[1] if found else "unknown"
            f.seek(offset)
            header = CpioHeader.parse(f.read(HEADER_SIZE))
            offset += header.data_offset + header.filesize + (-header.filesize & 3)
        return "none"


# ---------------------------------------------------------------------------------------------
# Extraction.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExtractStats:
    """What :func:`extract` created."""

    entries: int
    data_bytes: int
    skipped: int


def _safe_parts(name: str) -> list[str]:
    """Split an archive name into components; refuse absolute names and ``..``."""
    if name.startswith("/"):
        raise ImageError(f"initrd entry {name!r} is an absolute path: refusing to extract it")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"initrd entry {name!r} contains '..': refusing to extract it")
    return parts


class _Extractor:
    def __init__(self, dest_fd: int, same_owner: bool) -> None:
        self.dest_fd = dest_fd
        self.same_owner = same_owner
        self.links: dict[tuple[int, int], str] = {}
        self.dirs: list[tuple[str, CpioEntry]] = []
        self.cached: tuple[str, int] | None = None
        self.entries = 0
        self.bytes = 0
        self.skipped = 0

    def close(self) -> None:
        if self.cached is not None:
            os.close(self.cached[1])
            self.cached = None

    def parent_fd(self, parts: list[str]) -> int:
        """Open (creating as needed) the parent of ``parts`` without following any symlink."""
        rel = "/".join(parts[:-1])
        if self.cached is not None and self.cached[0] == rel:
            return self.cached[1]
        self.close()
        fd = os.dup(self.dest_fd)
        try:
            for part in parts[:-1]:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                try:
                    nfd = os.open(
                        part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
                    )
                except (NotADirectoryError, OSError) as exc:
                    raise ImageError(
                        f"initrd entry {'/'.join(parts)!r}: parent {part!r} is not a directory "
                        f"(a symlink or file): refusing to extract through it ({exc.strerror})"
                    ) from None
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        self.cached = (rel, fd)
        return fd

    def invalidate(self, rel: str) -> None:
        if self.cached is not None and (self.cached[0] == rel or self.cached[0].startswith(rel + "/")):
            self.close()

    def member(self, m: CpioMember) -> None:
        e = m.entry
        parts = _safe_parts(e.name)
        if not parts:  # the root entry "." describes dest itself
            self.dirs.append(("", e))
            return
        rel = "/".join(parts)
        self.invalidate(rel)
        pfd = self.parent_fd(parts)
        base = parts[-1]
        fmt = stat.S_IFMT(e.mode)
        if fmt == stat.S_IFDIR:
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)
            except FileExistsError:
                st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    _remove(base, pfd)
                    os.mkdir(base, 0o700, dir_fd=pfd)
            self.dirs.append((rel, e))
        elif fmt == stat.S_IFREG:
            self.regular(m, pfd, base, rel)
        elif fmt == stat.S_IFLNK:
            _replace(lambda: os.symlink(e.linkname or "", base, dir_fd=pfd), base, pfd)
            self.attrs(base, pfd, e, is_link=True)
        elif fmt in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
            dev = os.makedev(e.rdevmajor, e.rdevminor)
            _replace(lambda: os.mknod(base, e.mode, dev, dir_fd=pfd), base, pfd)
            self.attrs(base, pfd, e)
        else:
            log.warning("cpio: skipping %s: unsupported file type %o", e.name, fmt)
            self.skipped += 1
            return
        self.entries += 1

    def regular(self, m: CpioMember, pfd: int, base: str, rel: str) -> None:
        e = m.entry
        key = (m.archive, e.ino)
        first = self.links.get(key) if e.nlink > 1 else None
        if first is not None and first != rel:
            # newc hard link: link to the first name; the data may come with any link (the last).
            _replace(
                lambda: os.link(first, base, src_dir_fd=self.dest_fd, dst_dir_fd=pfd, follow_symlinks=False),
                base,
                pfd,
            )
            if not m.size:
                return
            fd = os.open(base, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
        else:
            if e.nlink > 1:
                self.links[key] = rel
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = _replace(lambda: os.open(base, flags, 0o600, dir_fd=pfd), base, pfd)
        try:
            self.bytes += m.copy_to(fd)
            if self.same_owner:
                os.fchown(fd, e.uid, e.gid)
            os.fchmod(fd, stat.S_IMODE(e.mode))
            os.utime(fd, (e.mtime, e.mtime))
        finally:
            os.close(fd)

    def attrs(self, base: str, pfd: int, e: CpioEntry, *, is_link: bool = False) -> None:
        if self.same_owner:
            os.chown(base, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
        if not is_link:
            os.chmod(base, stat.S_IMODE(e.mode), dir_fd=pfd)
        os.utime(base, (e.mtime, e.mtime), dir_fd=pfd, follow_symlinks=False)

    def finish_dirs(self) -> None:
        """Directory owners/modes/mtimes last: children would change mtimes, read-only dirs block writes."""
        self.close()
        for rel, e in reversed(self.dirs):
            if rel:
                pfd = self.parent_fd([*rel.split("/")])
                self.attrs(rel.rsplit("/", 1)[-1], pfd, e)
            else:
                self.attrs(".", self.dest_fd, e)
        self.close()


def _remove(base: str, pfd: int) -> None:
    try:
        os.unlink(base, dir_fd=pfd)
    except IsADirectoryError:
        try:
            os.rmdir(base, dir_fd=pfd)
        except OSError as exc:
            raise ImageError(f"initrd replaces the non-empty directory {base!r} with a file") from exc


def _replace(create: Callable[[], T], base: str, pfd: int) -> T:
    """Create an entry; if its name exists, remove the old one first (later entries win)."""
    try:
        return create()
    except FileExistsError:
        _remove(base, pfd)
        return create()


def extract(source: Path | BinaryIO, dest: Path, *, same_owner: bool | None = None) -> ExtractStats:
    """Extract every entry of an initrd into the existing directory ``dest``.

    Modes, mtimes, symlinks, device nodes, fifos and hard links are restored; owners too when
    ``same_owner`` (default: when running as root). Names escaping ``dest`` raise ImageError.
    """
    dest = Path(dest)
    if not dest.is_dir():
        raise UsageError(f"extraction target {dest} is not a directory", path=dest, hint="create it first")
    if same_owner is None:
        same_owner = os.geteuid() == 0
    dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    ex = _Extractor(dest_fd, same_owner)
    try:
        for member in iter_entries(source):
            ex.member(member)
        ex.finish_dirs()
    finally:
        ex.close()
        os.close(dest_fd)
    return ExtractStats(entries=ex.entries, data_bytes=ex.bytes, skipped=ex.skipped)
