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

Progress: :func:`write_newc` reports the bytes it has written (after compression) to the
current step (:mod:`liveos.progress`), whose total the caller may have set to the expected
size; each full buffer or big file reports once (a cheap call when nobody listens).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import stat
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from liveos.cpio.format import HEADER_FMT, HEADER_SIZE, MAX_FILE_SIZE, TRAILER, U32, CpioEntry, pad4
from liveos.cpio.sinks import Sink, compressor_sink, output_fd
from liveos.errors import ImageError, UsageError
from liveos.progress import Unit, current
from liveos.reproducible import source_date_epoch as env_source_date_epoch
from liveos.settings import Compression

log = logging.getLogger("liveos")

#: Output buffer: L2-sized; 1-4 MiB buffers measured 1.4-2x slower for read+write copying.
_BUF_SIZE = 256 * 1024
#: Files larger than this bypass the buffer (kernel copy when uncompressed, chunked otherwise).
_SMALL_FILE = 128 * 1024
_O_NOATIME = getattr(os, "O_NOATIME", 0)


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

    def __init__(
        self,
        sink: Sink,
        *,
        sde: int | None,
        owner: tuple[int, int] | None,
        written: Callable[[], None] | None = None,
    ) -> None:
        self.sink = sink
        self.written = written  #: called after data went to the sink (progress)
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
            if self.written is not None:
                self.written()

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
        n = pad4(self.offset)
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
        mtime = min(max(mtime, 0), U32)
        namesize = len(name) + 1
        head = HEADER_FMT % (
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
        self.put(head + name + b"\0" * (1 + pad4(HEADER_SIZE + namesize)))
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
                if self.written is not None:
                    self.written()
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


def write_newc(
    root: Path,
    out: Path | BinaryIO,
    *,
    compression: Compression,
    level: int | None = None,
    threads: int | None = None,
    exclude: Collection[str] = (),
    extra: Sequence[CpioEntry] = (),
    source_date_epoch: int | None = None,
    owner: tuple[int, int] | None = None,
    include_root: bool = True,
) -> CpioStats:
    """Archive the directory ``root`` as a newc CPIO, compressed with ``compression``, into ``out``.

    ``level``: the compressor's level (default: :attr:`Compression.default_level`).

    ``exclude``: relative posix paths (or fnmatch globs such as ``boot/*``) left out together
    with everything below them. ``extra``: synthetic entries merged into the sorted order; an
    extra entry replaces an on-disk entry of the same name (a non-directory also hides the disk
    subtree), missing parents are created as 0755 directories. ``owner``: (uid, gid) for every
    entry. ``source_date_epoch`` (default: ``$SOURCE_DATE_EPOCH``) clamps mtimes, making the
    output bit-identical run to run. ``threads``: zstd workers (default: all CPUs).
    A Path is written atomically (no partial file on error); a file object is written from its
    current position on. The bytes written so far go to the current step's progress.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"CPIO source {root} is not a directory", path=root)
    compression = Compression(compression)
    level = compression.default_level if level is None else level
    threads = threads or os.cpu_count() or 1
    sde = source_date_epoch if source_date_epoch is not None else env_source_date_epoch()
    excluded = _Excluder(exclude)
    extras = _Extras(extra)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with output_fd(out) as (raw, bytes_out):
            sink = compressor_sink(compression, level, threads, raw)
            step = current()
            w = _NewcWriter(
                sink,
                sde=sde,
                owner=owner,
                written=(lambda: step.advance(bytes_out(), unit=Unit.BYTES)) if step.active else None,
            )
            w.root_fd = root_fd
            if include_root:
                w.directory(b".", os.stat(root_fd))
            _walk(w, root_fd, b"", excluded, extras)
            w.finish_hardlinks()
            w.trailer()
            sink.close()
            if w.written is not None:
                w.written()
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


def write_newc_paths(
    root: Path,
    out: BinaryIO,
    paths: Sequence[str],
    *,
    compression: Compression,
    level: int | None = None,
    threads: int | None = None,
    source_date_epoch: int | None = None,
) -> CpioStats:
    """Archive exactly ``paths`` of the directory ``root`` (relative posix paths, parents before
    children) as one compressed newc segment appended to ``out`` at its current position.

    This is an *update* of an archive written earlier: the kernel unpacks concatenated segments
    in order, a later entry replacing an earlier one of the same name and type. Every path is
    reached through directory file descriptors opened ``O_NOFOLLOW`` (a component that is a
    symlink is an :class:`ImageError`). Hard links are written as independent files.
    """
    compression = Compression(compression)
    level = compression.default_level if level is None else level
    sde = source_date_epoch if source_date_epoch is not None else env_source_date_epoch()
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with output_fd(out) as (raw, bytes_out):
            sink = compressor_sink(compression, level, threads or os.cpu_count() or 1, raw)
            w = _NewcWriter(sink, sde=sde, owner=None)
            w.root_fd = root_fd
            for rel in paths:
                name = _normalize_name(rel, what="update path")
                parent, _, base = name.rpartition("/")
                dir_fd = _open_parent(root_fd, parent, name)
                try:
                    st = os.stat(base, dir_fd=dir_fd, follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        w.directory(os.fsencode(name), st)
                    elif stat.S_ISREG(st.st_mode):
                        w.header(os.fsencode(name), st.st_mode, st.st_uid, st.st_gid, 1,
                                 int(st.st_mtime), st.st_size, w.alloc_ino(), 0)  # fmt: skip
                        if st.st_size:
                            w.file_data(dir_fd, base, os.fsencode(name), st.st_size)
                    else:
                        w.disk(dir_fd, base, os.fsencode(name), st)
                finally:
                    if dir_fd != root_fd:
                        os.close(dir_fd)
            w.trailer()
            sink.close()
            return CpioStats(
                entries=w.entries - 1,
                bytes_in=w.bytes_in,
                archive_bytes=w.offset,
                bytes_out=bytes_out(),
                hardlinks=0,
                skipped=w.skipped,
            )
    finally:
        os.close(root_fd)


def _open_parent(root_fd: int, parent: str, name: str) -> int:
    """The directory ``parent`` below ``root_fd``, every component opened without following links."""
    fd = root_fd
    for component in parent.split("/") if parent else ():
        try:
            child = os.open(
                component, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd
            )
        except OSError as exc:
            if fd != root_fd:
                os.close(fd)
            raise ImageError(f"cannot reach {name} in the tree without following a link: {exc.strerror}",
                             path=name) from None  # fmt: skip
        if fd != root_fd:
            os.close(fd)
        fd = child
    return fd
