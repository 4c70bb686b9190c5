"""SourceImage: what every opened input is -- a read-only image seen as a writable OS tree.

Two kinds exist, both opened by :func:`liveos.image.open_image` (the format decides, from the
content): a disk image (:class:`~liveos.image.disk.DiskImage`) and an ISO liveos wrote before
(:class:`~liveos.image.live_iso.LiveIsoImage`). Both give a merged tree at :attr:`root` whose
writes land in an overlay, so the input never changes.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from functools import cached_property
from pathlib import Path, PurePosixPath

from liveos import views
from liveos.atomic import mounts_below, scratch_dir
from liveos.errors import UsageError
from liveos.image.changes import Change
from liveos.image.formats import DiskFormat
from liveos.image.layers import Layer, effective_changes, scan
from liveos.image.summary import ImageSummary, summarize
from liveos.rootfs import RootFs
from liveos.settings import Arch
from liveos.state import MediaState

log = logging.getLogger("liveos")

#: Default scratch space: /var/tmp survives reboots less often than it is tmpfs, unlike /tmp.
DEFAULT_WORKDIR = Path("/var/tmp")


class SourceImage:
    """An opened input, valid inside the ``with`` block that opened it."""

    def __init__(self, *, path: Path, format: DiskFormat, root: Path, scratch: Path) -> None:
        self.path = path
        self.format = format
        self.root = root
        self.scratch = scratch

    def __repr__(self) -> str:
        return views.safe_text(lambda: self.summary().line(), f"<{type(self).__name__} {self.path}>")

    @cached_property
    def rootfs(self) -> RootFs:
        """The merged, writable OS tree with confined path access."""
        return RootFs(self.root)

    @property
    def state(self) -> MediaState | None:
        """What a previous liveos build applied (a re-opened liveos ISO), else None."""
        return None

    @property
    def mountpoints(self) -> tuple[PurePosixPath, ...]:
        """Where the image's own filesystems sit in the tree (``/``, ``/boot``, ``/boot/efi``)."""
        return (PurePosixPath("/"),)

    @property
    def layers(self) -> tuple[Layer, ...]:
        """The overlay of each filesystem: where it sits, its read-only trees and its upper dir.
        Empty for a plain tree, whose changes cannot be told (its products are never reused)."""
        return ()

    def changes(self) -> tuple[Change, ...]:
        """What the caller changed in the tree since the image was opened, as the merged tree
        shows it (copied-up directories left out): read from the upper dirs, never the image."""
        return effective_changes(self.layers, scan(self.layers)) if self.layers else ()

    @property
    def boot_separate(self) -> bool:
        """True when ``/boot`` is a filesystem of its own (grub paths are then relative to it)."""
        return PurePosixPath("/boot") in self.mountpoints

    @property
    def arch(self) -> Arch:
        """UEFI architecture of the image, from its own binaries (never the host's)."""
        raise NotImplementedError

    # -- rich views (notebooks, IPython) ----------------------------------------------------
    def summary(self) -> ImageSummary:
        """What the image is, read cheaply (see :mod:`liveos.image.summary`); never raises for
        an unreadable fact, which is listed in ``problems`` instead."""
        return summarize(
            self.rootfs, kind=type(self).__name__, path=self.path, format=self.format, arch=lambda: self.arch
        )

    def _repr_html_(self) -> str:
        return views.safe_html(lambda: self.summary().html(), type(self).__name__)

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, lambda: self.summary().describe(), short=f"<{type(self).__name__}>")


def _remove_scratch(scratch: Path) -> None:
    """Delete the scratch dir -- but never through a mount that failed to go away."""
    left = mounts_below(scratch)
    if left:
        log.error("not removing %s: still mounted there: %s", scratch, ", ".join(left))
        return
    shutil.rmtree(scratch, ignore_errors=False)


def image_scratch(workdir: Path | None) -> contextlib.AbstractContextManager[Path]:
    """The opened image's own scratch dir in ``workdir`` (raw view, mount points, overlay layers)."""
    base = DEFAULT_WORKDIR if workdir is None else workdir
    if not base.is_dir():
        raise UsageError(f"work dir {base} does not exist or is not a directory", path=base)
    return scratch_dir(base.resolve(), "liveos-image-", remove=_remove_scratch)
