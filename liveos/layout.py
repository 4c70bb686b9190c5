"""Where things sit on liveos media: one place for every path a writer and a reader agree on.

The ISO writer, the PXE bundle, the re-opening of a liveos ISO and ``verify`` all read these, so
a path changes here or nowhere.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from pathlib import PurePosixPath

#: The bootstrap root image (dracut: ``rd.live.dir=liveos rd.live.squashimg=rootfs.img``).
SQUASHFS_PATH = PurePosixPath("/liveos/rootfs.img")
#: The single initrd of full-os media.
FULL_OS_INITRD = PurePosixPath("/boot/initrd.img")
#: Files changed since the cached root image was built, copied over the live root at boot by
#: dracut's dmsquash-live (``apply-live-updates.sh`` reads ``/run/initramfs/live/updates``).
UPDATES_DIR = PurePosixPath("/updates")
#: El Torito EFI image on the media.
EFIBOOT_PATH = PurePosixPath("/boot/efiboot.img")
#: Removable-media EFI directory (firmware looks here; so do Rufus and friends).
EFI_BOOT_DIR = PurePosixPath("/EFI/BOOT")
#: What liveos applied to the media (see :mod:`liveos.state`).
STATE_PATH = PurePosixPath("/liveos/state.json")
#: Debian's signed grub searches for this file to find the CD when its own prefix is missing.
DISK_INFO_PATH = PurePosixPath("/.disk/info")
#: Where PID 1 may live, in order of preference (merged-/usr first): the full-os ``/init`` target.
INIT_CANDIDATES = ("/usr/lib/systemd/systemd", "/lib/systemd/systemd", "/sbin/init")
#: The console node the kernel needs before devtmpfs exists (full-os initrds carry it).
CONSOLE_PATH = PurePosixPath("/dev/console")

#: Tree paths (relative fnmatch globs) that never go into a full-os initrd.
FULL_OS_EXCLUDED = ("boot/*", "etc/fstab")
#: Tree paths whose *contents* never go into the bootstrap root image: runtime or media files,
#: and fstab (its disks do not exist on live media; the boot would wait for them).
ROOT_IMAGE_EXCLUDED = ("boot/*", "tmp/*", "var/tmp/*", "run/*", "proc/*", "sys/*", "dev/*", "etc/fstab")


def is_excluded(path: PurePosixPath, patterns: Sequence[str]) -> bool:
    """True if the image path ``path`` or one of its parents matches one of the relative globs
    ``patterns`` (as ``mksquashfs -wildcards -e`` and the CPIO writer leave them out)."""
    rel = PurePosixPath(*path.parts[1:]) if path.is_absolute() else path
    candidates = [rel, *list(rel.parents)[:-1]]
    return any(fnmatch.fnmatchcase(str(c), pattern) for c in candidates for pattern in patterns)
