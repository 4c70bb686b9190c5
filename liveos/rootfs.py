"""RootFs: the customisable view of an OS tree, with every path confined to the tree.

An image is hostile input: ``/etc`` may be a symlink to ``/host/etc``, ``/etc/fstab`` may point
at ``/../../../tmp/x``. :func:`resolve_in_root` resolves a path the way the kernel would inside a
``chroot`` -- absolute symlinks restart at the image root, ``..`` stops at it -- so no read or
write made through a :class:`RootFs` ever leaves the tree.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.confined import resolve_in_root
from liveos.errors import ImageError
from liveos.versions import Version


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
        return self.path(path, follow_last=False).is_symlink()

    def read_bytes(self, path: str | PurePosixPath) -> bytes:
        host = self.path(path)
        if not host.is_file():
            raise ImageError(f"{path} is missing or not a regular file in the image", path=host)
        return host.read_bytes()

    def read_text(self, path: str | PurePosixPath) -> str:
        return self.read_bytes(path).decode("utf-8", errors="surrogateescape")

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
        return self.write_bytes(path, text.encode(), mode=mode)

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

    # -- OS facts ---------------------------------------------------------------------------
    def remove_fstab(self) -> bool:
        """Remove ``/etc/fstab``: on live media it names disks that do not exist (boot hangs)."""
        return self.remove("/etc/fstab")

    def os_release(self) -> Mapping[str, str]:
        """Parsed ``os-release`` (``/etc/os-release``, else ``/usr/lib/os-release``)."""
        for candidate in ("/etc/os-release", "/usr/lib/os-release"):
            if self.path(candidate).is_file():
                return parse_os_release(self.read_text(candidate))
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
        match = re.search(r"(?m)^\s*SELINUX\s*=\s*(\w+)", self.read_text("/etc/selinux/config"))
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
