"""Image paths resolved the way a chroot would: no path from an image ever leads out of its root.

An image is hostile input: ``/etc`` may be a symlink to ``/host/etc``, ``/etc/fstab`` may point
at ``/../../../tmp/x``. :func:`resolve_in_root` follows such links *inside* the root -- absolute
symlinks restart at the image root, ``..`` stops at it.

Extracting an archive (an initrd, an ISO) is the other direction: :class:`ConfinedTree` creates
its entries below a host directory through directory fds opened ``O_NOFOLLOW`` one component at
a time, after :func:`split_relative` / :func:`check_component` validated every name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import TypeVar

from liveos.errors import HostError, ImageError, LiveOSError

T = TypeVar("T")

#: Same limit as Linux (MAXSYMLINKS): more link hops than this is a loop.
MAX_SYMLINK_HOPS = 40


def resolve_in_root(root: Path, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """Return the host path of ``path`` inside ``root``, resolving symlinks as a chroot would.

    ``path`` is an absolute or relative path *in the image* (``/etc/fstab``). Symlinks met on the
    way are followed inside ``root``; the last component is followed only if ``follow_last``.
    Missing components are allowed (the result may not exist yet). Raises :class:`ImageError`
    on a symlink loop.
    """
    parts = list(PurePosixPath("/", path).parts[1:])
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, name)
        is_last = not parts
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(name)
            continue
        except NotADirectoryError:
            resolved.append(name)
            continue
        if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageError(
                    f"too many levels of symbolic links while resolving {path} in the image",
                    path=root / str(path).lstrip("/"),
                    hint="the image contains a symlink loop; fix or remove the link",
                )
            target = os.readlink(candidate)
            target_parts = list(PurePosixPath(target).parts)
            if target.startswith("/"):
                resolved = []
                target_parts = target_parts[1:]
            parts = target_parts + parts
            continue
        resolved.append(name)
    return root.joinpath(*resolved)


# ---------------------------------------------------------------------------------------------
# Creating entries of an untrusted archive below a directory, never following a link.
# ---------------------------------------------------------------------------------------------
#: Linux limits: a path (with its NUL) and one component.
PATH_MAX = 4096
NAME_MAX = 255

#: errno values that are the build host's fault, not the archive's: reported as HostError.
_HOST_ERRNOS = frozenset(
    {
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EIO,
        errno.EROFS,
        errno.ENOMEM,
        errno.EMFILE,
        errno.ENFILE,
        errno.EPERM,
        errno.EACCES,
    }
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Parent directory fds kept open between calls (deeper parents are opened per call).
_MAX_CACHED_DEPTH = 32


def _bad(what: str, name: str | bytes, why: str, source: str | Path | None) -> ImageError:
    return ImageError(
        f"{what} entry name {name!r} {why}: refused",
        path=source,
        hint="the archive is corrupt or crafted to write outside the target directory",
    )


def check_component(name: str | bytes, *, what: str, source: str | Path | None = None) -> str:
    """One path component from an archive (an ISO directory entry's name), validated.

    Refuses the empty name, ``.``, ``..``, ``/``, NUL and names over 255 bytes (:class:`ImageError`
    naming ``source`` and the name); non-UTF-8 bytes come back as surrogate escapes.
    """
    raw = name if isinstance(name, bytes) else os.fsencode(name)
    if raw in (b"", b".", b".."):
        raise _bad(what, name, "is empty, '.' or '..'", source)
    if b"/" in raw or b"\0" in raw:
        raise _bad(what, name, "contains '/' or a NUL byte", source)
    if len(raw) > NAME_MAX:
        raise _bad(what, name, f"is longer than {NAME_MAX} bytes", source)
    return os.fsdecode(raw)


def split_relative(name: str | bytes, *, what: str, source: str | Path | None = None) -> tuple[str, ...]:
    """A relative archive path (``a/b``, ``./a``, ``a//b``; ``.`` is the root) as validated components.

    Refuses absolute names, ``..``, NUL, paths of ``PATH_MAX`` bytes or more and components over
    ``NAME_MAX`` bytes (:class:`ImageError` naming ``source`` and the name).
    """
    text = name if isinstance(name, str) else os.fsdecode(name)
    if text.startswith("/"):
        raise _bad(what, name, "is an absolute path", source)
    if "\0" in text:
        raise _bad(what, name, "contains a NUL byte", source)
    # A character is at most 4 bytes (a surrogate escape is 1): encode only when it may matter.
    if len(text) * 4 >= PATH_MAX and len(os.fsencode(text)) >= PATH_MAX:
        raise _bad(what, name, f"is {PATH_MAX} bytes or longer", source)
    parts = tuple(p for p in text.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _bad(what, name, "contains '..'", source)
    if any(len(p) * 4 > NAME_MAX and len(os.fsencode(p)) > NAME_MAX for p in parts):
        raise _bad(what, name, f"has a component longer than {NAME_MAX} bytes", source)
    return parts


def check_link_target(target: str | bytes, *, what: str, name: str, source: str | Path | None = None) -> str:
    """A symlink target from an archive: any text the kernel accepts (it is never followed here)."""
    raw = target if isinstance(target, bytes) else os.fsencode(target)
    if not raw or b"\0" in raw or len(raw) >= PATH_MAX:
        raise ImageError(
            f"{what} symlink {name!r} has an invalid target {raw[:64]!r} "
            f"(empty, with a NUL byte or {PATH_MAX} bytes or longer)",
            path=source,
            hint="the archive is corrupt",
        )
    return os.fsdecode(raw)


class ConfinedTree:
    """Creates an archive's entries below ``root`` without ever following a link.

    The one implementation behind the CPIO extractor and the ISO reader. Callers pass names as
    validated components (:func:`split_relative`, :func:`check_component`); every parent is
    opened ``O_DIRECTORY | O_NOFOLLOW`` relative to its parent's fd, one component at a time (a
    symlink or file in the way is an :class:`ImageError`), so no host path string is ever
    resolved. Creating an entry replaces an existing non-directory (later entries win) or an empty
    directory. Attributes are set on the object itself: regular files through their fd,
    directories through an fd opened ``O_NOFOLLOW`` (skipped when the name is no longer a
    directory), other nodes with ``follow_symlinks=False``, symlinks never chmod-ed.

    OS errors become :class:`ImageError` (the archive's fault) or :class:`HostError` (disk full,
    I/O error, no privilege). Parent fds are cached along the last path used (sorted archives hit
    the cache); the tree holds at most ``_MAX_CACHED_DEPTH + 3`` fds, whatever the depth.
    """

    def __init__(self, root: Path, *, what: str = "archive", source: str | Path | None = None) -> None:
        self.root = Path(root)
        self.what = what
        self.source = source
        self._names: list[str] = []
        self._fds: list[int] = [os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        self._deep: tuple[tuple[str, ...], int] | None = None

    def __enter__(self) -> ConfinedTree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every fd (the tree is unusable afterwards)."""
        self._trim(0)
        while self._fds:
            os.close(self._fds.pop())

    # -- errors --------------------------------------------------------------------------------
    def error(self, exc: OSError, parts: Sequence[str], doing: str) -> LiveOSError:
        """The liveos error for ``exc`` raised while ``doing`` the entry ``parts``."""
        name = "/".join(parts) or "."
        text = f"cannot {doing} {self.what} entry {name!r} in {self.root}: {exc.strerror or exc}"
        if exc.errno in _HOST_ERRNOS:
            hint = "run as root" if exc.errno in (errno.EPERM, errno.EACCES) else "check the target disk"
            return HostError(text, path=self.root, hint=hint)
        return ImageError(text, path=self.source, hint="the archive is corrupt or hostile")

    @contextlib.contextmanager
    def errors(self, parts: Sequence[str], doing: str) -> Iterator[None]:
        """Turn an :class:`OSError` in the block into :meth:`error`'s liveos error."""
        try:
            yield
        except OSError as exc:
            raise self.error(exc, parts, doing) from exc

    # -- parent directories ------------------------------------------------------------------------
    def _trim(self, depth: int) -> None:
        if self._deep is not None:
            os.close(self._deep[1])
            self._deep = None
        while len(self._names) > depth:
            self._names.pop()
            os.close(self._fds.pop())

    def _open_child(self, fd: int, name: str, parts: Sequence[str], create: bool) -> int:
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ImageError(
                    f"{self.what} entry {'/'.join(parts)!r}: parent {name!r} is not a directory "
                    f"(a symlink or file): refusing to extract through it",
                    path=self.source,
                    hint="the archive is corrupt or crafted to write outside the target directory",
                ) from None
            raise

    def parent_fd(self, parts: Sequence[str], *, create: bool = True) -> int:
        """The fd of ``parts[:-1]`` (the tree's own; do not close it), missing parents created."""
        parents = tuple(parts[:-1])
        if self._deep is not None and self._deep[0] == parents:
            return self._deep[1]
        common = 0
        limit = min(len(self._names), len(parents))
        while common < limit and self._names[common] == parents[common]:
            common += 1
        self._trim(common)
        try:
            for name in parents[common:_MAX_CACHED_DEPTH]:
                fd = self._open_child(self._fds[-1], name, parts, create)
                self._names.append(name)
                self._fds.append(fd)
            if len(parents) <= _MAX_CACHED_DEPTH:
                return self._fds[-1]
            fd = os.dup(self._fds[-1])
            try:
                for name in parents[_MAX_CACHED_DEPTH:]:
                    nfd = self._open_child(fd, name, parts, create)
                    os.close(fd)
                    fd = nfd
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise self.error(exc, parts, "open the parent directory of") from exc
        self._deep = (parents, fd)
        return fd

    # -- creating entries ------------------------------------------------------------------------
    def _remove(self, pfd: int, parts: Sequence[str]) -> None:
        name = parts[-1]
        try:
            os.unlink(name, dir_fd=pfd)
        except IsADirectoryError:
            try:
                os.rmdir(name, dir_fd=pfd)
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise ImageError(
                        f"{self.what} replaces the non-empty directory {'/'.join(parts)!r} "
                        "with a non-directory",
                        path=self.source,
                        hint="the archive is corrupt",
                    ) from None
                raise
        except FileNotFoundError:
            pass

    def _create(self, parts: Sequence[str], doing: str, create: Callable[[int, str], T]) -> T:
        """``create(parent_fd, name)``; an existing entry is removed first (later entries win)."""
        pfd = self.parent_fd(parts)
        try:
            try:
                return create(pfd, parts[-1])
            except FileExistsError:
                self._remove(pfd, parts)
                return create(pfd, parts[-1])
        except OSError as exc:
            raise self.error(exc, parts, doing) from exc

    def mkdir(self, parts: Sequence[str], mode: int = 0o700) -> None:
        """A directory; an existing directory is kept, any other entry replaced."""
        if not parts:
            return
        pfd = self.parent_fd(parts)
        name = parts[-1]
        with self.errors(parts, "create the directory"):
            try:
                os.mkdir(name, mode, dir_fd=pfd)
            except FileExistsError:
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    self._remove(pfd, parts)
                    os.mkdir(name, mode, dir_fd=pfd)

    def create_file(self, parts: Sequence[str], mode: int = 0o600) -> int:
        """A new, empty regular file; returns its fd open for writing (the caller closes it)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        return self._create(
            parts, "create the file", lambda pfd, name: os.open(name, flags, mode, dir_fd=pfd)
        )

    def open_file(self, parts: Sequence[str]) -> int:
        """An existing regular file, truncated and open for writing (the caller closes the fd)."""
        pfd = self.parent_fd(parts)
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        with self.errors(parts, "open the file"):
            if not stat.S_ISREG(os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False).st_mode):
                raise OSError(errno.EINVAL, "not a regular file")  # never open a device or fifo
            fd = os.open(parts[-1], flags, dir_fd=pfd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file")
                os.ftruncate(fd, 0)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def symlink(self, parts: Sequence[str], target: str) -> None:
        """A symlink ``parts -> target`` (the target is validated, never followed)."""
        target = check_link_target(target, what=self.what, name="/".join(parts), source=self.source)
        self._create(parts, "create the symlink", lambda pfd, name: os.symlink(target, name, dir_fd=pfd))

    def mknod(self, parts: Sequence[str], mode: int, device: int = 0) -> None:
        """A device node or fifo (``mode`` includes the file type)."""
        self._create(parts, "create the node", lambda pfd, name: os.mknod(name, mode, device, dir_fd=pfd))

    def identity(self, parts: Sequence[str]) -> tuple[int, int] | None:
        """``(st_dev, st_ino)`` of the regular file at ``parts``, None when there is none."""
        try:
            pfd = self.parent_fd(parts, create=False)
            st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
        except (OSError, ImageError):
            return None
        return (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None

    def hardlink(self, parts: Sequence[str], source: Sequence[str], expected: tuple[int, int]) -> bool:
        """Link ``parts`` to the regular file at ``source``, if that still is the file ``expected``
        (``(st_dev, st_ino)``, see :meth:`identity`); False (nothing done) when it is not."""
        if tuple(source) == tuple(parts) or self.identity(source) != expected:
            return False
        src_fd = os.dup(self.parent_fd(source, create=False))
        try:
            self._create(
                parts,
                "create the hard link",
                lambda pfd, name: os.link(
                    source[-1], name, src_dir_fd=src_fd, dst_dir_fd=pfd, follow_symlinks=False
                ),
            )
        finally:
            os.close(src_fd)
        return True

    # -- attributes ------------------------------------------------------------------------------
    @staticmethod
    def set_fd_attrs(
        fd: int, *, mode: int | None = None, owner: tuple[int, int] | None = None, mtime: int | None = None
    ) -> None:
        """Owner (first: it clears set-id bits), mode and mtime of the open file or directory ``fd``."""
        if owner is not None:
            os.fchown(fd, *owner)
        if mode is not None:
            os.fchmod(fd, stat.S_IMODE(mode))
        if mtime is not None:
            os.utime(fd, (mtime, mtime))

    def set_dir_attrs(
        self,
        parts: Sequence[str],
        *,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
        mtime: int | None = None,
    ) -> bool:
        """Attributes of the directory at ``parts`` (``()``: the root); False, and nothing done,
        when that name is no longer a directory (a symlink or file replaced it)."""
        if not parts:
            with self.errors(parts, "set the attributes of"):
                self.set_fd_attrs(self._fds[0], mode=mode, owner=owner, mtime=mtime)
            return True
        try:
            pfd = self.parent_fd(parts, create=False)
            fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=pfd)
        except ImageError:
            return False
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                return False
            raise self.error(exc, parts, "open the directory") from exc
        try:
            with self.errors(parts, "set the attributes of"):
                self.set_fd_attrs(fd, mode=mode, owner=owner, mtime=mtime)
        finally:
            os.close(fd)
        return True

    def set_attrs(
        self,
        parts: Sequence[str],
        *,
        mode: int | None = None,
        owner: tuple[int, int] | None = None,
        mtime: int | None = None,
    ) -> None:
        """Attributes of the symlink, device node or fifo at ``parts``, never following a link
        (a symlink's mode is never changed)."""
        pfd = self.parent_fd(parts, create=False)
        name = parts[-1]
        with self.errors(parts, "set the attributes of"):
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if owner is not None:
                os.chown(name, *owner, dir_fd=pfd, follow_symlinks=False)
            if mode is not None and not stat.S_ISLNK(st.st_mode):
                try:
                    os.chmod(name, stat.S_IMODE(mode), dir_fd=pfd, follow_symlinks=False)
                except (NotImplementedError, ValueError):
                    # fchmodat(AT_SYMLINK_NOFOLLOW) needs glibc >= 2.32 and /proc; the name was
                    # just checked not to be a link, and nothing else writes to this tree.
                    os.chmod(name, stat.S_IMODE(mode), dir_fd=pfd)
            if mtime is not None:
                os.utime(name, (mtime, mtime), dir_fd=pfd, follow_symlinks=False)
