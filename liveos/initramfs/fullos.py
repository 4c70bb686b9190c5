"""The full-os initrd: the whole customised OS (minus /boot) as one compressed newc CPIO.

The kernel unpacks it into its rootfs (tmpfs) and runs ``/init``; nothing is mounted, no
``root=`` is needed and nothing pivots. Three things make an OS tree bootable that way:
``/init`` must exist (systemd, since it refuses to run as a non-PID-1 script child), the kernel
needs ``/dev/console`` before devtmpfs is mounted, and ``/etc/fstab`` must go (its disks do not
exist). ``/boot`` stays an empty directory: kernels travel on the media, not in RAM.
"""

from __future__ import annotations

import logging
from pathlib import Path

from liveos.cpio import CpioEntry, CpioStats, write_newc
from liveos.errors import ImageError
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


def build_full_os_initrd(rootfs: RootFs, out: Path, *, compression: Compression, level: int) -> CpioStats:
    """Stream ``rootfs`` (minus /boot and /etc/fstab) into the compressed CPIO ``out``."""
    target = init_target(rootfs)
    extra = [CpioEntry.char_device(str(CONSOLE_PATH.relative_to("/")), 5, 1)]
    if target is not None:
        extra.append(CpioEntry.symlink("init", target))
        log.info("full-os initrd: /init -> %s", target)
    stats = write_newc(
        rootfs.root, out, compression=compression, level=level, exclude=FULL_OS_EXCLUDED, extra=extra
    )
    log.info(
        "full-os initrd %s: %d entries, %.0f MB in, %.0f MB out",
        out,
        stats.entries,
        stats.bytes_in / 1e6,
        stats.bytes_out / 1e6,
    )
    return stats
