"""The single way liveos runs an external command.

``run()`` resolves the binary first (a missing tool names the Debian package that ships it),
logs the command line, captures stderr and raises :class:`~liveos.errors.CommandError` with its
tail when the command fails. Nothing else in liveos calls :mod:`subprocess` for host tools.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import io
import logging
import os
import re
import selectors
import shlex
import shutil
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from liveos import interrupts
from liveos.errors import CommandError, InternalError, MissingToolError

log = logging.getLogger("liveos")

#: Debian package that ships each host tool liveos may call.
TOOL_PACKAGES: Mapping[str, str] = {
    "qemu-img": "qemu-utils",
    "qemu-nbd": "qemu-utils",
    "qemu-storage-daemon": "qemu-system-common",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.erofs": "erofs-utils",
    "grub-mkimage": "grub-common",
    "fsck.erofs": "erofs-utils",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mmd": "mtools",
    "mtype": "mtools",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "xorriso": "xorriso",
    "cpio": "cpio",
    "bsdtar": "libarchive-tools",
    "zstd": "zstd",
    "sgdisk": "gdisk",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "mke2fs": "e2fsprogs",
    "debugfs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "mmdebstrap": "mmdebstrap",
    "socat": "socat",
    "bwrap": "bubblewrap",
    "unshare": "util-linux",
}

Argument = str | os.PathLike[str]

_running: set[subprocess.Popen[bytes]] = set()  #: every child run() waits for, in any thread
_running_lock = threading.Lock()

_LIBC = ctypes.CDLL(None, use_errno=True)  #: resolved once: nothing to load in a forked child
PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> Callable[[], None]:
    """Runs in the child before exec: SIGKILL it when the thread that started it dies -- also when
    liveos is killed with SIGKILL and can clean up nothing. If liveos died before this ran, exit."""

    def setup() -> None:
        _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(128 + signal.SIGKILL)

    return setup


def which(tool: str) -> str:
    """Return the absolute path of ``tool`` or raise :class:`MissingToolError` naming its package."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise MissingToolError(tool, TOOL_PACKAGES.get(tool))
    return path


def _resolve(argv: Sequence[Argument]) -> list[str]:
    args = [os.fspath(a) for a in argv]
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    return args


def run(
    argv: Sequence[Argument],
    *,
    step: str | None = None,
    hint: str | None = None,
    check: bool = True,
    stdout: int | None = subprocess.PIPE,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    started: Callable[[subprocess.Popen[bytes]], None] | None = None,
    on_line: Callable[[str], None] | None = None,
    terminal: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process (stdout captured as bytes by default).

    ``step`` names the build step for the error message, ``hint`` is the fix to suggest if the
    command fails. stderr is always captured; on failure its last lines go into the error.
    stdin is ``/dev/null`` unless ``input`` is given: no tool ever reads liveos' own stdin.
    ``started`` is called with the running process, whose stdin is then a pipe (the sandbox
    launcher waits on it for its user-namespace map); communicate() closes it after. On any
    exception -- a timeout, Ctrl-C, SIGTERM turned into SystemExit -- the process is killed and
    reaped before the exception propagates, and if liveos itself dies (even by SIGKILL) the
    kernel kills it: no child outlives liveos.
    ``on_line`` is called, in the calling thread, with each record of stdout (ended by a newline
    or a carriage return: a redrawn progress bar) as the command writes it (a tool's own
    progress); stdout is still returned whole. It takes no ``input`` or ``started``. With
    ``terminal`` stdout is a pseudo-terminal (80 columns, output bytes untranslated), for tools
    that draw their progress only for a terminal (mksquashfs 4.5 prints 1 bar in 100 to a pipe).
    """
    if on_line is not None and (input is not None or started is not None or stdout != subprocess.PIPE):
        raise InternalError("run(on_line=...) reads stdout and takes no input")
    if terminal and on_line is None:
        raise InternalError("run(terminal=True) needs on_line to read the terminal")
    args = _resolve(argv)
    log.info("+ %s", shlex.join(args))
    merged_env = None if env is None else {**os.environ, **env}
    with contextlib.ExitStack() as spawning:
        spawning.enter_context(interrupts.held())  # no signal exception inside fork's handlers
        screen = _pseudo_terminal(spawning) if terminal else None  # (our end, the child's)
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL if input is None and started is None else subprocess.PIPE,
                stdout=stdout if screen is None else screen[1],
                stderr=subprocess.PIPE,
                env=merged_env,
                cwd=cwd,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            if screen is not None:
                screen[0].close()
            raise CommandError(args, -1, str(exc), step=step, hint=hint) from exc
        if screen is not None:
            proc.stdout = screen[0]  # read like a pipe, closed with the process
        with _running_lock:
            _running.add(proc)
        spawning.callback(_kill_if_raising, proc)
    with proc, _registered(proc):
        try:
            if started is not None:
                started(proc)
            if on_line is None:
                out, err = proc.communicate(input, timeout=timeout)
            else:
                out, err = _pump(proc, on_line, timeout)
        except subprocess.TimeoutExpired as exc:
            _kill(proc)
            raise CommandError(
                args, -1, f"{_text(exc.stderr)}\n(timed out after {timeout} s)", step=step, hint=hint
            ) from exc
        except BaseException:
            _kill(proc)
            raise
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, _text(err), step=step, hint=hint)
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _pump(
    proc: subprocess.Popen[bytes], on_line: Callable[[str], None], timeout: float | None
) -> tuple[bytes, bytes]:
    """communicate(), handing each stdout record to ``on_line`` as it arrives."""
    deadline = None if timeout is None else time.monotonic() + timeout
    out, err, pending = bytearray(), bytearray(), b""
    with selectors.DefaultSelector() as selector:
        for pipe, sink in ((proc.stdout, out), (proc.stderr, err)):
            if pipe is not None:
                selector.register(pipe, selectors.EVENT_READ, sink)
        while selector.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(proc.args, timeout or 0, bytes(out), bytes(err))
            for key, _ in selector.select(left):
                try:
                    chunk = os.read(key.fd, 65536)
                except OSError as exc:  # a terminal whose other end closed says EIO, not EOF
                    if exc.errno != errno.EIO:
                        raise
                    chunk = b""
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                key.data.extend(chunk)
                if key.data is out:
                    *records, pending = re.split(rb"[\r\n]", pending + chunk)
                    for record in records:
                        if record.strip():
                            on_line(record.decode(errors="replace"))
    if pending.strip():
        on_line(pending.decode(errors="replace"))
    left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
    proc.wait(timeout=left)
    return bytes(out), bytes(err)


def _pseudo_terminal(spawning: contextlib.ExitStack) -> tuple[io.FileIO, int]:
    """A pseudo-terminal for a child's stdout: (our end, the child's end, which ``spawning``
    closes once the child has it), 80 columns wide, with no newline translation."""
    ours, theirs = os.openpty()
    spawning.callback(os.close, theirs)
    reader = io.FileIO(ours, "rb")
    try:
        attrs = termios.tcgetattr(theirs)
        attrs[1] &= ~termios.OPOST
        termios.tcsetattr(theirs, termios.TCSANOW, attrs)
        fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    except BaseException:
        reader.close()
        raise
    return reader, theirs


@contextlib.contextmanager
def _registered(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    try:
        yield
    finally:
        with _running_lock:
            _running.discard(proc)


def kill_running() -> None:
    """SIGKILL every child :func:`run` is waiting for, in every thread: when one step of a build
    fails or the build is interrupted, the steps running beside it stop at once (each waiting
    ``run()`` then raises :class:`~liveos.errors.CommandError`)."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()


def _text(data: bytes | str | None) -> str:
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def _kill_if_raising(proc: subprocess.Popen[bytes]) -> None:
    """Runs as the spawning region ends: if a held-back signal is about to be raised there, the
    process just started is killed and reaped first (nobody would wait for it)."""
    if interrupts.pending():
        _kill(proc)
        with _running_lock:
            _running.discard(proc)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL and reap: the process is gone when this returns."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    proc.wait()


def output(argv: Sequence[Argument], **kwargs: object) -> str:
    """Run ``argv`` and return its stdout as text (see :func:`run`)."""
    proc = run(argv, **kwargs)  # type: ignore[arg-type]
    return proc.stdout.decode()


@contextlib.contextmanager
def spawn(
    argv: Sequence[Argument], *, log_to: Path, grace: float = 10.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Start a long-running ``argv`` (QEMU) with stdout and stderr in ``log_to``; on leaving the
    block, whatever happened, it is terminated (killed after ``grace`` seconds) and reaped."""
    args = _resolve(argv)
    log.info("+ %s", shlex.join(args))
    with log_to.open("wb") as sink, contextlib.ExitStack() as spawning:
        spawning.enter_context(interrupts.held())  # no signal exception inside fork's handlers
        try:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                preexec_fn=_die_with_parent(os.getpid()),
            )
        except OSError as exc:
            raise CommandError(args, -1, str(exc)) from exc
        spawning.callback(_kill_if_raising, proc)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _kill(proc)
