"""The bootstrap root filesystem image: ``mksquashfs`` of the customised tree.

Compression level dominates the whole build (perf-baselines §3: zstd-15, the mksquashfs default,
takes 91 s on a 2.2 GB tree where zstd-3 takes 5.5 s for +14 % size), so the default preset is
fast and ``SMALL`` is opt-in.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence
from pathlib import Path

from liveos.atomic import atomic_path
from liveos.run import run


class SquashfsPreset(enum.StrEnum):
    """Speed/size trade-off of the squashfs image."""

    FAST = "fast"  #: zstd level 3: seconds per GB, ~15 % larger than SMALL-ish presets
    BALANCED = "balanced"  #: zstd level 15 (mksquashfs's own default): ~17x slower than FAST
    SMALL = "small"  #: xz with the x86 BCJ filter and 1 MiB blocks: smallest, slowest

    def mksquashfs_args(self) -> list[str]:
        """Compression options for ``mksquashfs``."""
        match self:
            case SquashfsPreset.FAST:
                return ["-comp", "zstd", "-Xcompression-level", "3"]
            case SquashfsPreset.BALANCED:
                return ["-comp", "zstd", "-Xcompression-level", "15"]
            case SquashfsPreset.SMALL:
                return ["-comp", "xz", "-Xbcj", "x86", "-b", "1M"]


#: Paths whose *contents* never belong in the live root image (they are runtime or media files).
DEFAULT_EXCLUDES: Sequence[str] = ("boot/*", "tmp/*", "var/tmp/*", "run/*", "proc/*", "sys/*", "dev/*")


def make_squashfs(
    tree: Path,
    out: Path,
    *,
    preset: SquashfsPreset = SquashfsPreset.FAST,
    excludes: Sequence[str] = DEFAULT_EXCLUDES,
    processors: int | None = None,
) -> Path:
    """Write ``tree`` as a squashfs image at ``out`` (atomically) and return ``out``.

    The directories of excluded contents (``/proc``, ``/boot``, ...) stay, empty: dmsquash-live
    recognises a plain root tree by its ``/proc`` directory. Extended attributes (SELinux labels)
    are kept. ``SOURCE_DATE_EPOCH`` in the environment makes the image reproducible.
    """
    with atomic_path(out) as tmp:
        argv: list[str | os.PathLike[str]] = [
            "mksquashfs",
            tree,
            tmp,
            "-noappend",
            "-xattrs",
            "-no-progress",
        ]
        argv += preset.mksquashfs_args()
        argv += ["-processors", str(processors or os.cpu_count() or 1)]
        if excludes:
            argv += ["-wildcards", "-e", *excludes]
        run(argv, step="squashfs", hint="check free space in the work directory")
    return out
