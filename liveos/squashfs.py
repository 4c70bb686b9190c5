"""The bootstrap root filesystem image: ``mksquashfs`` of the customised tree.

Compression level dominates the whole build (perf-baselines §3: zstd-15, the mksquashfs default,
takes 91 s on a 2.2 GB tree where zstd-3 takes 5.5 s for +14 % size), so the default preset is
fast and ``small`` is opt-in (see :class:`~liveos.settings.Preset`).

Progress: mksquashfs's own progress bar (``[===/   ] 500/600  83%``, redrawn with ``\r`` every
0.25 s; squashfs-tools 4.5 has no ``-percentage``) is read from a pseudo-terminal while it runs
and reported to the current step (:mod:`liveos.progress`) as blocks done of blocks total.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from liveos.atomic import atomic_path
from liveos.layout import ROOT_IMAGE_EXCLUDED
from liveos.progress import StepProgress, Unit, current
from liveos.run import run
from liveos.settings import Preset

#: Compression options of ``mksquashfs`` per preset.
MKSQUASHFS_OPTIONS = {
    Preset.FAST: ("-comp", "zstd", "-Xcompression-level", "3"),
    Preset.BALANCED: ("-comp", "zstd", "-Xcompression-level", "15"),
    Preset.SMALL: ("-comp", "xz", "-Xbcj", "x86", "-b", "1M"),
}


#: (compressor, level) of each preset, for the build result (xz's level is its default preset).
MKSQUASHFS_COMPRESSION: dict[Preset, tuple[str, int | None]] = {
    Preset.FAST: ("zstd", 3),
    Preset.BALANCED: ("zstd", 15),
    Preset.SMALL: ("xz", None),
}

#: One redraw of mksquashfs's progress bar: ``] done/total  percent%``.
_PROGRESS_BAR = re.compile(r"\]\s+(\d+)/(\d+)\s+\d+%")


@functools.cache
def mksquashfs_version() -> str:
    """The first line of ``mksquashfs -version`` (cached squashfs images are keyed by it)."""
    result = run(["mksquashfs", "-version"], step="squashfs")
    return (result.stdout.decode(errors="replace").splitlines() or ["unknown"])[0].strip()


def make_squashfs(
    tree: Path,
    out: Path,
    *,
    preset: Preset,
    excludes: Sequence[str] = ROOT_IMAGE_EXCLUDED,
    processors: int | None = None,
) -> Path:
    """Write ``tree`` as a squashfs image at ``out`` (atomically) and return ``out``.

    The directories of excluded contents (``/proc``, ``/boot``, ...) stay, empty: dmsquash-live
    recognises a plain root tree by its ``/proc`` directory (dracut 059; 106 looks for ``/usr``).
    Extended attributes (SELinux labels) are kept. ``SOURCE_DATE_EPOCH`` in the environment makes
    the image reproducible.
    """
    with atomic_path(out) as tmp:
        argv: list[str | os.PathLike[str]] = [
            "mksquashfs",
            tree,
            tmp,
            "-noappend",
            "-xattrs",
            *MKSQUASHFS_OPTIONS[preset],
            "-processors",
            str(processors or os.cpu_count() or 1),
        ]
        if excludes:
            argv += ["-wildcards", "-e", *excludes]
        run(
            argv,
            step="squashfs",
            hint="check free space in the work directory",
            on_line=progress_reader(current()),
            terminal=True,  # to a pipe, mksquashfs 4.5 draws its bar only when done % 100 == 0
        )
    return out


def progress_reader(step: StepProgress) -> Callable[[str], None]:
    """A ``run(on_line=...)`` callback: mksquashfs's progress bar lines -> ``step`` (blocks)."""

    def on_line(line: str) -> None:
        match = _PROGRESS_BAR.search(line)
        if match is not None:
            step.advance(int(match[1]), int(match[2]), Unit.ITEMS)

    return on_line
