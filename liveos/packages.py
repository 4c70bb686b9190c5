"""The image's own package manager: which one, and the commands for install, remove and update.

Pure knowledge, no I/O: :func:`detect` is given a predicate for "this path exists in the image",
:func:`transaction` returns the command lines :class:`~liveos.rootfs.RootFs` runs in the sandbox.
The commands follow Azure Linux Image Customizer (``customizepackages_*.go``): refresh the index
first, install without asking (apt: ``--no-install-recommends``, keep the image's changed config
files), remove without touching the repositories, clean the downloaded packages and indexes
afterwards so the live media do not carry them. Only the steps that download get the network.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from liveos.errors import ImageError, UsageError


class PackageManager(enum.Enum):
    """A package manager liveos knows how to drive; the value is its program."""

    APT = "apt-get"  #: Debian, Ubuntu
    TDNF = "tdnf"  #: Azure Linux, CBL-Mariner
    DNF = "dnf"  #: Fedora, RHEL and relatives
    ZYPPER = "zypper"  #: openSUSE, SLES


class Operation(enum.Enum):
    """What a package transaction does."""

    INSTALL = "install"
    REMOVE = "remove"
    UPDATE = "update"


#: Where each manager's program is looked for, in detection order (an Azure Linux image may carry
#: dnf next to tdnf: tdnf is its own).
PROGRAMS: tuple[tuple[PackageManager, tuple[str, ...]], ...] = (
    (PackageManager.APT, ("/usr/bin/apt-get", "/bin/apt-get")),
    (PackageManager.TDNF, ("/usr/bin/tdnf", "/bin/tdnf")),
    (PackageManager.DNF, ("/usr/bin/dnf", "/bin/dnf")),  # dnf5 installs /usr/bin/dnf too
    (PackageManager.ZYPPER, ("/usr/bin/zypper", "/bin/zypper")),
)

#: apt and debconf must never ask (Image Customizer's ``aptEnvironmentVariables``).
APT_ENV: Mapping[str, str] = {
    "DEBIAN_FRONTEND": "noninteractive",
    "DEBCONF_NONINTERACTIVE_SEEN": "true",
    "LC_ALL": "C.UTF-8",
}
#: Options of every apt-get call: no progress pseudo-terminal (output is captured).
APT_OPTIONS = ("-o", "Dpkg::Use-Pty=0")
#: dpkg keeps the image's changed config files and takes the package's for untouched ones.
DPKG_CONFIG_OPTIONS = ("-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold")
#: What stays in an emptied folder: apt's own lock and download folder (they came with the image).
KEPT = frozenset({"lock", "partial"})
#: The policy-rc.d that forbids every service start (Debian policy: exit 101 = "action forbidden").
POLICY_RC_D_PATH = "/usr/sbin/policy-rc.d"
POLICY_RC_D = b"#!/bin/sh\n# liveos: no service starts while packages are installed\nexit 101\n"

#: A package argument: a name, optionally with a version, release, arch or glob (``hello``,
#: ``hello=2.10-3``, ``kernel-6.6.57.1-6.azl3``, ``python3-*``); never an option, never blank.
_PACKAGE = re.compile(r"[A-Za-z0-9_+.*?\[\]][A-Za-z0-9_+.:=~/@*?\[\]-]*")


@dataclass(frozen=True)
class Command:
    """One command line of a transaction, run in the image's sandbox."""

    argv: tuple[str, ...]
    network: bool = False  #: only the steps that download get the host's network


@dataclass(frozen=True)
class Transaction:
    """The commands of one package operation and what surrounds them."""

    manager: PackageManager
    commands: tuple[Command, ...]  #: in order; the first failure stops the transaction
    cleanup: tuple[Command, ...]  #: run afterwards, also after a failure
    env: Mapping[str, str] = field(default_factory=dict)
    #: directories whose content is removed afterwards (downloaded indexes: stale on the media)
    emptied: tuple[str, ...] = ()
    #: a policy-rc.d must forbid service starts while the commands run (Debian's maintainer
    #: scripts start the services they install through invoke-rc.d)
    forbid_service_starts: bool = False


def detect(exists: Callable[[str], bool]) -> PackageManager:
    """The image's package manager: the first of :data:`PROGRAMS` whose program ``exists``;
    an :class:`ImageError` naming what was looked for when there is none."""
    for manager, paths in PROGRAMS:
        if any(exists(path) for path in paths):
            return manager
    looked = ", ".join(path for _, paths in PROGRAMS for path in paths)
    raise ImageError(
        f"the image has no package manager liveos knows (looked for {looked})",
        hint="packages can be installed only with the image's own apt-get, tdnf, dnf or zypper",
    )


def check_names(names: Sequence[str], *, operation: Operation) -> tuple[str, ...]:
    """The package arguments, validated: at least one, none empty, none looking like an option
    (``-o...`` would change what the package manager does) or holding spaces."""
    if isinstance(names, str):
        raise UsageError(f"package {operation.value} takes a list of names, not the string {names!r}")
    checked = tuple(names)
    if not checked:
        raise UsageError(f"package {operation.value} needs at least one package name")
    for name in checked:
        if not isinstance(name, str) or not _PACKAGE.fullmatch(name):
            raise UsageError(
                f"invalid package name {name!r}",
                hint="a package name starts with a letter or digit and holds no spaces "
                "(a version may follow: hello=2.10-3 for apt, hello-2.10-3.azl3 for tdnf/dnf)",
            )
    return checked


def transaction(manager: PackageManager, operation: Operation, names: Sequence[str] | None) -> Transaction:
    """The commands that perform ``operation`` on ``names`` with ``manager``. ``names=None`` is
    allowed for :attr:`Operation.UPDATE` only: update every installed package."""
    if names is None and operation is not Operation.UPDATE:
        raise UsageError(f"package {operation.value} needs package names")
    packages = () if names is None else check_names(names, operation=operation)
    if manager is PackageManager.APT:
        return _apt(operation, packages)
    if manager is PackageManager.ZYPPER:
        return _zypper(operation, packages)
    return _dnf_like(manager, operation, packages)


def _apt(operation: Operation, packages: tuple[str, ...]) -> Transaction:
    apt = ("apt-get", *APT_OPTIONS)
    refresh = Command((*apt, "update"), network=True)
    commands: tuple[Command, ...]
    if operation is Operation.INSTALL:
        install = (
            *apt,
            "install",
            "-y",
            "--no-install-recommends",
            "--no-install-suggests",
            *DPKG_CONFIG_OPTIONS,
        )
        commands = (refresh, Command((*install, *packages), network=True))
    elif operation is Operation.REMOVE:  # dpkg's database is enough: no index, no network
        commands = (Command((*apt, "remove", "-y", *packages)),)
    elif packages:  # update the named ones only, never install them
        update = (*apt, "install", "-y", "--only-upgrade", "--no-install-recommends", *DPKG_CONFIG_OPTIONS)
        commands = (refresh, Command((*update, *packages), network=True))
    else:  # new dependencies are installed (like tdnf update), nothing is removed
        upgrade = (*apt, "upgrade", "-y", "--with-new-pkgs", "--no-install-recommends", *DPKG_CONFIG_OPTIONS)
        commands = (refresh, Command(upgrade, network=True))
    return Transaction(
        PackageManager.APT,
        commands,
        cleanup=(Command((*apt, "clean")),),
        env=APT_ENV,
        emptied=("/var/lib/apt/lists",),  # remove too leaves a folder there (auxfiles)
        forbid_service_starts=True,
    )


def _dnf_like(manager: PackageManager, operation: Operation, packages: tuple[str, ...]) -> Transaction:
    program = manager.value
    refresh = Command((program, "makecache"), network=True)
    commands: tuple[Command, ...]
    if operation is Operation.REMOVE:  # no repository: removing needs only the rpm database
        commands = (Command((program, "remove", "--assumeyes", "--disablerepo=*", *packages)),)
    else:
        verb = "install" if operation is Operation.INSTALL else "update"
        commands = (refresh, Command((program, verb, "--assumeyes", *packages), network=True))
    return Transaction(manager, commands, cleanup=(Command((program, "clean", "all")),))


def _zypper(operation: Operation, packages: tuple[str, ...]) -> Transaction:
    zypper = ("zypper", "--non-interactive")
    commands: tuple[Command, ...]
    if operation is Operation.REMOVE:
        commands = (Command((*zypper, "--no-refresh", "remove", *packages)),)
    else:
        verb = ("install", "--no-recommends") if operation is Operation.INSTALL else ("update",)
        commands = (
            Command((*zypper, "refresh"), network=True),
            Command((*zypper, *verb, *packages), network=True),
        )
    return Transaction(PackageManager.ZYPPER, commands, cleanup=(Command((*zypper, "clean", "--all")),))
