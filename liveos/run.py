"""The single way liveos runs an external command.

``run()`` resolves the binary first (a missing tool names the Debian package that ships it),
logs the command line, captures stderr and raises :class:`~liveos.errors.CommandError` with its
tail when the command fails. Nothing else in liveos calls :mod:`subprocess` for host tools.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from liveos.errors import CommandError, MissingToolError

log = logging.getLogger("liveos")

#: Debian package that ships each host tool liveos may call.
TOOL_PACKAGES: Mapping[str, str] = {
    "qemu-img": "qemu-utils",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-system-aarch64": "qemu-system-arm",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.vfat": "dosfstools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "mmd": "mtools",
    "mtype": "mtools",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "blkid": "util-linux",
    "chroot": "coreutils",
    "xorriso": "xorriso",
    "cpio": "cpio",
    "bsdtar": "libarchive-tools",
    "zstd": "zstd",
    "sgdisk": "gdisk",
    "sfdisk": "fdisk",
    "mkfs.ext4": "e2fsprogs",
    "mke2fs": "e2fsprogs",
    "mkfs.xfs": "xfsprogs",
    "mkfs.btrfs": "btrfs-progs",
    "mmdebstrap": "mmdebstrap",
    "socat": "socat",
}

Argument = str | os.PathLike[str]


def which(tool: str) -> str:
    """Return the absolute path of ``tool`` or raise :class:`MissingToolError` naming its package."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise MissingToolError(tool, TOOL_PACKAGES.get(tool))
    return path


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
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and return the completed process (stdout captured as bytes by default).

    ``step`` names the build step for the error message, ``hint`` is the fix to suggest if the
    command fails. stderr is always captured; on failure its last lines go into the error.
    """
    args = [os.fspath(a) for a in argv]
    args[0] = which(args[0]) if "/" not in args[0] else args[0]
    log.info("+ %s", shlex.join(args))
    merged_env = None if env is None else {**os.environ, **env}
    try:
        proc = subprocess.run(
            args,
            stdout=stdout,
            stderr=subprocess.PIPE,
            input=input,
            env=merged_env,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else ""
        stderr += f"\n(timed out after {timeout} s)"
        raise CommandError(args, -1, stderr, step=step, hint=hint) from exc
    except OSError as exc:
        raise CommandError(args, -1, str(exc), step=step, hint=hint) from exc
    if check and proc.returncode != 0:
        raise CommandError(args, proc.returncode, proc.stderr.decode(errors="replace"), step=step, hint=hint)
    return proc


def output(argv: Sequence[Argument], **kwargs: object) -> str:
    """Run ``argv`` and return its stdout as text (see :func:`run`)."""
    proc = run(argv, **kwargs)  # type: ignore[arg-type]
    return proc.stdout.decode()
