"""Read an ISO 9660 image without mounting it (the build host may lack the iso9660 driver).

Paths are Rock Ridge paths (the real names). Used by tests and to re-open a Live ISO
(ISO -> ISO re-customization).
"""

from __future__ import annotations

import contextlib
import enum
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import pycdlib

from liveos.errors import ImageError, UsageError


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
        try:
            self._iso.open(str(self.path))
        except (OSError, pycdlib.pycdlibexception.PyCdlibException) as exc:
            raise ImageError(f"cannot open ISO: {exc}", path=self.path) from exc
        if not self._iso.has_rock_ridge():
            self._iso.close()
            raise ImageError("ISO has no Rock Ridge extensions; real names are unknown", path=self.path)

    def __enter__(self) -> IsoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the file."""
        self._iso.close()

    @property
    def label(self) -> str:
        """The primary volume descriptor's volume identifier, without padding."""
        return str(self._iso.pvd.volume_identifier.decode("utf-8", "replace").rstrip(" \0"))

    @property
    def joliet_label(self) -> str | None:
        """The Joliet volume identifier (what grub and blkid report), or None without Joliet."""
        vd = getattr(self._iso, "joliet_vd", None)
        if vd is None:
            return None
        return str(vd.volume_identifier.decode("utf-16-be", "replace").rstrip(" \0"))

    def entry(self, path: str) -> IsoEntry:
        """Describe one entry (not following symlinks)."""
        rec = self._record(path)
        full = str(PurePosixPath("/", path))
        size = 0
        if not (rec.is_dir() or rec.is_symlink()):
            size = sum(length for _, length in self.extents(full))
        return _entry(full, rec, size)

    def walk(self, top: str = "/") -> Iterator[IsoEntry]:
        """Yield every entry below ``top`` (not ``top`` itself), parents before children."""
        for dirpath, dirs, files in self._iso.walk(rr_path=str(PurePosixPath("/", top))):
            for name in sorted(dirs) + sorted(files):
                path = str(PurePosixPath(dirpath, name))
                if dirpath == "/" and name in dirs and _is_relocation_dir(self._record(path)):
                    continue
                yield self.entry(path)

    def read_bytes(self, path: str) -> bytes:
        """The content of a regular file."""
        rec = self._record(path)
        if rec.is_dir() or rec.is_symlink():
            raise UsageError(f"{path} is not a regular file on the ISO", path=self.path)
        buf = io.BytesIO()
        self._iso.get_file_from_iso_fp(buf, iso_path=self._data_path(path))
        return buf.getvalue()

    def extents(self, path: str) -> list[tuple[int, int]]:
        """(byte offset, byte size) runs of a file's data in the image; > 1 for files >= 4 GiB."""
        runs = self._iso.get_file_byte_extents(iso_path=self._data_path(path))
        return [(int(offset), int(length)) for offset, length in runs]

    def extent(self, path: str) -> tuple[int, int]:
        """(byte offset, byte size) of a file stored in one piece (e.g. the El Torito image)."""
        runs = self.extents(path)
        if len(runs) != 1:
            raise UsageError(f"{path} is stored in {len(runs)} extents, not one", path=self.path)
        return runs[0]

    def extract(self, path: str, dest: Path) -> None:
        """Copy ``path`` (a file, symlink or whole subtree) to ``dest`` with modes and symlinks."""
        top = self.entry(path)
        self._extract_one(top, dest)
        if top.kind is EntryKind.DIR:
            for entry in self.walk(path):
                rel = PurePosixPath(entry.path).relative_to(PurePosixPath("/", path))
                self._extract_one(entry, dest / rel)
            for entry in [top, *self.walk(path)]:  # dir modes last: a 0555 dir blocks its children
                if entry.kind is EntryKind.DIR:
                    rel = PurePosixPath(entry.path).relative_to(PurePosixPath("/", path))
                    os.chmod(dest / rel, entry.mode)

    def _extract_one(self, entry: IsoEntry, dest: Path) -> None:
        if entry.kind is EntryKind.DIR:
            dest.mkdir(mode=0o755, exist_ok=True)
        elif entry.kind is EntryKind.SYMLINK:
            assert entry.target is not None
            with contextlib.suppress(FileNotFoundError):
                dest.unlink()
            os.symlink(entry.target, dest)
        else:
            with open(dest, "wb") as out:
                self._iso.get_file_from_iso_fp(out, iso_path=self._data_path(entry.path))
            os.chmod(dest, entry.mode)

    def _data_path(self, path: str) -> str:
        """The ISO 9660 path of a file: pycdlib's Rock Ridge lookup of a multi-extent (>= 4 GiB)
        file yields only its last extent, the ISO 9660 lookup the whole chain."""
        return str(self._iso.full_path_from_dirrecord(self._record(path)))

    def _record(self, path: str) -> Any:
        try:
            return self._iso.get_record(rr_path=str(PurePosixPath("/", path)))
        except pycdlib.pycdlibexception.PyCdlibException as exc:
            raise UsageError(f"{path} not found on the ISO", path=self.path) from exc


def _entry(path: str, rec: Any, size: int) -> IsoEntry:
    mode = rec.rock_ridge.get_file_mode() if rec.rock_ridge is not None else 0o444
    if rec.is_symlink():
        return IsoEntry(
            path, EntryKind.SYMLINK, stat.S_IMODE(mode), 0, rec.rock_ridge.symlink_path().decode()
        )
    if rec.is_dir():
        return IsoEntry(path, EntryKind.DIR, stat.S_IMODE(mode), 0)
    return IsoEntry(path, EntryKind.FILE, stat.S_IMODE(mode), size)


def _is_relocation_dir(rec: Any) -> bool:
    """Rock Ridge's deep-directory parking lot (``rr_moved``): holds only relocated (RE) entries."""
    children = [c for c in rec.children if not (c.is_dot() or c.is_dotdot())]
    return bool(children) and all(
        c.rock_ridge is not None and c.rock_ridge.relocated_record() for c in children
    )
