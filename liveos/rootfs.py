"""RootFs: the customisable view of an OS tree, with every path confined to the tree.

An image is hostile input: ``/etc`` may be a symlink to ``/host/etc``, ``/etc/fstab`` may point
at ``/../../../tmp/x``. :func:`resolve_in_root` resolves a path the way the kernel would inside a
``chroot`` -- absolute symlinks restart at the image root, ``..`` stops at it -- so no read or
write made through a :class:`RootFs` ever leaves the tree.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.confined import resolve_in_root
from liveos.errors import ImageError, UsageError
from liveos.host.sandbox import Sandbox, run_sandboxed
from liveos.versions import Version

#: Largest file of the image liveos reads whole unless a caller says otherwise (configs are KiBs).
READ_LIMIT = 16 * 1024 * 1024
#: Small config files (os-release, SELinux config, fstab, BLS entries, grubenv).
CONFIG_LIMIT = 1024 * 1024


def read_limited(host: Path, limit: int, *, shown: str | None = None) -> bytes:
    """Read the regular file ``host`` (already resolved inside an image; the last component is not
    followed) if it holds at most ``limit`` bytes; an :class:`ImageError` naming it otherwise."""
    name = shown or str(host)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise ImageError(f"{name} cannot be read from the image: {exc.strerror}", path=host) from None
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ImageError(f"{name} is not a regular file in the image", path=host)
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ImageError(
            f"{name} in the image is too large (more than {limit} bytes); liveos does not read it",
            path=host,
            hint="a file like this is a few KiB; the image may be damaged or hostile",
        )
    return data


@dataclass(frozen=True)
class Kernel:
    """A kernel found in ``/boot`` with its version and the initrd next to it (if any)."""

    version: str
    image: PurePosixPath
    initrd: PurePosixPath | None


class RootFs:
    """A writable OS tree (usually the overlay of a read-only image) with confined file access."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RootFs({str(self.root)!r})"

    # -- confined paths ---------------------------------------------------------------------
    def path(self, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
        """Host path of an image path, resolved inside the root (see :func:`resolve_in_root`)."""
        return resolve_in_root(self.root, path, follow_last=follow_last)

    def exists(self, path: str | PurePosixPath) -> bool:
        """Whether ``path`` exists in the OS tree (a symlink must resolve inside it)."""
        return os.path.lexists(self.path(path, follow_last=False)) and (
            not self.is_symlink(path) or self.path(path).exists()
        )

    def is_file(self, path: str | PurePosixPath) -> bool:
        """A regular file (after following links inside the image)."""
        return self.path(path).is_file()

    def is_dir(self, path: str | PurePosixPath) -> bool:
        """A directory (after following links inside the image)."""
        return self.path(path).is_dir()

    def is_symlink(self, path: str | PurePosixPath) -> bool:
        """Whether ``path`` itself is a symbolic link."""
        return self.path(path, follow_last=False).is_symlink()

    def read_bytes(self, path: str | PurePosixPath, *, limit: int = READ_LIMIT) -> bytes:
        """The content of a regular file of the image, at most ``limit`` bytes (else ImageError:
        a sparse 10 GiB ``/etc/os-release`` must not exhaust memory)."""
        return read_limited(self.path(path), limit, shown=str(path))

    def read_text(self, path: str | PurePosixPath, *, limit: int = READ_LIMIT) -> str:
        """:meth:`read_bytes` decoded as UTF-8 (undecodable bytes kept as surrogate escapes)."""
        return self.read_bytes(path, limit=limit).decode("utf-8", errors="surrogateescape")

    def write_bytes(self, path: str | PurePosixPath, data: bytes, *, mode: int = 0o644) -> Path:
        """Write a file inside the root (replacing a symlink at that name, never following it)."""
        host = self.path(path, follow_last=False)
        host.parent.mkdir(parents=True, exist_ok=True)
        if host.is_symlink() or host.exists():
            host.unlink()
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(host, mode)
        return host

    def write_text(self, path: str | PurePosixPath, text: str, *, mode: int = 0o644) -> Path:
        """Write ``text`` as UTF-8 (surrogate escapes from :meth:`read_text` become their bytes)."""
        return self.write_bytes(path, text.encode("utf-8", errors="surrogateescape"), mode=mode)

    def remove(self, path: str | PurePosixPath, *, missing_ok: bool = True) -> bool:
        """Remove a file or symlink (not what it points to). Returns whether something was removed."""
        host = self.path(path, follow_last=False)
        if not os.path.lexists(host):
            if missing_ok:
                return False
            raise ImageError(f"{path} does not exist in the image", path=host)
        host.unlink()
        return True

    def iterdir(self, path: str | PurePosixPath) -> Iterator[PurePosixPath]:
        """Image paths of the entries of a directory (empty if it does not exist)."""
        host = self.path(path)
        if not host.is_dir():
            return
        base = PurePosixPath("/", path)
        for name in sorted(os.listdir(host)):
            yield base / name

    def run(
        self,
        argv: Sequence[str],
        *,
        network: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a program *of the image* (its package manager, a script) in the sandbox of
        :mod:`liveos.host.sandbox`: as root of the tree, whose writes land in the tree (the
        overlay: the input image never changes), without the host's devices, /sys, processes or
        network (``network=True`` shares the host's network for package downloads).
        Returns the completed process (stdout, stderr as bytes); a non-zero exit raises
        :class:`~liveos.errors.CommandError`.
        """
        if not argv:
            raise UsageError("RootFs.run needs a command")
        sandbox = Sandbox(self.root, network=network, env=dict(env or {}))
        return run_sandboxed(sandbox, argv, step=f"{argv[0]} in the image", timeout=timeout)

    # -- OS facts ---------------------------------------------------------------------------
    def remove_fstab(self) -> bool:
        """Remove ``/etc/fstab``: on live media it names disks that do not exist (boot hangs)."""
        return self.remove("/etc/fstab")

    def os_release(self) -> Mapping[str, str]:
        """Parsed ``os-release`` (``/etc/os-release``, else ``/usr/lib/os-release``)."""
        for candidate in ("/etc/os-release", "/usr/lib/os-release"):
            if self.path(candidate).is_file():
                return parse_os_release(self.read_text(candidate, limit=CONFIG_LIMIT))
        return {}

    def kernels(self) -> list[Kernel]:
        """Kernels in ``/boot`` (``vmlinuz-<version>``), newest version last, with their initrds."""
        found: list[Kernel] = []
        for entry in self.iterdir("/boot"):
            name = entry.name
            if not name.startswith("vmlinuz-") or not self.path(entry).is_file():
                continue
            version = name[len("vmlinuz-") :]
            initrd = None
            for candidate in (f"initramfs-{version}.img", f"initrd.img-{version}", f"initrd-{version}"):
                if self.path(f"/boot/{candidate}").is_file():
                    initrd = PurePosixPath("/boot", candidate)
                    break
            found.append(Kernel(version, entry, initrd))
        return sorted(found, key=lambda k: Version(k.version))

    def selinux_mode(self) -> str:
        """``enforcing``, ``permissive`` or ``disabled`` from ``/etc/selinux/config`` (no file: disabled)."""
        if not self.path("/etc/selinux/config").is_file():
            return "disabled"
        match = re.search(
            r"(?m)^\s*SELINUX\s*=\s*(\w+)", self.read_text("/etc/selinux/config", limit=CONFIG_LIMIT)
        )
        return match.group(1).lower() if match else "disabled"


def parse_os_release(text: str) -> dict[str, str]:
    """Parse ``os-release`` syntax (shell-like ``KEY=value`` with optional quotes)."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        result[key.strip()] = value
    return result


def kernel_version_of(name: str, versions: list[str]) -> str | None:
    """The kernel version a boot file name refers to (longest match, so 6.6.10.1 beats 6.6.10)."""
    matches = [v for v in versions if re.search(rf"(^|[-_]){re.escape(v)}($|[._-])", name)]
    return max(matches, key=len) if matches else None
