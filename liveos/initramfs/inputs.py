"""Which changes to the tree a bootstrap initrd depends on -- when in doubt, all of them.

dracut copies files into the initrd (the kernel's modules, binaries and their libraries, udev
rules, configuration), and its modules decide what to copy by looking at the tree: which
binaries exist, what ``/etc/dracut.conf.d`` says, which drivers the kernel ships. A changed file
can therefore matter to the initrd without being in it. A change counts unless it is one dracut
provably ignores, i.e. it is *conditional* -- it counts only if the built initrd holds that
path (or something below it) -- and it is conditional when:

* it is below one of :data:`INERT_PATHS` (login banners, home directories, logs, caches,
  documentation, the grub and EFI directories): places no dracut module reads; or
* it only changes the content of a regular file the image already has there, outside
  :data:`READ_BY_DRACUT` (where dracut's own code and configuration, the programs it runs, their
  libraries and their configuration live): dracut decides what to copy by what *exists*, and
  reads the content of files elsewhere only to copy them.

Everything else counts: a file created or deleted anywhere but the inert paths, any change in
``/etc``, ``/usr/lib``, the binary directories, ``/boot``. A stale initrd is a bug, a slow
build is not.
"""

from __future__ import annotations

import bisect
import stat
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import PurePosixPath

from liveos.image.changes import Change, ChangeKind
from liveos.image.layers import Layer, lower_entry

#: Paths whose content no dracut module reads (unless the built initrd shows otherwise).
INERT_PATHS = tuple(
    PurePosixPath(p)
    for p in (
        "/etc/motd",
        "/etc/motd.d",
        "/etc/issue",
        "/etc/issue.d",
        "/etc/issue.net",
        "/home",
        "/srv",
        "/tmp",
        "/var/tmp",
        "/var/log",
        "/var/cache",
        "/var/spool",
        "/var/mail",
        "/usr/share/doc",
        "/usr/share/man",
        "/usr/share/info",
        "/usr/share/help",
        "/boot/grub",
        "/boot/grub2",
        "/boot/efi",
        "/boot/loader",
        "/liveos",
    )
)


#: Where dracut reads the content of files it does not copy: its modules and configuration, the
#: tools it runs (cpio, the compressor, ldconfig, depmod) and their libraries and configuration
#: (ld.so.conf, depmod.d, modprobe.d), the kernel and its modules and firmware.
READ_BY_DRACUT = tuple(
    PurePosixPath(p)
    for p in ("/etc", "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/lib", "/lib32", "/lib64",
              "/usr/bin", "/usr/sbin", "/bin", "/sbin", "/boot", "/usr/share/dracut")
)  # fmt: skip


class InitrdContents:
    """The paths an initrd holds, for asking "is this path, or anything below it, in there?"."""

    def __init__(self, names: Iterable[str]) -> None:
        self.paths = sorted({str(PurePosixPath("/", name)) for name in names if name not in ("", ".")})

    def holds(self, path: PurePosixPath) -> bool:
        """True if the initrd has ``path`` or something below it."""
        text = str(path)
        i = bisect.bisect_left(self.paths, text)
        if i < len(self.paths) and self.paths[i] == text:
            return True
        below = text.rstrip("/") + "/"
        j = bisect.bisect_left(self.paths, below)
        return j < len(self.paths) and self.paths[j].startswith(below)


def _below(path: PurePosixPath, tops: tuple[PurePosixPath, ...]) -> bool:
    return any(path == top or top in path.parents for top in tops)


def is_inert(path: PurePosixPath) -> bool:
    """True if ``path`` is below (or is) one of :data:`INERT_PATHS`."""
    return _below(path, INERT_PATHS)


def conditional_paths(changes: Sequence[Change], layers: Sequence[Layer]) -> frozenset[str]:
    """The changes that count for an initrd only if it holds their path (see the module doc)."""
    found = set()
    for change in changes:
        if is_inert(change.path):
            found.add(str(change.path))
        elif change.kind is ChangeKind.FILE and not _below(change.path, READ_BY_DRACUT):
            lower = lower_entry(layers, change.path)
            if lower.plain and lower.st is not None and stat.S_ISREG(lower.st.st_mode):
                found.add(str(change.path))
    return frozenset(found)


def initrd_inputs(
    changes: Mapping[str, str], contents: InitrdContents, conditional: Collection[str] = ()
) -> dict[str, str]:
    """Of ``changes`` (image path -> fingerprint), those a bootstrap initrd with ``contents``
    depends on: all but the ``conditional`` ones it does not hold."""
    return {
        path: fp
        for path, fp in changes.items()
        if path not in conditional or contents.holds(PurePosixPath(path))
    }
