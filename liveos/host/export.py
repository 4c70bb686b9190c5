"""A disk image in one of qemu's formats, seen as a raw file that is read on demand (FUSE).

``with fuse_export(image, "qcow2", workdir) as export:`` runs ``qemu-storage-daemon`` with the
image opened read-only and exported through FUSE onto an empty regular file in ``workdir``:
``export.path`` then reads as the raw disk, ``export.size`` bytes, and every read is served from
the image when it is made -- opening costs what is read, not what the disk holds. Partition
parsing, ``blkid -p -O``, ``mcopy -i file@@offset`` and loop devices at an offset all work on it
as on a plain file::

    qemu-storage-daemon
        --blockdev driver=file,node-name=file,filename=IMAGE,read-only=on
        --blockdev driver=qcow2|vpc|vhdx,node-name=disk,file=file,read-only=on
        --export type=fuse,id=raw,node-name=disk,mountpoint=WORKDIR/export-N/disk.raw,writable=off,
                 allow-other=off
        --pidfile WORKDIR/export-N/daemon.pid

Options only qemu's legacy option parser knows (``force_size_calc`` of the ``vpc`` driver: qemu
7.2's ``--blockdev`` schema rejects it) go through ``qemu-nbd --image-opts`` on a Unix socket in
``workdir``, and the daemon re-exports that NBD disk (``--blockdev driver=nbd``).

*Ready* is what the daemon documents: it writes its pid file after the exports exist (qemu-nbd
after its socket listens); liveos polls for it (no fixed sleep) and then checks that the FUSE
mount is in this thread's mountinfo. On exit, also on exceptions, Ctrl-C and SIGTERM (inside
:func:`~liveos.host.signals.signals_as_exceptions`): the FUSE file is unmounted first (its loop
devices are gone by then), then the daemons are stopped and reaped, then ``workdir/export-N`` is
removed. The daemons are started with :func:`~liveos.run.spawn` (PR_SET_PDEATHSIG): a SIGKILLed
liveos takes them with it. The FUSE mount is made by the daemon, a child of the thread that is
in liveos' private mount namespace (:mod:`liveos.host.namespace`), so it lands there and
disappears with it; the host's mount table never sees it.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from liveos.atomic import mounts_below
from liveos.errors import HostError, ImageError, UsageError
from liveos.host.namespace import private_mounts
from liveos.run import run, spawn

log = logging.getLogger("liveos")

FUSE_DEVICE = Path("/dev/fuse")
#: Startup takes milliseconds; this only bounds a daemon that hangs (a stuck NFS image, a bug).
READY_TIMEOUT = 60.0
#: How long an unmount retries while the kernel still releases a loop device on the file.
UNMOUNT_PATIENCE = 5.0
#: SIGTERM -> exit is immediate for both daemons; SIGKILL after this.
STOP_GRACE = 5.0
#: sockaddr_un.sun_path holds 108 bytes with the terminating NUL.
SOCKET_PATH_MAX = 107

_ids = itertools.count()
Daemon = subprocess.Popen[bytes]


def _opt(value: str | os.PathLike[str]) -> str:
    """A value for qemu's ``key=value,...`` syntax: commas doubled (paths may contain them)."""
    return os.fspath(value).replace(",", ",,")


def _tail(log_file: Path, lines: int = 4) -> str:
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


class FuseExport:
    """A running export: the raw file, its size, and the daemons serving it."""

    def __init__(self, path: Path, size: int, daemons: Sequence[tuple[Daemon, Path]]) -> None:
        self.path = path  #: the FUSE-mounted file that reads as the raw disk
        self.size = size  #: bytes of the raw disk
        self._daemons = tuple(daemons)

    @property
    def pids(self) -> tuple[int, ...]:
        """Process ids of the FUSE daemons serving the export."""
        return tuple(proc.pid for proc, _ in self._daemons)

    def trouble(self) -> str | None:
        """What went wrong with the daemons since startup (one exited, or logged something); None if
        nothing did. An I/O error reading :attr:`path` with trouble here is the image's fault."""
        found = []
        for proc, log_file in self._daemons:
            name = Path(str(proc.args[0])).name if isinstance(proc.args, list) else "daemon"
            tail = _tail(log_file)
            if proc.poll() is not None:
                found.append(f"{name} exited with status {proc.returncode}" + (f": {tail}" if tail else ""))
            elif tail:
                found.append(f"{name}: {tail}")
        return "; ".join(found) or None


def _wait_ready(
    proc: Daemon,
    pid_file: Path,
    log_file: Path,
    ready: Callable[[], bool],
    image: Path,
    timeout: float,
) -> None:
    """Poll (2 ms, doubling to 50 ms) until the daemon wrote ``pid_file`` and ``ready()``; a daemon
    that exits instead is an :class:`ImageError` (or a :class:`HostError` if FUSE failed)."""
    name = Path(str(proc.args[0])).name if isinstance(proc.args, list) else "daemon"
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if proc.poll() is not None:
            tail = _tail(log_file) or f"exit status {proc.returncode}, no message"
            if any(line.startswith(f"{name}: --export") for line in _tail(log_file, 20).split(" / ")):
                raise HostError(
                    f"{name} could not export {image} through FUSE: {tail}",
                    path=image,
                    hint="liveos reads qcow2/vhd/vhdx through FUSE: it needs /dev/fuse and the fuse "
                    "module (modprobe fuse), as root",
                )
            raise ImageError(
                f"{image} could not be opened by {name}: {tail}",
                path=image,
                hint="the image may be corrupt, or in use by a running VM; check it with: "
                f"qemu-img check {image}",
            )
        if pid_file.exists() and ready():
            return
        if time.monotonic() > deadline:
            raise HostError(
                f"{name} did not get ready within {timeout:.0f} s for {image}"
                + (f": {_tail(log_file)}" if _tail(log_file) else " (its log is empty)"),
                path=image,
                hint="the machine may be overloaded, or the image's file system hangs",
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _unmount(mountpoint: Path) -> None:
    """Unmount the FUSE file; while busy (a loop device on it still being released) retry, then lazily."""
    deadline = time.monotonic() + UNMOUNT_PATIENCE
    delay = 0.01
    while mounts_below(mountpoint):
        proc = run(["umount", mountpoint], step=f"unmounting {mountpoint}", check=False)
        if proc.returncode == 0 or not mounts_below(mountpoint):
            continue
        if time.monotonic() > deadline:
            why = proc.stderr.decode(errors="replace").strip()
            log.warning("umount %s failed (%s); detaching lazily", mountpoint, why)
            run(["umount", "--lazy", mountpoint], step=f"lazily unmounting {mountpoint}", check=False)
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _fuse_mounted(mountpoint: Path) -> Callable[[], bool]:
    def check() -> bool:
        escaped = str(mountpoint)
        for char, code in (("\\", "\\134"), (" ", "\\040"), ("\t", "\\011"), ("\n", "\\012")):
            escaped = escaped.replace(char, code)
        with open("/proc/thread-self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == escaped and fields[fields.index("-") + 1].startswith("fuse"):
                    return True
        return False

    return check


def _remove(directory: Path) -> None:
    """Remove the export's files -- never through a mount that did not go away."""
    left = mounts_below(directory)
    if left:
        log.error("not removing %s: still mounted there: %s", directory, ", ".join(left))
        return
    shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def fuse_export(
    image: Path,
    driver: str,
    workdir: Path,
    *,
    legacy_options: Sequence[str] = (),
    timeout: float = READY_TIMEOUT,
) -> Iterator[FuseExport]:
    """Export ``image`` (qemu block ``driver``: qcow2, vpc, vhdx) read-only as a raw file in ``workdir``.

    ``legacy_options`` (``key=value`` strings for the format driver) are passed through
    ``qemu-nbd --image-opts``. Raises :class:`ImageError` if a daemon refuses the image,
    :class:`HostError` if FUSE is missing or the export does not come up within ``timeout``.
    Needs root; moves the calling thread into liveos' private mount namespace if not yet there.
    """
    private_mounts()
    if not FUSE_DEVICE.exists():
        raise HostError(
            "no FUSE support (/dev/fuse is missing): liveos reads qcow2, vhd and vhdx images through it",
            hint="modprobe fuse (in a container: pass /dev/fuse through)",
        )
    image = image.resolve()
    here = workdir.resolve() / f"export-{next(_ids)}"
    while here.exists():
        here = workdir.resolve() / f"export-{next(_ids)}"
    mountpoint = here / "disk.raw"
    try:
        here.mkdir(mode=0o700)
        with contextlib.ExitStack() as stack:
            daemons: list[tuple[Daemon, Path]] = []
            if legacy_options:
                socket = here / "nbd.sock"
                if len(os.fsencode(socket)) > SOCKET_PATH_MAX:
                    raise UsageError(
                        f"the work dir {workdir} is too deep for the Unix socket {image.name} needs "
                        f"({socket}: more than {SOCKET_PATH_MAX} bytes)",
                        path=workdir,
                        hint="pass a work dir with a shorter path (the default /var/tmp is fine)",
                    )
                spec = ",".join([f"driver={driver}", *legacy_options, "file.driver=file"])
                argv: list[str | Path] = [
                    "qemu-nbd", "--read-only", "--persistent", f"--socket={socket}",
                    f"--pid-file={here / 'nbd.pid'}", "--image-opts", f"{spec},file.filename={_opt(image)}",
                ]  # fmt: skip
                nbd = stack.enter_context(spawn(argv, log_to=here / "nbd.log", grace=STOP_GRACE))
                daemons.append((nbd, here / "nbd.log"))
                _wait_ready(nbd, here / "nbd.pid", here / "nbd.log", socket.exists, image, timeout)
                nodes = [
                    "--blockdev",
                    f"driver=nbd,node-name=disk,server.type=unix,server.path={_opt(socket)},read-only=on",
                ]
            else:
                nodes = [
                    "--blockdev", f"driver=file,node-name=file,filename={_opt(image)},read-only=on",
                    "--blockdev", f"driver={driver},node-name=disk,file=file,read-only=on",
                ]  # fmt: skip
            mountpoint.touch(mode=0o600)
            argv = [
                "qemu-storage-daemon", *nodes,
                "--export", f"type=fuse,id=raw,node-name=disk,mountpoint={_opt(mountpoint)},writable=off,"
                "allow-other=off",
                "--pidfile", here / "daemon.pid",
            ]  # fmt: skip
            daemon = stack.enter_context(spawn(argv, log_to=here / "daemon.log", grace=STOP_GRACE))
            daemons.append((daemon, here / "daemon.log"))
            stack.callback(_unmount, mountpoint)  # before the daemons stop: unmount, then stop
            mounted = _fuse_mounted(mountpoint)
            _wait_ready(daemon, here / "daemon.pid", here / "daemon.log", mounted, image, timeout)
            size = mountpoint.stat().st_size
            log.info("%s exported read-only as %s (%d bytes, pid %d)", image, mountpoint, size, daemon.pid)
            export = FuseExport(mountpoint, size, daemons)
            yield export
            trouble = export.trouble()
            if trouble:
                log.warning("while %s was read: %s", image, trouble)
    finally:
        _unmount(mountpoint)  # a daemon killed before it could unmount leaves a dead mount
        _remove(here)
