"""Read an ISO 9660 image without mounting it (the build host may lack the iso9660 driver).

Paths are Rock Ridge paths (the real names). Used by tests and to re-open a Live ISO
(ISO -> ISO re-customization).

An ISO is hostile input. pycdlib parses it; everything it returns is checked here before use:
every Rock Ridge name is validated as one path component (no ``..``, ``/``, NUL, empty or over
255 bytes) before a path is built from it, a name seen twice in a directory or a directory
reached twice (a relocation loop) is refused, symlink targets are checked, file data must lie
inside the image. The tree is walked over pycdlib's records (never re-looked-up by path), and
:meth:`IsoReader.extract` creates entries through :class:`liveos.confined.ConfinedTree`: no
symlink the ISO itself holds is ever followed on the host. Any exception pycdlib raises on a
corrupt image (``KeyError``, ``struct.error``, ``PyCdlibException``...) becomes an
:class:`ImageError` naming the ISO.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import pycdlib

from liveos.confined import ConfinedTree, check_component, check_link_target
from liveos.errors import ImageError, LiveOSError, UsageError

_CHUNK = 1 << 20


class EntryKind(enum.StrEnum):
    """What an ISO directory entry is."""

    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass(frozen=True)
class IsoEntry:
    """One entry of the Rock Ridge tree."""

    path: str
    kind: EntryKind
    mode: int
    size: int
    target: str | None = None


class IsoReader:
    """An open ISO image; use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._iso: Any = pycdlib.PyCdlib()
        self._open = False
        self._data_fd: int | None = None
        #: id(directory record) -> {validated name: record}; records live as long as the ISO
        self._listings: dict[int, dict[str, Any]] = {}
        try:
            self._iso.open(str(self.path))
        except OSError as exc:
            raise ImageError(f"cannot open ISO: {exc}", path=self.path) from exc
        except Exception as exc:  # pycdlib on a corrupt image: KeyError, struct.error, ...
            raise self._corrupt(exc, "cannot open ISO") from exc
        self._open = True
        try:
            with self._reading():
                has_rr = bool(self._iso.has_rock_ridge())
                self._root = self._iso.pvd.root_directory_record()
                self._block = int(self._iso.logical_block_size)
                declared = int(self._iso.pvd.space_size) * self._block
            if not has_rr:
                raise ImageError("ISO has no Rock Ridge extensions; real names are unknown", path=self.path)
            self._size = os.stat(self.path).st_size
            if self._size < declared:  # pycdlib silently cuts files short at the end of the file
                raise ImageError(
                    f"ISO is truncated: it declares {declared} bytes, the file has {self._size}",
                    path=self.path,
                    hint="copy or download the ISO again",
                )
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> IsoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        if self._data_fd is not None:
            os.close(self._data_fd)
            self._data_fd = None
        if self._open:
            self._open = False
            self._listings.clear()
            with contextlib.suppress(Exception):
                self._iso.close()

    # -- the pycdlib boundary ------------------------------------------------------------------
    def _corrupt(self, exc: BaseException, what: str = "corrupt ISO") -> ImageError:
        return ImageError(
            f"{what}: {type(exc).__name__}: {exc}",
            path=self.path,
            hint="the ISO is damaged or not an ISO 9660 image; rebuild or re-download it",
        )

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Around every use of pycdlib's records: an exception on corrupt data -> ImageError."""
        try:
            yield
        except LiveOSError:
            raise
        except Exception as exc:  # KeyError, IndexError, struct.error, RecursionError, ...
            raise self._corrupt(exc) from exc

    @property
    def label(self) -> str:
        """The primary volume descriptor's volume identifier, without padding."""
        with self._reading():
            return str(self._iso.pvd.volume_identifier.decode("utf-8", "replace").rstrip(" \0"))

    @property
    def joliet_label(self) -> str | None:
        """The Joliet volume identifier (what grub and blkid report), or None without Joliet."""
        with self._reading():
            vd = getattr(self._iso, "joliet_vd", None)
            if vd is None:
                return None
            return str(vd.volume_identifier.decode("utf-16-be", "replace").rstrip(" \0"))

    # -- the tree ------------------------------------------------------------------------------
    def _kind(self, rec: Any, path: str) -> EntryKind:
        with self._reading():
            is_dir, is_link = bool(rec.is_dir()), bool(rec.is_symlink())
        if is_dir and is_link:
            raise ImageError(
                f"ISO entry {_show(path)} is both a directory and a symlink",
                path=self.path,
                hint="the ISO is corrupt or crafted",
            )
        if is_link:
            return EntryKind.SYMLINK
        return EntryKind.DIR if is_dir else EntryKind.FILE

    def _children(self, rec: Any, path: str) -> dict[str, Any]:
        """The entries of the directory ``rec`` (at ``path``) by validated Rock Ridge name.

        Relocated deep directories are listed where they belong (their CL placeholder's name),
        not in the relocation directory, which is hidden. A name that is not a single valid
        component, or that appears twice, is an :class:`ImageError`.
        """
        listing = self._listings.get(id(rec))
        if listing is not None:
            return listing
        listing = {}
        with self._reading():
            last = None
            for child in rec.children:
                if child.is_dot() or child.is_dotdot():
                    continue
                ident = child.file_identifier()
                if ident == last:  # the further extents of a file >= 4 GiB
                    continue
                last = ident
                rr = child.rock_ridge
                if rr is None:
                    raise ImageError(
                        f"ISO entry {ident!r} in {_show(path)} has no Rock Ridge name", path=self.path
                    )
                if rr.relocated_record() or _is_relocated_destination(child):
                    continue  # listed through its CL placeholder
                target = child
                if rr.child_link_record_exists():
                    target = rr.cl_to_moved_dr
                    if target is None or not target.is_dir():
                        raise ImageError(f"broken Rock Ridge relocation in {_show(path)}", path=self.path)
                if rec.is_root and target.is_dir() and _is_relocation_dir(target):
                    continue
                name = check_component(rr.name(), what=f"ISO directory {_show(path)}:", source=self.path)
                if name in listing:
                    raise ImageError(
                        f"ISO directory {_show(path)} holds two entries named {name!r}",
                        path=self.path,
                        hint="the ISO is corrupt or crafted",
                    )
                listing[name] = target
        self._listings[id(rec)] = listing
        return listing

    def _record(self, path: str) -> Any:
        """The record at ``path``; symlinks on the way are not followed (UsageError if absent)."""
        full = PurePosixPath("/", path)
        rec = self._root
        here = "/"
        for name in full.parts[1:]:
            child = None
            if self._kind(rec, here) is EntryKind.DIR:
                child = self._children(rec, here).get(name)
            if child is None:
                raise UsageError(f"{_show(path)} not found on the ISO", path=self.path)
            rec = child
            here = str(PurePosixPath(here, name))
        return rec

    def _runs(self, rec: Any, path: str) -> list[tuple[int, int]]:
        """(byte offset, byte size) of each extent of a file, checked to lie inside the image."""
        runs: list[tuple[int, int]] = []
        with self._reading():
            seen: set[int] = set()
            while rec is not None and id(rec) not in seen:
                seen.add(id(rec))
                if rec.data_length == 0:
                    break
                if rec.inode is None:  # data pycdlib does not track as a file (the boot catalog)
                    offset = int(rec.extent_location()) * self._block
                else:
                    offset = (int(rec.inode.extent_location()) + int(rec.data_extent_offset)) * self._block
                length = int(rec.data_length)
                runs.append((offset, length))
                rec = rec.data_continuation
        for offset, length in runs:
            if offset < 0 or length < 0 or offset + length > self._size:
                raise ImageError(
                    f"ISO file {_show(path)} claims data at bytes {offset}-{offset + length}, "
                    f"past the end of the image ({self._size} bytes)",
                    path=self.path,
                    hint="the ISO is truncated or corrupt",
                )
        return runs

    def _entry(self, path: str, rec: Any) -> IsoEntry:
        kind = self._kind(rec, path)
        with self._reading():
            mode = None
            rr = rec.rock_ridge
            if rr is None and rec.is_root and rec.children:  # the root's mode is on its "."
                rr = rec.children[0].rock_ridge
            if rr is not None:
                with contextlib.suppress(pycdlib.pycdlibexception.PyCdlibException):
                    mode = stat.S_IMODE(rr.get_file_mode())
            if mode is None:
                mode = 0o555 if kind is EntryKind.DIR else 0o444
            if kind is EntryKind.SYMLINK:
                target = check_link_target(
                    rec.rock_ridge.symlink_path(), what="ISO", name=path, source=self.path
                )
                return IsoEntry(path, kind, mode, 0, target)
        if kind is EntryKind.DIR:
            return IsoEntry(path, kind, mode, 0)
        return IsoEntry(path, kind, mode, sum(length for _, length in self._runs(rec, path)))

    def _walk(self, top: Any, top_path: str) -> Iterator[tuple[tuple[str, ...], IsoEntry, Any]]:
        """(components below ``top``, entry, record) of every entry below ``top``: a directory's
        entries (directories, then files, by name), then each subdirectory's, depth first."""
        seen = {id(top)}
        pending: list[tuple[tuple[str, ...], str, Any]] = [((), top_path, top)]
        while pending:
            rel, path, rec = pending.pop()
            children = self._children(rec, path)
            kinds = {
                name: self._kind(child, f"{path.rstrip('/')}/{name}") for name, child in children.items()
            }
            names = sorted(n for n in children if kinds[n] is EntryKind.DIR)
            names += sorted(n for n in children if kinds[n] is not EntryKind.DIR)
            subdirs = []
            for name in names:
                child = children[name]
                parts = (*rel, name)
                child_path = str(PurePosixPath(path, name))
                if kinds[name] is EntryKind.DIR:
                    if id(child) in seen:
                        raise ImageError(
                            f"ISO directory {_show(child_path)} is reached twice (a relocation loop)",
                            path=self.path,
                            hint="the ISO is corrupt or crafted",
                        )
                    seen.add(id(child))
                    subdirs.append((parts, child_path, child))
                yield parts, self._entry(child_path, child), child
            pending.extend(reversed(subdirs))

    # -- public API ----------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        """Whether the ISO has an entry at ``path`` (symlinks on the way are not followed)."""
        try:
            self._record(path)
        except UsageError:
            return False
        return True

    def entry(self, path: str) -> IsoEntry:
        """Describe one entry (not following symlinks)."""
        return self._entry(str(PurePosixPath("/", path)), self._record(path))

    def walk(self, top: str = "/") -> Iterator[IsoEntry]:
        """Yield every entry below ``top`` (not ``top`` itself), parents before children."""
        rec = self._record(top)
        if self._kind(rec, top) is not EntryKind.DIR:
            raise ImageError(f"{_show(top)} is not a directory on the ISO", path=self.path)
        for _, entry, _ in self._walk(rec, str(PurePosixPath("/", top))):
            yield entry

    def _file_runs(self, path: str) -> list[tuple[int, int]]:
        rec = self._record(path)
        if self._kind(rec, path) is not EntryKind.FILE:
            raise UsageError(f"{_show(path)} is not a regular file on the ISO", path=self.path)
        return self._runs(rec, path)

    def read_bytes(self, path: str) -> bytes:
        """The content of a regular file."""
        return b"".join(self._pread(offset, length) for offset, length in self._file_runs(path))

    def extents(self, path: str) -> list[tuple[int, int]]:
        """(byte offset, byte size) runs of a file's data in the image; > 1 for files >= 4 GiB."""
        return self._file_runs(path)

    def extent(self, path: str) -> tuple[int, int]:
        """(byte offset, byte size) of a file stored in one piece (e.g. the El Torito image)."""
        runs = self.extents(path)
        if len(runs) != 1:
            raise UsageError(f"{_show(path)} is stored in {len(runs)} extents, not one", path=self.path)
        return runs[0]

    def extract(self, path: str, dest: Path, *, within: Path | None = None) -> None:
        """Copy ``path`` (a file, symlink or whole subtree) to ``dest`` with modes and symlinks.

        Below ``dest``, every entry is created through a :class:`ConfinedTree` from validated
        names, never following a link (not even one this extraction created). ``dest`` itself is
        the caller's host path and is trusted, unless ``within`` is given: then only ``within``
        is, and the components from it to ``dest`` are created or opened confined too (so a
        symlink that an earlier extraction put there is refused, not followed). Directory modes
        are set last (a 0555 dir would block its children).
        """
        dest = Path(dest)
        rec = self._record(path)
        top = self._entry(str(PurePosixPath("/", path)), rec)
        if within is not None:
            try:
                prefix = Path(dest).relative_to(within).parts
            except ValueError:
                raise UsageError(f"cannot extract to {dest}: not below {within}", path=dest) from None
            if ".." in prefix or (not prefix and top.kind is not EntryKind.DIR) or not Path(within).is_dir():
                raise UsageError(f"cannot extract {_show(path)} to {dest} within {within}", path=dest)
            root = Path(within)
        elif top.kind is EntryKind.DIR:
            dest.mkdir(mode=0o755, exist_ok=True)
            root, prefix = dest, ()
        else:
            if dest.name in ("", ".", ".."):
                raise UsageError(f"cannot extract {_show(path)} to {dest}: not a file name", path=dest)
            root, prefix = dest.parent, (dest.name,)
        with ConfinedTree(root, what="ISO", source=self.path) as tree:
            self._create(tree, prefix, top, rec)
            if top.kind is not EntryKind.DIR:
                return
            dirs: list[tuple[tuple[str, ...], int]] = [(prefix, top.mode)]
            for parts, entry, child in self._walk(rec, top.path):
                self._create(tree, (*prefix, *parts), entry, child)
                if entry.kind is EntryKind.DIR:
                    dirs.append(((*prefix, *parts), entry.mode))
            for parts, mode in reversed(dirs):  # children before parents
                tree.set_dir_attrs(parts, mode=mode)

    # -- data ----------------------------------------------------------------------------------
    def _create(self, tree: ConfinedTree, parts: tuple[str, ...], entry: IsoEntry, rec: Any) -> None:
        if entry.kind is EntryKind.DIR:
            tree.mkdir(parts)
        elif entry.kind is EntryKind.SYMLINK:
            assert entry.target is not None
            tree.symlink(parts, entry.target)
        else:
            runs = self._runs(rec, entry.path)
            fd = tree.create_file(parts)
            try:
                with tree.errors(parts, "write"):
                    for offset, length in runs:
                        self._copy(offset, length, fd)
                    ConfinedTree.set_fd_attrs(fd, mode=entry.mode)
            finally:
                os.close(fd)

    def _fd(self) -> int:
        if self._data_fd is None:
            self._data_fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return self._data_fd

    def _short(self) -> ImageError:
        return ImageError("the ISO ends inside a file's data (truncated?)", path=self.path)

    def _pread(self, offset: int, length: int) -> bytes:
        parts = []
        while length:
            data = os.pread(self._fd(), min(length, _CHUNK), offset)
            if not data:
                raise self._short()
            parts.append(data)
            offset += len(data)
            length -= len(data)
        return b"".join(parts)

    def _copy(self, offset: int, length: int, out: int) -> None:
        """Copy ``length`` bytes at ``offset`` of the ISO to the fd ``out`` (in the kernel)."""
        while length:
            try:
                sent = os.sendfile(out, self._fd(), offset, min(length, 1 << 30))
            except OSError as exc:
                if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
                    raise
                data = self._pread(offset, min(length, _CHUNK))
                view = memoryview(data)
                while view:
                    view = view[os.write(out, view) :]
                sent = len(data)
            if not sent:
                raise self._short()
            offset += sent
            length -= sent


def _show(path: str) -> str:
    """A path for a message: undecodable bytes (surrogate escapes) as backslash escapes."""
    return path.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_relocated_destination(rec: Any) -> bool:
    """A relocated directory's real record (its ``..`` has a PL): reached through its CL placeholder."""
    children = rec.children if rec.is_dir() else []
    if len(children) < 2:
        return False
    dotdot = children[1]
    return bool(dotdot.rock_ridge is not None and dotdot.rock_ridge.parent_link_record_exists())


def _is_relocation_dir(rec: Any) -> bool:
    """Rock Ridge's deep-directory parking lot (``rr_moved``): holds only relocated (RE) entries."""
    children = [c for c in rec.children if not (c.is_dot() or c.is_dotdot())]
    return bool(children) and all(
        c.rock_ridge is not None and c.rock_ridge.relocated_record() for c in children
    )
