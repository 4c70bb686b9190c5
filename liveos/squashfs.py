"""The bootstrap root filesystem image: ``mksquashfs`` of the customised tree.

Compression level dominates the whole build (perf-baselines §3: zstd-15, the mksquashfs default,
takes 91 s on a 2.2 GB tree where zstd-3 takes 5.5 s for +14 % size), so the default preset is
fast and ``SMALL`` is opt-in (see :class:`~liveos.settings.SquashfsPreset`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from liveos.atomic import atomic_path
from liveos.layout import ROOT_IMAGE_EXCLUDED
from liveos.run import run
from liveos.settings import SquashfsPreset

#: Compression options of ``mksquashfs`` per preset.
MKSQUASHFS_OPTIONS = {
    SquashfsPreset.FAST: ("-comp", "zstd", "-Xcompression-level", "3"),
    SquashfsPreset.BALANCED: ("-comp", "zstd", "-Xcompression-level", "15"),
    SquashfsPreset.SMALL: ("-comp", "xz", "-Xbcj", "x86", "-b", "1M"),
}


def make_squashfs(
    tree: Path,
    out: Path,
    *,
    preset: SquashfsPreset,
    excludes: Sequence[str] = ROOT_IMAGE_EXCLUDED,
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
            *MKSQUASHFS_OPTIONS[preset],
            "-processors",
            str(processors or os.cpu_count() or 1),
        ]
        if excludes:
            argv += ["-wildcards", "-e", *excludes]
        run(argv, step="squashfs", hint="check free space in the work directory")
    return out
