"""Privileged operations, all of them: loop devices, mounts, overlays, bind mounts, chroot mounts.

Every resource is a context manager that releases what it acquired in ``finally`` -- also on
KeyboardInterrupt and, inside :func:`signals_as_exceptions`, on SIGTERM -- so an interrupted build
leaves no loop device attached and nothing mounted. Unmounting falls back to a lazy unmount
(``umount -l``) when a straggling process keeps a mount busy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from liveos.errors import CommandError, HostError, ImageError, UsageError
from liveos.rootfs import resolve_in_root
from liveos.run import output, run

log = logging.getLogger("liveos")


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM (exit code 143)."""


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Turn the first SIGTERM into a :class:`Terminated` exception so ``finally`` blocks run.

    Python's default SIGTERM action kills the process without unwinding, leaving loop devices
    and mounts behind. Later SIGTERMs during cleanup are ignored so cleanup is not cut short.
    Only the main thread can install handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            log.warning("SIGTERM again during cleanup: ignored until cleanup finishes")
            return
        fired = True
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def require_root(what: str) -> None:
    """Raise :class:`HostError` unless running as root (loop devices and mounts need it)."""
    if os.geteuid() != 0:
        raise HostError(f"{what} needs root (loop devices and mounts)", hint="run liveos as root (sudo)")


def _loops_of(file: Path) -> set[str]:
    text = output(["losetup", "--noheadings", "--output", "NAME", "--associated", file], check=False)
    return {line.strip() for line in text.splitlines() if line.strip()}


@contextlib.contextmanager
def loop_device(
    file: Path, *, offset: int = 0, size: int | None = None, read_only: bool = True
) -> Iterator[Path]:
    """Attach ``size`` bytes of ``file`` at ``offset`` to a free loop device; always detached after."""
    require_root("attaching a loop device")
    if not Path("/dev/loop-control").exists():
        raise HostError("no loop device support (/dev/loop-control is missing)", hint="modprobe loop")
    argv: list[str | Path] = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    if read_only:
        argv.append("--read-only")
    before = _loops_of(file)
    device: str | None = None
    try:
        try:
            device = output(
                [*argv, file], step=f"attaching {file} at offset {offset} to a loop device"
            ).strip()
        except CommandError as exc:
            raise HostError(
                f"could not attach {file} to a loop device: {exc.stderr.strip()}",
                path=file,
                hint="free loop devices (losetup -D) or load the loop module with more devices",
            ) from exc
        yield Path(device)
    finally:
        # If interrupted while losetup ran, the device may be attached without us knowing its name.
        leftovers = {device} if device else _loops_of(file) - before
        for dev in leftovers:
            run(["losetup", "--detach", dev], step=f"detaching {dev}", check=False)


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
    """Mount ``source`` on ``target`` (``ro`` unless ``read_only=False``); always unmounted after."""
    require_root("mounting a filesystem")
    opts = [*(["ro"] if read_only else []), *options]
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
    """How many mounts sit on ``target`` (``/proc/self/mountinfo`` escapes spaces as ``\\040``)."""
    needle = str(target).replace("\\", "\\134").replace(" ", "\\040").replace("\n", "\\012")
    with open("/proc/self/mountinfo") as f:
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
    """Mount a writable overlay of ``lower`` (topmost first) on ``target``; writes go to ``upper``."""
    lowers = [lower] if isinstance(lower, Path) else list(lower)
    upper.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    options = [
        "lowerdir=" + ":".join(_check_overlay_path(p) for p in lowers),
        f"upperdir={_check_overlay_path(upper)}",
        f"workdir={_check_overlay_path(work)}",
    ]
    with mount("overlay", target, fstype="overlay", options=options, read_only=False):
        yield target


@contextlib.contextmanager
def bind(source: Path, target: Path, read_only: bool = True) -> Iterator[Path]:
    """Bind-mount ``source`` on ``target`` (then remount read-only if asked); always unmounted after."""
    with mount(source, target, options=["bind"], read_only=False):
        if read_only:
            run(["mount", "-o", "remount,bind,ro", target], step=f"making {target} read-only")
        yield target


#: (image path, fstype, source, options) mounted into a chroot for running tools like dracut.
CHROOT_MOUNTS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("/proc", "proc", "proc", ("nosuid", "nodev", "noexec")),
    ("/sys", "sysfs", "sysfs", ("nosuid", "nodev", "noexec")),
    ("/dev", "devtmpfs", "devtmpfs", ("nosuid", "mode=0755")),
    ("/dev/pts", "devpts", "devpts", ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620")),
    ("/run", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=0755")),
    ("/tmp", "tmpfs", "tmpfs", ("nosuid", "nodev", "mode=1777")),
)


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


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[Path]:
    """Mount proc, sysfs, devtmpfs, devpts and tmpfs /run, /tmp inside ``root``; undone in reverse."""
    require_root("preparing a chroot")
    with contextlib.ExitStack() as stack:
        for image_path, fstype, source, options in CHROOT_MOUNTS:
            target = mount_target(root, image_path)
            stack.enter_context(mount(source, target, fstype=fstype, options=options, read_only=False))
        yield root
