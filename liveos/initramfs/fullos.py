"""The full-os initrd: the whole customised OS (minus /boot) as one compressed newc CPIO.

The kernel unpacks it into its rootfs (tmpfs) and runs ``/init``; nothing is mounted, no
``root=`` is needed and nothing pivots. Three things make an OS tree bootable that way:
``/init`` must exist (systemd, since it refuses to run as a non-PID-1 script child), the kernel
needs ``/dev/console`` before devtmpfs is mounted, and ``/etc/fstab`` must go (its disks do not
exist). ``/boot`` stays an empty directory: kernels travel on the media, not in RAM.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from liveos.cpio import CpioEntry, CpioStats, write_newc, write_newc_paths
from liveos.errors import ImageError
from liveos.image.changes import Change, ChangeKind
from liveos.image.layers import Layer, lower_entry
from liveos.layout import CONSOLE_PATH, FULL_OS_EXCLUDED, INIT_CANDIDATES
from liveos.rootfs import RootFs
from liveos.settings import Compression

log = logging.getLogger("liveos")


def init_target(rootfs: RootFs) -> str | None:
    """The path ``/init`` must point at, or None when the image brings its own ``/init``."""
    if rootfs.exists("/init") or rootfs.is_symlink("/init"):
        return None
    for candidate in INIT_CANDIDATES:
        if rootfs.path(candidate).is_file():
            return candidate
    raise ImageError(
        "the image has no /init and no systemd (looked for " + ", ".join(INIT_CANDIDATES) + ")",
        path=rootfs.root,
        hint="install systemd in the image, or use bootstrap mode",
    )


def build_full_os_initrd(
    rootfs: RootFs,
    out: Path,
    *,
    compression: Compression,
    level: int,
    exclude: Sequence[str] = FULL_OS_EXCLUDED,
) -> CpioStats:
    """Stream ``rootfs`` (minus /boot and /etc/fstab: ``exclude``) into the compressed CPIO ``out``."""
    target = init_target(rootfs)
    extra = [CpioEntry.char_device(str(CONSOLE_PATH.relative_to("/")), 5, 1)]
    if target is not None:
        extra.append(CpioEntry.symlink("init", target))
        log.info("full-os initrd: /init -> %s", target)
    stats = write_newc(rootfs.root, out, compression=compression, level=level, exclude=exclude, extra=extra)
    log.info(
        "full-os initrd %s: %d entries, %.0f MB in, %.0f MB out",
        out,
        stats.entries,
        stats.bytes_in / 1e6,
        stats.bytes_out / 1e6,
    )
    return stats


#: A full-os update is a second CPIO segment; past these sizes the archive is written anew.
MAX_UPDATE_ENTRIES = 20_000
MAX_UPDATE_BYTES = 256 * 1024 * 1024
#: Entries a full-os build makes itself: a change there needs a whole new archive.
_SYNTHETIC = frozenset({PurePosixPath("/init"), CONSOLE_PATH})


def update_refusal(changes: Sequence[Change], layers: Sequence[Layer]) -> str | None:
    """Why ``changes`` cannot be appended to an earlier full-os CPIO as an update segment (the
    kernel unpacks segments in order: a later file, directory or symlink replaces one of the same
    type, but nothing can be deleted and a type cannot change); None if they can."""
    if len(changes) > MAX_UPDATE_ENTRIES:
        return f"{len(changes)} changed paths (an update holds at most {MAX_UPDATE_ENTRIES})"
    if sum(c.size for c in changes if c.kind is ChangeKind.FILE) > MAX_UPDATE_BYTES:
        return f"more than {MAX_UPDATE_BYTES >> 20} MiB changed"
    for change in changes:
        if change.path in _SYNTHETIC:
            return f"{change.path} is made by the full-os build itself"
        if change.kind not in (ChangeKind.FILE, ChangeKind.DIRECTORY, ChangeKind.SYMLINK):
            return f"{change.path} is a {change.kind}: an update cannot express it"
        if change.links_to is not None or (change.kind is ChangeKind.FILE and change.nlink > 1):
            return f"{change.path} is a hard link"
        lower = lower_entry(layers, change.path)
        if not lower.plain:
            return f"{change.path} lies below a symlink in the image"
        if lower.st is not None and stat.S_IFMT(lower.st.st_mode) != stat.S_IFMT(change.mode):
            return f"{change.path} changed its type"
    return None


def append_update(rootfs: RootFs, initrd: Path, paths: Sequence[PurePosixPath], *, compression: Compression,
                  level: int) -> CpioStats:  # fmt: skip
    """Append ``paths`` of the tree, as they are now, to the full-os CPIO ``initrd`` as one more
    compressed segment (4-byte aligned, like every segment the kernel reads)."""
    with open(initrd, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.write(b"\0" * (-size % 4))
        stats = write_newc_paths(
            rootfs.root, f, [str(p.relative_to("/")) for p in paths], compression=compression, level=level
        )
    log.info(
        "full-os update: %d entries, %.1f MB appended to %s", stats.entries, stats.bytes_out / 1e6, initrd
    )
    return stats
