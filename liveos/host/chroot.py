"""The API filesystems a tool from the image needs when it runs chrooted into the image tree."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from liveos.host.mounts import mount, mount_target
from liveos.host.privilege import require_root

#: (image path, fstype, source, options) mounted into a chroot for running tools like dracut.
CHROOT_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("/proc", "proc", "proc", ("nosuid", "nodev", "noexec")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "nodev", "noexec")),
    ("/dev", "devtmpfs", "devtmpfs", ("nosuid", "mode=0755")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
    ("/run", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=0755")),
    ("/tmp", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=1777")),
)


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """Mount proc, sysfs, devtmpfs, devpts and tmpfs /run, /tmp inside ``root``; undone in reverse."""
    require_root("preparing a chroot")
    with contextlib.ExitStack() as stack:
        for image_path, fstype, source, options in CHROOT_MOUNTS:
            target = mount_target(root, image_path)
            stack.enter_context(mount(source, target, fstype=fstype, options=options, read_only=False))
        yield root
