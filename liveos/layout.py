"""Where things sit on liveos media: one place for every path a writer and a reader agree on.

The ISO writer, the PXE bundle, the re-opening of a liveos ISO and ``verify`` all read these, so
a path changes here or nowhere.
"""

from __future__ import annotations

from pathlib import PurePosixPath

#: The bootstrap root image (dracut: ``rd.live.dir=liveos rd.live.squashimg=rootfs.img``).
SQUASHFS_PATH = PurePosixPath("/liveos/rootfs.img")
#: The single initrd of full-os media.
FULL_OS_INITRD = PurePosixPath("/boot/initrd.img")
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
