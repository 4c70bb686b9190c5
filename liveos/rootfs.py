"""RootFs: the customisable view of an OS tree, with every path confined to the tree.

An image is hostile input: ``/etc`` may be a symlink to ``/host/etc``, ``/etc/fstab`` may point
at ``/../../../tmp/x``. :func:`resolve_in_root` resolves a path the way the kernel would inside a
``chroot`` -- absolute symlinks restart at the image root, ``..`` stops at it -- so no read or
write made through a :class:`RootFs` ever leaves the tree.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos import packages
from liveos.confined import resolve_in_root
from liveos.errors import CommandError, ImageError, UsageError
from liveos.host.sandbox import MOUNT_POINTS, Bind, Sandbox, run_sandboxed
from liveos.packages import Operation, PackageManager
from liveos.versions import Version

#: Largest file of the image liveos reads whole unless a caller says otherwise (configs are KiBs).
READ_LIMIT = 16 * 1024 * 1024
#: Small config files (os-release, SELinux config, fstab, BLS entries, grubenv).
CONFIG_LIMIT = 1024 * 1024
#: The host's resolver configuration: a sandbox with the network gets it read-only (DNS).
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
#: Where systemd looks for unit files (``/run`` is the sandbox's own tmpfs: nothing there).
UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
#: Unit types systemctl enables; a name without one of these suffixes is a service.
UNIT_SUFFIXES = (
    ".service",
    ".socket",
    ".timer",
    ".path",
    ".target",
    ".mount",
    ".automount",
    ".swap",
    ".slice",
)
#: A unit name: no path, no option (systemd's own alphabet).
_UNIT = re.compile(r"[A-Za-z0-9:_.\\@][A-Za-z0-9:_.\\@-]*")
#: One label of a host name (RFC 1123: letters, digits, inner hyphens, 1-63 characters).
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


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
        return self._sandboxed(argv, network=network, env=env, timeout=timeout)

    def _sandboxed(
        self,
        argv: Sequence[str],
        *,
        network: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        binds: Sequence[Bind] = (),
        step: str | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        if not argv:
            raise UsageError("RootFs.run needs a command")
        with self._resolver(network) as resolver:
            sandbox = Sandbox(self.root, network=network, env=dict(env or {}), binds=(*resolver, *binds))
            return run_sandboxed(sandbox, argv, step=step or f"{argv[0]} in the image", timeout=timeout)

    @contextlib.contextmanager
    def _resolver(self, network: bool) -> Iterator[tuple[Bind, ...]]:
        """With the network, the host's resolv.conf bound read-only where the image reads it:
        over its own file, or where its symlink points (``/run/systemd/resolve/...`` is on the
        sandbox's /run). bwrap makes an empty file to bind onto when there is none in the tree:
        that placeholder is removed afterwards, so the tree keeps no trace."""
        if not network or not HOST_RESOLV_CONF.exists():
            yield ()
            return
        target = self.path("/etc/resolv.conf")
        inside = PurePosixPath("/", target.relative_to(self.root).as_posix())
        if len(inside.parts) < 2 or target.is_dir():
            yield ()  # a link to / or to a folder: not a resolver configuration
            return
        ephemeral = f"/{inside.parts[1]}" in MOUNT_POINTS  # the sandbox's own /run, /tmp, /dev, /proc
        placeholder = not ephemeral and not os.path.lexists(target)
        if placeholder and not target.parent.is_dir():
            yield ()  # no /etc (or a dangling link into a missing folder): nothing to bind onto
            return
        try:
            yield (Bind(HOST_RESOLV_CONF, str(inside)),)
        finally:
            if placeholder and target.is_file() and not target.is_symlink() and target.stat().st_size == 0:
                target.unlink()

    # -- the image's own tools: packages, services, scripts ---------------------------------
    def package_manager(self) -> PackageManager:
        """The image's package manager (:func:`liveos.packages.detect`); ImageError if none."""
        return packages.detect(self.exists)

    def install_packages(self, names: Sequence[str]) -> None:
        """Install packages from the image's repositories with its own package manager, in the
        sandbox with the network; no service starts, downloaded packages and indexes are cleaned."""
        self._packages(Operation.INSTALL, names)

    def remove_packages(self, names: Sequence[str]) -> None:
        """Remove installed packages with the image's own package manager (no network)."""
        self._packages(Operation.REMOVE, names)

    def update_packages(self, names: Sequence[str] | None = None) -> None:
        """Update the named packages, or every installed package (``None``), from the image's
        repositories (never installs a named package that is not installed)."""
        self._packages(Operation.UPDATE, names)

    def _packages(self, operation: Operation, names: Sequence[str] | None) -> None:
        plan = packages.transaction(self.package_manager(), operation, names)
        with self._no_service_starts(plan.forbid_service_starts):
            done = False
            try:
                for command in plan.commands:
                    self._package_command(command, plan)
                done = True
            finally:
                for command in plan.cleanup:
                    try:
                        self._package_command(command, plan)
                    except CommandError:
                        if done:  # after a failure, the failure is the news
                            raise
                for folder in plan.emptied:
                    self._empty(folder)

    def _package_command(self, command: packages.Command, plan: packages.Transaction) -> None:
        self._sandboxed(command.argv, network=command.network, env=plan.env, step=_step(command.argv))

    @contextlib.contextmanager
    def _no_service_starts(self, needed: bool) -> Iterator[None]:
        """Debian's policy-rc.d mechanism: invoke-rc.d and deb-systemd-invoke ask
        ``/usr/sbin/policy-rc.d`` and start nothing when it exits 101. Written only when the
        image has none (its own policy stays), removed afterwards."""
        if not needed or os.path.lexists(self.path(packages.POLICY_RC_D_PATH, follow_last=False)):
            yield
            return
        self.write_bytes(packages.POLICY_RC_D_PATH, packages.POLICY_RC_D, mode=0o755)
        try:
            yield
        finally:
            self.remove(packages.POLICY_RC_D_PATH)

    def _empty(self, folder: str) -> None:
        """Remove what a directory of the image holds but :data:`~liveos.packages.KEPT` (links
        are not followed)."""
        for entry in self.iterdir(folder):
            if entry.name in packages.KEPT:
                continue
            host = self.path(entry, follow_last=False)
            if host.is_dir() and not host.is_symlink():
                shutil.rmtree(host)
            else:
                host.unlink()

    def set_hostname(self, name: str) -> None:
        """Write ``/etc/hostname`` (validated: RFC 1123 labels, at most 253 characters)."""
        self.write_text("/etc/hostname", check_hostname(name) + "\n")

    def enable_services(self, names: Sequence[str]) -> None:
        """``systemctl enable`` the units (``sshd`` means ``sshd.service``) in the sandbox: the
        ``wants/`` links are made in the tree, nothing is started. A unit the image does not
        have is a UsageError naming it, before anything changes."""
        self._systemctl("enable", names)

    def disable_services(self, names: Sequence[str]) -> None:
        """``systemctl disable`` the units (the ``wants/`` links are removed); as :meth:`enable_services`."""
        self._systemctl("disable", names)

    def _systemctl(self, verb: str, names: Sequence[str]) -> None:
        units = check_units(names)
        missing = [unit for unit in units if not self.has_unit(unit)]
        if missing:
            raise UsageError(
                f"cannot {verb} {', '.join(missing)}: no such unit in the image",
                hint=f"unit files are looked for in {', '.join(UNIT_DIRS)} (and /etc/init.d)",
            )
        self._sandboxed(["systemctl", verb, *units], env={"SYSTEMD_OFFLINE": "1"}, step=f"systemctl {verb}")

    def has_unit(self, unit: str) -> bool:
        """Whether the image has a unit file for ``unit`` (a template for an instance, or a
        System V init script that systemd wraps)."""
        instance = re.fullmatch(r"([^@]+@)[^@.]+(\.\w+)", unit)
        candidates = [unit] + ([instance.group(1) + instance.group(2)] if instance else [])
        if any(self.exists(f"{folder}/{name}") for folder in UNIT_DIRS for name in candidates):
            return True
        return unit.endswith(".service") and self.is_file(f"/etc/init.d/{unit.removesuffix('.service')}")

    def run_script(
        self,
        path: Path | None = None,
        *,
        content: str | None = None,
        args: Sequence[str] = (),
        interpreter: str | None = None,
        env: Mapping[str, str] | None = None,
        network: bool = False,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run a script (a host file ``path``, or ``content``) as root of the image, in the
        sandbox: with ``interpreter`` if given, else its ``#!`` line, else ``/bin/sh`` (Image
        Customizer's default). It appears at a unique ``/tmp/liveos-script-*`` path, bound
        read-only from the host: nothing is written into the tree for it, and the sandbox's /tmp
        is its own. A non-zero exit raises CommandError with the script's stderr."""
        if (path is None) == (content is None):
            raise UsageError("run_script needs exactly one of a script path or its content")
        if isinstance(args, str):
            raise UsageError("run_script's args is a list of arguments, not a string")
        if path is not None:
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                raise UsageError(f"cannot read the script {path}: {exc.strerror}", path=path) from None
            shown = f"the script {Path(path).name}"
        else:
            assert content is not None
            data, shown = content.encode(), "the inline script"
        inside = f"/tmp/liveos-script-{secrets.token_hex(8)}"
        command = [*script_interpreter(data, interpreter), inside, *args]
        with tempfile.TemporaryDirectory(prefix="liveos-script-") as scratch:
            script = Path(scratch, "script")
            script.write_bytes(data)
            script.chmod(0o755)
            return self._sandboxed(
                command,
                network=network,
                env=env,
                binds=(Bind(script, inside),),
                step=f"{shown} in the image",
            )

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


def check_hostname(name: str) -> str:
    """``name`` if it is a valid host name (RFC 1123: dot-separated labels of letters, digits
    and inner hyphens, each 1-63 characters, 253 in all); a UsageError saying why otherwise."""
    if not isinstance(name, str) or not name:
        raise UsageError("the hostname must not be empty")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        raise UsageError(
            f"invalid hostname {name!r}",
            hint="use letters, digits and hyphens (not first or last), dot-separated labels of "
            "1-63 characters, at most 253 characters (RFC 1123)",
        )
    return name


def check_units(names: Sequence[str]) -> tuple[str, ...]:
    """systemd unit names from ``names`` (``sshd`` becomes ``sshd.service``); a UsageError for an
    empty list or a name that is not a unit name (a path, an option)."""
    if isinstance(names, str):
        raise UsageError(f"services are a list of names, not the string {names!r}")
    units: list[str] = []
    for name in names:
        if not isinstance(name, str) or not _UNIT.fullmatch(name):
            raise UsageError(
                f"invalid service name {name!r}", hint="a unit name such as sshd or sshd.service"
            )
        units.append(name if name.endswith(UNIT_SUFFIXES) else f"{name}.service")
    if not units:
        raise UsageError("no service named")
    return tuple(units)


def script_interpreter(script: bytes, interpreter: str | None = None) -> list[str]:
    """The command that runs ``script``: ``interpreter`` (split like a shell would not: one
    program), else the script's ``#!`` line as the kernel reads it (program and at most one
    argument), else ``/bin/sh``."""
    if interpreter is not None:
        if not interpreter.strip():
            raise UsageError("the script interpreter must not be empty")
        return [interpreter]
    if script.startswith(b"#!"):
        line = script[2:].split(b"\n", 1)[0].decode("utf-8", errors="surrogateescape").strip()
        program, _, argument = line.partition(" ")
        if program:
            return [program, argument.strip()] if argument.strip() else [program]
    return ["/bin/sh"]


def _step(argv: Sequence[str]) -> str:
    """How a package command is named in errors and logs: its program and verb."""
    words = [a for a in argv[1:] if not a.startswith("-") and "::" not in a and "=" not in a]
    return f"{argv[0]} {words[0] if words else ''} in the image".replace("  ", " ")


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
