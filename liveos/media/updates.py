"""Bootstrap media updates: files changed since the cached root image, shipped beside it.

dracut's dmsquash-live copies ``/updates`` of the live media over the new root before it
pivots (``apply-live-updates.sh``, pre-pivot hook 20: ``mkdir -p`` for each directory, ``cp -a``
for everything else). So a rebuild after a small change reuses the cached squashfs and puts the
changed files at ``/updates/<path>`` on the media, instead of compressing the whole tree again.

``cp -a`` and ``mkdir -p`` set what the ISO's Rock Ridge entries carry (content and mode; owner
root) and can neither delete nor turn a directory into a file, so an update is refused -- and
the root image rebuilt -- unless every change is:

* a regular file owned by root, not hard-linked, without xattrs, replacing nothing or a regular
  file of the image (``cp`` would write *through* a symlink the image has there);
* or a new directory ``0755`` owned by root with a changed file below it (``mkdir -p`` makes it).

Also refused: deletions, symlinks, device nodes, a path below a symlink of the image, media
that boot with SELinux (the copies would carry no labels), an image whose dracut lacks the hook,
and updates above :data:`MAX_UPDATE_FILES` files or :data:`MAX_UPDATE_BYTES`.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import PurePosixPath

from liveos.image.changes import Change, ChangeKind
from liveos.image.layers import Layer, lower_entry
from liveos.layout import UPDATES_DIR
from liveos.plan import Origin, PlannedFile
from liveos.rootfs import CONFIG_LIMIT, RootFs

#: What dmsquash-live runs at pre-pivot to apply ``/updates`` (dracut 0.50 and later).
HOOK = PurePosixPath("/usr/lib/dracut/modules.d/90dmsquash-live/apply-live-updates.sh")
#: The update must stay small: it is copied into the live root's RAM-backed overlay at boot.
MAX_UPDATE_FILES = 2000
MAX_UPDATE_BYTES = 64 * 1024 * 1024


def hook_refusal(rootfs: RootFs) -> str | None:
    """None if the image's dmsquash-live applies ``/updates`` from the media, else why not."""
    if not rootfs.is_file(HOOK):
        return f"the image's dracut has no {HOOK.name}"
    if "/run/initramfs/live/updates" not in rootfs.read_text(HOOK, limit=CONFIG_LIMIT):
        return f"the image's {HOOK.name} does not read the media's /updates"
    return None


def update_refusal(changes: Sequence[Change], layers: Sequence[Layer]) -> str | None:
    """Why ``changes`` cannot go to the media's ``/updates`` (see the module docstring); None if
    they can."""
    files = [c for c in changes if c.kind is ChangeKind.FILE]
    if len(files) > MAX_UPDATE_FILES:
        return f"{len(files)} changed files (an update holds at most {MAX_UPDATE_FILES})"
    if sum(c.size for c in files) > MAX_UPDATE_BYTES:
        return f"more than {MAX_UPDATE_BYTES >> 20} MiB changed"
    for change in changes:
        why = _entry_refusal(change, layers, files)
        if why is not None:
            return f"{change.path}: {why}"
    return None


def _entry_refusal(change: Change, layers: Sequence[Layer], files: Sequence[Change]) -> str | None:
    if change.kind not in (ChangeKind.FILE, ChangeKind.DIRECTORY):
        return f"a {change.kind} cannot be applied by copying"
    if (change.uid, change.gid) != (0, 0):
        return "not owned by root"
    if change.xattrs:
        return "carries extended attributes"
    lower = lower_entry(layers, change.path)
    if not lower.plain:
        return "lies below a symlink in the image"
    if change.kind is ChangeKind.FILE:
        if change.links_to is not None or change.nlink > 1:
            return "a hard link"
        if lower.st is not None and not stat.S_ISREG(lower.st.st_mode):
            return "replaces something that is not a regular file"
        return None
    if lower.st is not None:
        return "a directory whose owner, mode or xattrs changed"
    if stat.S_IMODE(change.mode) != 0o755:
        return f"a new directory with mode {stat.S_IMODE(change.mode):04o} (mkdir makes 0755)"
    if not any(change.path in f.path.parents for f in files):
        return "a new directory with no changed file below it"
    return None


def update_files(rootfs: RootFs, changes: Sequence[Change]) -> list[PlannedFile]:
    """The changed files as media files at ``/updates/<path>`` (directories follow from them)."""
    planned = []
    for change in changes:
        if change.kind is ChangeKind.FILE:
            planned.append(
                PlannedFile(
                    UPDATES_DIR / change.path.relative_to("/"),
                    Origin.IMAGE,
                    str(change.path),
                    change.size,
                    mode=stat.S_IMODE(change.mode),
                    host=rootfs.path(change.path),
                )
            )
    return planned
