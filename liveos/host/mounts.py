"""Mounts, overlays and bind mounts, each a context manager that unmounts in ``finally``.

Every resource releases what it acquired -- also on KeyboardInterrupt and, inside
:func:`~liveos.host.signals.signals_as_exceptions`, on SIGTERM -- so an interrupted build leaves
nothing mounted. Unmounting falls back to a lazy unmount (``umount -l``) when a straggling
process keeps a mount busy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from liveos.confined import resolve_in_root
from liveos.errors import ImageError, UsageError
from liveos.host.privilege import require_root
from liveos.run import run

log = logging.getLogger("liveos")


def _unmount(target: Path) -> None:
    proc = run(["umount", target], step=f"unmounting {target}", check=False)
    if proc.returncode != 0:
        log.warning("umount %s failed (%s); detaching lazily", target, proc.stderr.decode().strip())
        run(["umount", "--lazy", target], step=f"lazily unmounting {target}", check=False)


@contextlib.contextmanager
def mount(
    source: str | Path,
    target: Path,
    *,
    fstype: str | None = None,
    options: Sequence[str] = (),
    read_only: bool = True,
) -> Iterator[Path]:
    """Mount ``source`` on ``target`` (``ro`` unless ``read_only=False``); always unmounted after.

    Always ``nodev,nosuid``: every filesystem liveos mounts holds image content, whose device
    nodes and set-uid bits must mean nothing on the host (nor in the sandbox, which inherits them).
    """
    require_root("mounting a filesystem")
    opts = [*(["ro"] if read_only else []), "nodev", "nosuid", *options]
    argv: list[str | Path] = ["mount"]
    if fstype:
        argv += ["-t", fstype]
    if opts:
        argv += ["-o", ",".join(opts)]
    mounted = False
    stacked = _mount_count(target)
    try:
        run([*argv, source, target], step=f"mounting {source} on {target}")
        mounted = True
        yield target
    finally:
        # Interrupted while ``mount`` ran: it may have mounted anyway; undo only a new mount.
        if mounted or _mount_count(target) > stacked:
            _unmount(target)


def _mount_count(target: Path) -> int:
    """How many mounts sit on ``target`` in this thread's namespace (spaces escaped as ``\\040``)."""
    needle = str(target).replace("\\", "\\134").replace(" ", "\\040").replace("\n", "\\012")
    with open("/proc/thread-self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == needle)


def _check_overlay_path(path: Path) -> str:
    text = str(path)
    if any(c in text for c in ",:\\\n"):
        raise UsageError(
            f"overlayfs cannot use the path {text!r} (it contains ',', ':' or '\\\\')",
            path=path,
            hint="choose a work dir whose path has no commas or colons",
        )
    return text


@contextlib.contextmanager
def overlay(lower: Path | Sequence[Path], upper: Path, work: Path, target: Path) -> Iterator[Path]:
    """Mount a writable overlay of ``lower`` (topmost first) on ``target``; writes go to ``upper``.

    The merged top directory shows the upper dir's owner and mode, so the upper dir takes the
    topmost lower's (not this process's umask). ``redirect_dir`` and ``metacopy`` stay off
    whatever the kernel's defaults: every upper entry is then a whole entry, which is what
    :mod:`liveos.image.changes` reads as the caller's changes.
    """
    lowers = [lower] if isinstance(lower, Path) else list(lower)
    upper.mkdir(parents=True, exist_ok=True)
    top = os.stat(lowers[0])
    os.chown(upper, top.st_uid, top.st_gid)
    os.chmod(upper, stat.S_IMODE(top.st_mode))
    work.mkdir(parents=True, exist_ok=True)
    options = [
        "lowerdir=" + ":".join(_check_overlay_path(p) for p in lowers),
        f"upperdir={_check_overlay_path(upper)}",
        f"workdir={_check_overlay_path(work)}",
        "redirect_dir=off",
        "metacopy=off",
    ]
    with mount("overlay", target, fstype="overlay", options=options, read_only=False):
        yield target


def mount_target(root: Path, image_path: str) -> Path:
    """Directory in ``root`` for mounting at ``image_path``, resolved confined and created if missing.

    A hostile image can make ``/dev`` a symlink to ``/``; the resolved target must still be a
    directory strictly below the root.
    """
    target = resolve_in_root(root, image_path)
    if target == root:
        raise ImageError(
            f"{image_path} resolves to the image root (a symlink to '/'?); refusing to mount over it",
            path=root / image_path.lstrip("/"),
        )
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise ImageError(f"{image_path} exists in the image but is not a directory", path=target)
    target.mkdir(parents=True, exist_ok=True)
    return target
