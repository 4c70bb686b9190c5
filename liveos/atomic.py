"""Write a file all-or-nothing: readers see either the old file, the complete new one, or none.

A build step that dies half-way (error, Ctrl-C, full disk) must never leave a truncated ISO or
initrd behind that a later run or a user could mistake for a finished artifact -- nor the scratch
directories it worked in (:func:`scratch_dir`).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from liveos.errors import UsageError


@contextlib.contextmanager
def atomic_output(path: Path, *, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a binary file opened for writing under a temporary name next to ``path``.

    On normal exit the data is fsync'ed, the file renamed over ``path`` and the directory
    fsync'ed, so the rename survives a crash. On any exception (incl. KeyboardInterrupt) the
    temporary file is removed and ``path`` is left untouched. The yielded file is seekable
    (callers may patch headers after writing the body).
    """
    with atomic_path(path, mode=mode) as tmp, open(tmp, "r+b") as fp:
        yield fp
        fp.flush()


@contextlib.contextmanager
def atomic_path(path: Path, *, mode: int = 0o644) -> Iterator[Path]:
    """Yield the temporary path (an empty file) that becomes ``path`` on success.

    For external tools that write the file themselves (``mkfs.vfat``, ``mcopy``): same
    guarantees as :func:`atomic_output`.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"output directory {parent} does not exist", path=path, hint="create it first")
    _refuse_non_file(path)
    tmp = parent / f".{path.name}.tmp-{os.getpid()}"
    sweep_stale(parent, f".{path.name}.tmp-")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # a leftover of a dead process that had our pid
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(tmp, flags, mode))
        yield tmp
        _fsync(tmp)
        os.chmod(tmp, mode)  # undo the umask applied at creation
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync(parent)


def _refuse_non_file(path: Path) -> None:
    """An output replaces a regular file or takes a new name -- never a directory or a device."""
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return  # a new name (a parent that is not a directory is the caller's check)
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"output path {path} is a directory", path=path, hint="name a file")
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise UsageError(
            f"output path {path} exists and is not a regular file (a device, FIFO or socket)",
            path=path,
            hint="name a regular file or a new file name",
        )


def check_output_file(path: str | os.PathLike[str], *, create_parent: bool = True) -> Path:
    """The absolute output path, checked before any work: a regular file or a new name. Its
    directory is created if missing (``create_parent``), or only checked to be creatable."""
    out = Path(path).absolute()
    _refuse_non_file(out)
    for ancestor in out.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"{ancestor} is not a directory: cannot write {out}", path=out)
            break
    if create_parent:
        out.parent.mkdir(parents=True, exist_ok=True)
    return out


_scratch_ids = itertools.count()


@contextlib.contextmanager
def scratch_dir(
    parent: Path, prefix: str, *, remove: Callable[[Path], None] = shutil.rmtree
) -> Iterator[Path]:
    """A new directory in ``parent`` (mode 0700), removed by ``remove`` on every exit.

    Like :func:`atomic_path`, the name is fixed *before* the directory exists, inside the
    ``try`` that removes it: ``tempfile.mkdtemp`` only returns the name after its mkdir, so a
    SIGTERM/Ctrl-C landing in between left an orphaned directory behind (seen in the signal tests).
    """
    sweep_stale(parent, prefix)
    path = parent / f"{prefix}{os.getpid()}-{next(_scratch_ids)}"
    while path.exists():  # a leftover of a dead process that had our pid
        path = parent / f"{prefix}{os.getpid()}-{next(_scratch_ids)}"
    try:
        path.mkdir(mode=0o700)
        yield path
    finally:
        if path.is_dir():
            remove(path)


def _fsync(path: Path) -> None:
    """Flush ``path`` to disk: a file's data before the rename makes it visible under its final
    name, then its directory, since the new entry is only durable once the directory is synced."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_STALE = re.compile(r"(\d+)(?:-\d+)?")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mounts_below(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this thread's mount namespace."""
    prefix = str(path).replace("\\", "\\134").replace(" ", "\\040")
    with open("/proc/thread-self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p for p in points if p == prefix or p.startswith(prefix + "/")]


def sweep_stale(parent: Path, prefix: str) -> list[Path]:
    """Remove what a killed liveos left in ``parent``: entries named ``<prefix><pid>[-<n>]`` whose
    process is gone. A SIGKILL cannot be caught, so its scratch files stay until the next run that
    works in the same place; its mounts and loop devices are already gone with its private mount
    namespace. Entries with a live process, or with anything still mounted below, are left alone.
    """
    removed: list[Path] = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        match = _STALE.fullmatch(name[len(prefix) :])
        if match is None or _alive(int(match.group(1))):
            continue
        path = parent / name
        if path.is_dir() and not path.is_symlink():
            if mounts_below(path):
                continue
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed
