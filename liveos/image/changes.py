"""What the caller changed in an opened image, read from the overlay upper directories.

Every filesystem of an opened image is an overlayfs whose upper directory takes every write
(:attr:`liveos.image.disk.Mount.upper`), so the upper dirs *are* the changes since the image was
opened: :func:`scan_changes` reads them into a :class:`TreeChanges` value, one :class:`Change`
per entry. Its cost follows the size of the changes, never of the image: the lower layers are
not read.

How overlayfs records what it cannot store as a plain entry (``Documentation/filesystems/
overlayfs.rst``): a deleted lower entry is a *whiteout* -- a character device 0:0, or (kernels
6.7+, in layers made for composefs) an empty regular file with the xattr
``trusted.overlay.whiteout``; a directory that replaced a lower one (``rm -rf d; mkdir d``) is
*opaque* (``trusted.overlay.opaque`` = ``y``): nothing of the lower ``d`` shows through. A
renamed directory (``redirect_dir=on``) or a metadata-only copy-up (``metacopy=on``) leaves
entries whose meaning depends on the lower layer; they are reported in
:attr:`TreeChanges.unsupported` so a caller can fall back to a full rebuild.

Reading is confined: entries are stat'ed, read and listed through directory file descriptors,
never following a symlink (files open ``O_NOFOLLOW``, links are only ``readlink``'ed, xattrs are
read from the link itself); directories are walked with an explicit stack, so a tree 100 000
levels deep costs no recursion. The upper dirs hold what the caller and the image's programs
wrote: a file may be any size, so it is hashed in chunks. File digests are memoized in the
process by (device, inode, size, mtime, ctime): a second scan after a one-file change re-reads
that file only. A file changed within the last two seconds is never memoized (like git's "racily
clean" entries: two writes within one timestamp tick leave size and times unchanged).

The overlay xattrs are ``trusted.*``: only root (``CAP_SYS_ADMIN``) can see them, which is how
liveos runs. A scan by another user cannot see opaque directories, xattr whiteouts or redirects
and logs a warning saying so.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any

from liveos.errors import HostError, UsageError

log = logging.getLogger("liveos")

#: Prefix of the xattrs overlayfs keeps for itself (mounted without ``userxattr``).
OVERLAY_XATTR_PREFIX = "trusted.overlay."
_OPAQUE = OVERLAY_XATTR_PREFIX + "opaque"
_WHITEOUT = OVERLAY_XATTR_PREFIX + "whiteout"
#: Overlay xattrs that make an entry mean something only the lower layer can tell.
_UNSUPPORTED = {
    OVERLAY_XATTR_PREFIX + "redirect": "a renamed or moved directory (overlay redirect_dir)",
    OVERLAY_XATTR_PREFIX + "metacopy": "a metadata-only copy-up whose data is in the lower layer "
    "(overlay metacopy)",
}

IMAGE_ROOT = PurePosixPath("/")  #: the mountpoint of the root filesystem

#: Version of the canonical serialisation :meth:`TreeChanges.digest` hashes.
DIGEST_FORMAT = "liveos-tree-changes-1"

_CHUNK_PATH_BYTES = 3072  # below PATH_MAX (4096): deeper directories are opened a chunk at a time
_RACY_NS = 2_000_000_000  # files younger than this are hashed again by the next scan
_MEMO_MAX = 1 << 18  # digests remembered in the process (~60 MiB at most)
_READ_RETRIES = 3


class ChangeKind(enum.StrEnum):
    """What an entry of an upper directory means for the merged tree."""

    FILE = "file"  #: a regular file, new or copied up (its content is the file's)
    DIRECTORY = "directory"  #: a directory merged with the lower one of the same name, if any
    SYMLINK = "symlink"
    WHITEOUT = "whiteout"  #: the lower entry of this name is deleted
    OPAQUE_DIRECTORY = "opaque-directory"  #: a directory hiding everything below it in the lower layers
    SPECIAL = "special"  #: a device node, FIFO or socket


@dataclass(frozen=True)
class Change:
    """One entry of an upper directory: what the merged tree now has at :attr:`path`."""

    path: PurePosixPath  #: path in the image (mountpoint / path in the upper dir)
    kind: ChangeKind
    mode: int  #: ``st_mode``: file type and permission bits
    uid: int
    gid: int
    size: int  #: ``st_size`` (a directory's depends on the host filesystem; not in the digest)
    nlink: int  #: links to this inode in the upper dir (not in the digest; :attr:`links_to` is)
    digest: str | None  #: sha256 hex of a FILE's bytes; the target of a SYMLINK; None otherwise
    xattrs: tuple[tuple[str, bytes], ...] = ()  #: xattrs other than overlayfs' own, sorted by name
    rdev: int = 0  #: device number of a device node
    mountpoint: PurePosixPath = IMAGE_ROOT  #: the filesystem (overlay) the entry belongs to
    links_to: PurePosixPath | None = None  #: the first path (in order) of the same inode, if not this
    unsupported: str | None = None  #: why this entry needs the lower layer to be understood

    @property
    def xattr_map(self) -> dict[str, bytes]:
        """The non-overlay xattrs as a dict (name -> value)."""
        return dict(self.xattrs)

    @property
    def is_deletion(self) -> bool:
        """True for whiteouts and opaque directories: something of the lower layer disappears."""
        return self.kind in (ChangeKind.WHITEOUT, ChangeKind.OPAQUE_DIRECTORY)

    @property
    def fingerprint(self) -> str:
        """sha256 hex of what this entry holds (the fields :meth:`TreeChanges.digest` covers):
        equal fingerprints, equal entries in the merged tree."""
        return hashlib.sha256(json.dumps(self._canonical(), separators=(",", ":")).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (xattr values in hex)."""
        return {
            "path": str(self.path),
            "mountpoint": str(self.mountpoint),
            "kind": self.kind.value,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "size": self.size,
            "nlink": self.nlink,
            "rdev": self.rdev,
            "digest": self.digest,
            "links_to": None if self.links_to is None else str(self.links_to),
            "xattrs": {name: value.hex() for name, value in self.xattrs},
            "unsupported": self.unsupported,
        }

    def _canonical(self) -> list[object]:
        """The fields that make up the content, in a fixed order (see :meth:`TreeChanges.digest`)."""
        return [
            str(self.mountpoint),
            str(self.path),
            self.kind.value,
            self.mode,
            self.uid,
            self.gid,
            None if stat.S_ISDIR(self.mode) else self.size,
            self.rdev,
            self.digest,
            None if self.links_to is None else str(self.links_to),
            [[name, value.hex()] for name, value in self.xattrs],
            self.unsupported,
        ]


def _order(change: Change) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return change.path.parts, change.mountpoint.parts


@dataclass(frozen=True)
class TreeChanges:
    """Everything the upper directories of an opened image hold, in path order.

    :attr:`changes` are the entries below the mountpoints; :attr:`roots` are the upper dirs
    themselves (one per filesystem): liveos creates them, but their mode, owner and xattrs are
    those of the mountpoint in the merged tree, so :meth:`digest` covers them too.
    """

    changes: tuple[Change, ...]
    roots: tuple[Change, ...] = ()

    def __len__(self) -> int:
        return len(self.changes)

    @property
    def is_empty(self) -> bool:
        """True when nothing was written below any mountpoint since the image was opened."""
        return not self.changes

    def paths(self) -> tuple[PurePosixPath, ...]:
        """The image paths of the changes, in order (a path appears twice if two filesystems'
        upper dirs hold it: one hidden below the other's mountpoint)."""
        return tuple(change.path for change in self.changes)

    def deletions(self) -> tuple[Change, ...]:
        """Whiteouts and opaque directories: where lower-layer entries disappear."""
        return tuple(change for change in self.changes if change.is_deletion)

    def total_bytes(self) -> int:
        """Bytes of the changed files' content (a hard-linked file counts once)."""
        return sum(c.size for c in self.changes if c.kind is ChangeKind.FILE and c.links_to is None)

    @property
    def unsupported(self) -> tuple[str, ...]:
        """One ``"<path>: <reason>"`` per entry using an overlay feature these records cannot
        express (a redirect, a metacopy); non-empty means: rebuild from the full tree."""
        return tuple(f"{c.path}: {c.unsupported}" for c in (*self.roots, *self.changes) if c.unsupported)

    def digest(self, select: Callable[[PurePosixPath], bool] | None = None) -> str:
        """sha256 hex over a canonical serialisation of the changes (and roots) whose image path
        ``select`` accepts (all if None): path, kind, mode, owner, size, content digest or link
        target, device number, hard-link structure, xattrs. Times and ``nlink`` are left out, as is
        a directory's size. Stable across processes, runs and hosts for the same content."""
        h = hashlib.sha256(DIGEST_FORMAT.encode() + b"\n")
        for change in sorted((*self.roots, *self.changes), key=_order):
            if select is None or select(change.path):
                h.update(json.dumps(change._canonical(), separators=(",", ":")).encode() + b"\n")
        return h.hexdigest()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form, with the digest of everything."""
        return {
            "format": DIGEST_FORMAT,
            "digest": self.digest(),
            "unsupported": list(self.unsupported),
            "roots": [change.to_dict() for change in self.roots],
            "changes": [change.to_dict() for change in self.changes],
        }


def scan_changes(layers: Iterable[tuple[PurePosixPath | str, Path]]) -> TreeChanges:
    """Read the overlay upper dirs ``layers`` -- ``(mountpoint, upper)`` pairs, one per filesystem
    of the image -- into a :class:`TreeChanges`. An entry's image path is ``mountpoint / its path
    in upper``. Scan when no program writes to the tree: an entry that changes while it is read
    raises :class:`~liveos.errors.HostError` rather than give a wrong digest."""
    if os.geteuid() != 0:
        log.warning(
            "scanning overlay upper dirs as a non-root user: trusted.overlay.* xattrs are invisible, "
            "so opaque directories, xattr whiteouts and redirects are not seen"
        )
    found: list[tuple[Change, int, int]] = []
    roots: list[Change] = []
    seen: set[PurePosixPath] = set()
    for mountpoint, upper in layers:
        mp = _check_mountpoint(mountpoint)
        if mp in seen:
            raise UsageError(f"two overlay upper dirs are given for the mountpoint {mp}", path=upper)
        seen.add(mp)
        roots.append(_scan_layer(mp, Path(upper), found))
    first: dict[tuple[int, int], PurePosixPath] = {}
    changes: list[Change] = []
    for change, dev, ino in sorted(found, key=lambda item: _order(item[0])):
        if change.kind is not ChangeKind.WHITEOUT and not stat.S_ISDIR(change.mode) and change.nlink > 1:
            origin = first.setdefault((dev, ino), change.path)
            if origin != change.path:
                change = replace(change, links_to=origin)
        changes.append(change)
    return TreeChanges(tuple(changes), tuple(sorted(roots, key=_order)))


def clear_digest_memo() -> None:
    """Forget the file digests memoized by earlier scans (the next scan reads every file)."""
    _MEMO.clear()


# ---------------------------------------------------------------------------------------------
# Walking one upper dir
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Dir:
    """A directory still to list: its name below ``parent`` and the inode it must be."""

    parent: _Dir | None
    name: str
    path: PurePosixPath
    dev: int
    ino: int

    def components(self) -> list[str]:
        names: list[str] = []
        node: _Dir | None = self
        while node is not None and node.parent is not None:
            names.append(node.name)
            node = node.parent
        return names[::-1]


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def _check_mountpoint(mountpoint: PurePosixPath | str) -> PurePosixPath:
    mp = PurePosixPath(mountpoint)
    if not mp.is_absolute() or ".." in mp.parts:
        raise UsageError(f"mountpoint {str(mountpoint)!r} is not an absolute path in the image")
    return mp


def _scan_layer(mountpoint: PurePosixPath, upper: Path, found: list[tuple[Change, int, int]]) -> Change:
    """Append the entries of ``upper`` to ``found`` (with their inode); return the root's record."""
    try:
        root_fd = os.open(upper, _DIR_FLAGS)
    except OSError as e:
        raise UsageError(f"cannot open the overlay upper dir {upper}: {e.strerror}", path=upper) from e
    try:
        st = os.fstat(root_fd)
        root = _record(mountpoint, mountpoint, st, _xattrs(root_fd), None)
        stack = [_Dir(None, "", mountpoint, st.st_dev, st.st_ino)]
        while stack:
            node = stack.pop()
            fd = root_fd if node.parent is None else _open_dir(root_fd, node, upper)
            try:
                with os.scandir(fd) as entries:
                    names = [entry.name for entry in entries]
                for name in names:
                    path = node.path / name
                    change, entry_st = _read_entry(fd, name, path, mountpoint, upper)
                    found.append((change, entry_st.st_dev, entry_st.st_ino))
                    if stat.S_ISDIR(entry_st.st_mode):
                        if entry_st.st_dev != st.st_dev:
                            raise HostError(
                                f"{path} in the overlay upper dir {upper} is a mount point",
                                path=upper,
                                hint="unmount what is mounted inside the upper dir",
                            )
                        stack.append(_Dir(node, name, path, entry_st.st_dev, entry_st.st_ino))
            except OSError as e:
                raise HostError(f"cannot read {node.path} in the overlay upper dir {upper}: {e}") from e
            finally:
                if fd != root_fd:
                    os.close(fd)
    finally:
        os.close(root_fd)
    return root


def _open_dir(root_fd: int, node: _Dir, upper: Path) -> int:
    """Open the directory ``node`` without following a symlink at its last component, and check it
    is the inode seen when its parent was listed: a symlink swapped in on the way lands elsewhere."""
    fd = root_fd
    chunk: list[str] = []
    size = 0
    names = node.components()
    try:
        for i, name in enumerate(names):
            chunk.append(name)
            size += len(os.fsencode(name)) + 1
            last = i == len(names) - 1
            if last or size + 256 > _CHUNK_PATH_BYTES:
                sub = os.open("/".join(chunk), _DIR_FLAGS, dir_fd=fd)
                if fd != root_fd:
                    os.close(fd)
                fd, chunk, size = sub, [], 0
        st = os.fstat(fd)
    except OSError as e:
        if fd != root_fd:
            os.close(fd)
        raise _changed(node.path, upper, e) from e
    if (st.st_dev, st.st_ino) != (node.dev, node.ino):
        os.close(fd)
        raise _changed(node.path, upper)
    return fd


def _changed(path: PurePosixPath, upper: Path, error: OSError | None = None) -> HostError:
    why = f" ({error.strerror})" if error is not None else ""
    return HostError(
        f"{path} changed while the overlay upper dir {upper} was scanned{why}",
        path=upper,
        hint="scan when no program writes to the image tree",
    )


def _read_entry(
    dir_fd: int, name: str, path: PurePosixPath, mountpoint: PurePosixPath, upper: Path
) -> tuple[Change, os.stat_result]:
    """Classify the entry ``name`` of the open directory ``dir_fd``; never follows a symlink and
    never opens anything but a regular file."""
    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    xattrs = _xattrs(f"/proc/self/fd/{dir_fd}/{name}")
    digest: str | None = None
    kind: ChangeKind | None = None
    if _is_whiteout(st, xattrs):
        kind = ChangeKind.WHITEOUT
    elif stat.S_ISREG(st.st_mode):
        digest, st = _file_digest(dir_fd, name, st, path, upper)
    elif stat.S_ISLNK(st.st_mode):
        digest = os.readlink(name, dir_fd=dir_fd)
    return _record(path, mountpoint, st, xattrs, digest, kind), st


def _is_whiteout(st: os.stat_result, xattrs: dict[str, bytes]) -> bool:
    """overlayfs' test (``ovl_is_whiteout``, ``ovl_path_check_xwhiteout``): a character device
    0:0, or an empty regular file carrying the whiteout xattr."""
    if stat.S_ISCHR(st.st_mode):
        return st.st_rdev == 0
    return stat.S_ISREG(st.st_mode) and st.st_size == 0 and _WHITEOUT in xattrs


def _record(
    path: PurePosixPath,
    mountpoint: PurePosixPath,
    st: os.stat_result,
    xattrs: dict[str, bytes],
    digest: str | None,
    kind: ChangeKind | None = None,
) -> Change:
    if kind is None:
        if stat.S_ISREG(st.st_mode):
            kind = ChangeKind.FILE
        elif stat.S_ISDIR(st.st_mode):
            kind = ChangeKind.OPAQUE_DIRECTORY if xattrs.get(_OPAQUE) == b"y" else ChangeKind.DIRECTORY
        elif stat.S_ISLNK(st.st_mode):
            kind = ChangeKind.SYMLINK
        else:
            kind = ChangeKind.SPECIAL
    reasons = [reason for name, reason in _UNSUPPORTED.items() if name in xattrs]
    return Change(
        path=path,
        kind=kind,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size,
        nlink=st.st_nlink,
        digest=digest,
        xattrs=tuple(sorted((n, v) for n, v in xattrs.items() if not n.startswith(OVERLAY_XATTR_PREFIX))),
        rdev=st.st_rdev if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else 0,
        mountpoint=mountpoint,
        unsupported="; ".join(reasons) or None,
    )


def _xattrs(target: int | str) -> dict[str, bytes]:
    """All xattrs of an open fd, or of a path's last component itself (never a link's target)."""
    follow = isinstance(target, int)  # an fd is the object itself; os refuses the flag with one
    try:
        names = os.listxattr(target, follow_symlinks=follow)
        return {name: os.getxattr(target, name, follow_symlinks=follow) for name in names}
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}  # the upper filesystem has no xattrs at all
        raise


# ---------------------------------------------------------------------------------------------
# File digests, memoized in the process
# ---------------------------------------------------------------------------------------------

_MemoKey = tuple[int, int, int, int, int]
_MEMO: dict[_MemoKey, str] = {}


def _memo_key(st: os.stat_result) -> _MemoKey:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _now_ns() -> int:
    """The wall clock the filesystem stamps ctime with (a function, so tests can move it)."""
    return time.time_ns()


def _hash_fd(fd: int) -> str:
    """sha256 hex of an open regular file's bytes from its start, read in chunks."""
    with open(fd, "rb", buffering=0, closefd=False) as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _file_digest(
    dir_fd: int, name: str, st: os.stat_result, path: PurePosixPath, upper: Path
) -> tuple[str, os.stat_result]:
    """The digest of the regular file ``name`` (the inode ``st`` describes) and its fstat."""
    for _ in range(_READ_RETRIES):
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != (st.st_dev, st.st_ino):
                raise _changed(path, upper)
            key = _memo_key(before)
            known = _MEMO.get(key)
            if known is not None:
                return known, before
            started = _now_ns()
            digest = _hash_fd(fd)
            if _memo_key(os.fstat(fd)) != key:
                continue  # written while read: read it again
            if max(before.st_mtime_ns, before.st_ctime_ns) < started - _RACY_NS:
                if len(_MEMO) >= _MEMO_MAX:
                    _MEMO.pop(next(iter(_MEMO)), None)  # the oldest
                _MEMO[key] = digest
            return digest, before
        finally:
            os.close(fd)
    raise _changed(path, upper)


__all__ = [
    "DIGEST_FORMAT",
    "IMAGE_ROOT",
    "OVERLAY_XATTR_PREFIX",
    "Change",
    "ChangeKind",
    "TreeChanges",
    "clear_digest_memo",
    "scan_changes",
]
