"""The overlay layers of an opened image, and what a change in them really changes.

Every filesystem of an opened image is an overlay: read-only *lower* trees (the image's own
content) under an *upper* directory that takes every write (:class:`Layer`). The upper dir says
what the caller changed since the image was opened (:mod:`liveos.image.changes`), but not all of
its entries are changes a build cares about: overlayfs copies a directory up, with the same
owner, mode and xattrs, just to hold a changed file below it. :func:`effective_changes` drops
those, and entries hidden below another filesystem's mountpoint; what remains is what the
merged tree shows differently from the image.

Lower trees are image content: they are looked at with ``lstat`` through directory file
descriptors opened ``O_NOFOLLOW``, so a symlink in the image never leads outside it
(:func:`lower_entry`).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.image.changes import OVERLAY_XATTR_PREFIX, Change, ChangeKind, TreeChanges, scan_changes

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Layer:
    """One filesystem of an opened image: where it sits, its read-only trees and its upper dir."""

    mountpoint: PurePosixPath  #: ``/``, ``/boot``, ``/boot/efi``
    upper: Path  #: the overlay upper dir (every write to this filesystem)
    lowers: tuple[Path, ...]  #: the read-only trees, topmost first


@dataclass(frozen=True)
class LowerEntry:
    """What the image itself has at a path, looked at without following links."""

    st: os.stat_result | None  #: None: the image has nothing there
    plain: bool = True  #: False: an ancestor is a symlink or not a directory (the path is odd)
    xattrs: tuple[tuple[str, bytes], ...] = ()


ABSENT = LowerEntry(None)
ODD = LowerEntry(None, plain=False)


def scan(layers: Sequence[Layer]) -> TreeChanges:
    """Every entry of the upper dirs of ``layers`` (see :func:`~liveos.image.changes.scan_changes`)."""
    return scan_changes((layer.mountpoint, layer.upper) for layer in layers)


def owning_layer(layers: Sequence[Layer], path: PurePosixPath) -> Layer:
    """The filesystem a path of the merged tree lives on: the deepest mountpoint above it."""
    best = None
    for layer in layers:
        inside = path == layer.mountpoint or layer.mountpoint in path.parents
        if inside and (best is None or len(layer.mountpoint.parts) > len(best.mountpoint.parts)):
            best = layer
    if best is None:
        raise ValueError(f"{path} is on none of the image's filesystems")
    return best


def lower_entry(layers: Sequence[Layer], path: PurePosixPath) -> LowerEntry:
    """What the image (not the caller) has at ``path``: the first lower tree that has it wins."""
    layer = owning_layer(layers, path)
    parts = path.relative_to(layer.mountpoint).parts
    for lower in layer.lowers:
        entry = _lstat_in(lower, parts)
        if entry is not ABSENT:
            return entry
    return ABSENT


def _lstat_in(root: Path, parts: tuple[str, ...]) -> LowerEntry:
    """lstat ``root/parts`` without following a link on the way (an odd ancestor: :data:`ODD`)."""
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError:
        return ABSENT
    try:
        for name in parts[:-1]:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                return ABSENT
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP):
                    return ODD
                raise
            os.close(fd)
            fd = child
        if not parts:
            return LowerEntry(os.stat(fd), xattrs=_xattrs(f"/proc/self/fd/{fd}"))
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return ABSENT
        xattrs = () if stat.S_ISLNK(st.st_mode) else _xattrs(f"/proc/self/fd/{fd}/{parts[-1]}")
        return LowerEntry(st, xattrs=xattrs)
    finally:
        os.close(fd)


def _xattrs(path: str) -> tuple[tuple[str, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
        found = [(n, os.getxattr(path, n, follow_symlinks=False)) for n in names]
    except OSError:
        return ()
    return tuple(sorted((n, v) for n, v in found if not n.startswith(OVERLAY_XATTR_PREFIX)))


def is_copy_up(change: Change, lower: LowerEntry) -> bool:
    """True for a directory overlayfs copied up only to hold changes below it: the image has a
    directory there with the same owner, mode and xattrs (so the merged tree shows no change)."""
    if change.kind is not ChangeKind.DIRECTORY or lower.st is None:
        return False
    st = lower.st
    return (
        stat.S_ISDIR(st.st_mode)
        and st.st_mode == change.mode
        and (st.st_uid, st.st_gid) == (change.uid, change.gid)
        and lower.xattrs == change.xattrs
    )


def effective_changes(layers: Sequence[Layer], changes: TreeChanges) -> tuple[Change, ...]:
    """The entries of ``changes`` the merged tree shows: without copied-up directories and
    without entries hidden below another filesystem's mountpoint. A filesystem's own top
    directory (the upper dir itself) counts when its owner, mode or xattrs differ from the
    image's."""
    kept = []
    for change in (*changes.roots, *changes.changes):
        if owning_layer(layers, change.path).mountpoint != change.mountpoint:
            continue  # e.g. a /boot/efi/x in the root's upper dir, under the ESP's mount
        if change.kind is ChangeKind.DIRECTORY and is_copy_up(change, lower_entry(layers, change.path)):
            continue
        kept.append(change)
    return tuple(kept)
