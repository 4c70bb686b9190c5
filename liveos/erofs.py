"""The bootstrap root image as erofs: ``mkfs.erofs`` of the customised tree, at the squashfs's path.

dracut-ng's dmsquash-live (Debian 13's dracut 106, Fedora 42's) mounts ``rd.live.squashimg`` by
the filesystem ``blkid`` finds in it, so an erofs image boots from the same ``/liveos/rootfs.img``
with the same kernel arguments; dracut 059 (Debian 12) mounts it ``-t squashfs`` and cannot
(:func:`dracut_boots_erofs` tells them apart by reading the image's dmsquash-live scripts).

erofs-utils 1.5 (Debian 12's) compresses with lz4 or lz4hc only. Each preset's compressor and
physical cluster size (:data:`MKFS_EROFS_OPTIONS`) were chosen by measurement on the fixture trees
(docs/performance.md): bigger clusters compress better and cost little time. mkfs.erofs 1.5 is
single-threaded and draws no progress, so the step reports none.
"""

from __future__ import annotations

import functools
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path

from liveos.atomic import atomic_path
from liveos.layout import ROOT_IMAGE_EXCLUDED
from liveos.reproducible import source_date_epoch
from liveos.rootfs import CONFIG_LIMIT, RootFs
from liveos.run import run
from liveos.settings import Preset

#: Compression options of ``mkfs.erofs`` per preset (``-C``: physical cluster bytes).
#: Measured on the azl tree (docs/performance.md): 64 KiB clusters cut 9 % off lz4hc-1 for no
#: time; level 9 saves 4 % more at 3x the time; level 12 with 1 MiB clusters saves 0.7 % more
#: at 7x level 9's time, so no preset uses it.
MKFS_EROFS_OPTIONS: dict[Preset, tuple[str, ...]] = {
    Preset.FAST: ("-zlz4hc,1", "-C65536"),
    Preset.BALANCED: ("-zlz4hc,9", "-C65536"),
    Preset.SMALL: ("-zlz4hc,9", "-C262144"),
}
#: (compressor, level) of each preset, for the build result.
MKFS_EROFS_COMPRESSION: dict[Preset, tuple[str, int | None]] = {
    Preset.FAST: ("lz4hc", 1),
    Preset.BALANCED: ("lz4hc", 9),
    Preset.SMALL: ("lz4hc", 9),
}
#: The erofs superblock's magic, little-endian at byte 1024 of the image.
EROFS_MAGIC = 0xE0F5E1E2
EROFS_SUPERBLOCK_OFFSET = 1024
#: Namespace of the filesystem UUID derived from ``SOURCE_DATE_EPOCH`` (reproducible images).
_UUID_NAMESPACE = uuid.UUID("6f1c2b0e-5a8e-4e57-9c1e-6c6976656f73")
#: Where dracut keeps dmsquash-live's root script (merged-/usr first).
_LIVE_ROOT_SCRIPTS = (
    "/usr/lib/dracut/modules.d/90dmsquash-live/dmsquash-live-root.sh",
    "/lib/dracut/modules.d/90dmsquash-live/dmsquash-live-root.sh",
)


@functools.cache
def mkfs_erofs_version() -> str:
    """The first line of ``mkfs.erofs -V`` (cached erofs images are keyed by it)."""
    result = run(["mkfs.erofs", "-V"], step="erofs", check=False)
    text = (result.stdout or b"").decode(errors="replace") + (result.stderr or b"").decode(errors="replace")
    return (text.splitlines() or ["unknown"])[0].strip()


def exclude_regex(pattern: str) -> str:
    """A relative glob of :data:`~liveos.layout.ROOT_IMAGE_EXCLUDED` (``boot/*``) as the POSIX
    extended regex ``mkfs.erofs --exclude-regex`` matches against tree-relative paths; like
    ``mksquashfs -wildcards``, ``*`` and ``?`` stop at ``/`` and an excluded directory's
    contents go with it."""
    out = ["^"]
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end
        else:
            out.append(re.sub(r"([.^$+(){}|\\\[\]*?])", r"\\\1", char))
        i += 1
    return "".join(out) + "$"


def make_erofs(
    tree: Path, out: Path, *, preset: Preset, excludes: Sequence[str] = ROOT_IMAGE_EXCLUDED
) -> Path:
    """Write ``tree`` as an erofs image at ``out`` (atomically) and return ``out``.

    As with :func:`liveos.squashfs.make_squashfs`, excluded directories stay, empty, and
    extended attributes are kept. With ``SOURCE_DATE_EPOCH`` the build time and the filesystem
    UUID derive from it.
    """
    with atomic_path(out) as tmp:
        argv: list[str | os.PathLike[str]] = ["mkfs.erofs", "--quiet", *MKFS_EROFS_OPTIONS[preset]]
        argv += [f"--exclude-regex={exclude_regex(p)}" for p in excludes]
        epoch = source_date_epoch()
        if epoch is not None:
            argv += [f"-T{epoch}", f"-U{uuid.uuid5(_UUID_NAMESPACE, str(epoch))}"]
        run([*argv, tmp, tree], step="erofs", hint="check free space in the work directory")
    return out


def is_erofs(header: bytes) -> bool:
    """Whether ``header`` (the first >= 1028 bytes of a file) starts an erofs image."""
    end = EROFS_SUPERBLOCK_OFFSET + 4
    return (
        len(header) >= end and int.from_bytes(header[EROFS_SUPERBLOCK_OFFSET:end], "little") == EROFS_MAGIC
    )


def dracut_boots_erofs(rootfs: RootFs) -> bool:
    """Whether the image's dmsquash-live mounts an erofs root image.

    dracut 059 mounts the image ``-t squashfs`` (no erofs anywhere in the script); dracut-ng's
    detects the filesystem and names erofs. Read from the script rather than guessed from the
    version, so a distribution's backport counts.
    """
    for script in _LIVE_ROOT_SCRIPTS:
        if rootfs.is_file(script):
            return "erofs" in rootfs.read_text(script, limit=CONFIG_LIMIT)
    return False
