"""Bootstrap initrds: dracut run *inside* the image, with the live modules added.

The image's own dracut and its configuration are used (so users customise the initrd the dracut
way, by dropping files in ``/etc/dracut.conf.d``). liveos passes everything it needs on the
command line, so no temporary dracut config is ever left in the image.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from liveos.atomic import scratch_dir
from liveos.cpio.format import TRAILER, CpioEntry
from liveos.errors import ImageError
from liveos.host.sandbox import Bind, Sandbox, run_sandboxed
from liveos.reproducible import source_date_epoch
from liveos.rootfs import CONFIG_LIMIT, RootFs

log = logging.getLogger("liveos")

#: Where dracut keeps its modules (``NNname`` directories), merged-/usr first.
DRACUT_MODULE_DIRS = ("/usr/lib/dracut/modules.d", "/lib/dracut/modules.d")
#: Modules a live initrd needs: find the media (dmsquash-live) or download it (livenet).
LIVE_MODULES = ("dmsquash-live", "livenet")

#: Drivers for every place the media may sit: CD (ahci, scsi, usb), USB stick, virtio, NVMe, network.
LIVE_DRIVERS = (
    "iso9660 sr_mod cdrom squashfs overlay loop ahci ata_piix virtio_blk virtio_scsi virtio_pci virtio_net "
    "nvme usb_storage uas xhci_pci xhci_hcd ehci_pci"
)

#: dracut network handlers, best first, with the binary each needs in the image.
NETWORK_HANDLERS = (
    ("network-manager", ("usr/sbin/NetworkManager",)),
    ("network-legacy", ("usr/sbin/dhclient", "sbin/dhclient")),
    ("systemd-networkd", ("usr/lib/systemd/systemd-networkd", "lib/systemd/systemd-networkd")),
)


@dataclass(frozen=True)
class DracutInfo:
    """What the image's dracut is: its version and which modules it ships."""

    version: str | None
    modules: frozenset[str]

    @classmethod
    def probe(cls, rootfs: RootFs) -> DracutInfo:
        """Find dracut in the image; :class:`ImageError` if it is not installed."""
        for candidate in DRACUT_MODULE_DIRS:
            modules_dir = rootfs.path(candidate)
            if modules_dir.is_dir():
                break
        else:
            raise ImageError(
                "dracut is not installed in the image: bootstrap mode regenerates the initrd with it",
                hint="install dracut and dracut-live (Debian) / dracut-live (Fedora, Azure Linux) in the "
                "image, or use initramfs mode 'full-os'",
            )
        modules = frozenset(re.sub(r"^\d+", "", name) for name in os.listdir(modules_dir))
        return cls(version=_dracut_version(rootfs), modules=modules)

    def network_handler(self, rootfs: RootFs) -> str | None:
        """The network module livenet should use: the first whose module and binary exist."""
        for module, binaries in NETWORK_HANDLERS:
            if module in self.modules and any(rootfs.path(b).exists() for b in binaries):
                return module
        return None


def _dracut_version(rootfs: RootFs) -> str | None:
    """dracut's version from the image's package database (dpkg or rpm-less fallbacks)."""
    if rootfs.is_file("/var/lib/dpkg/status"):
        status = rootfs.read_text("/var/lib/dpkg/status", limit=DPKG_STATUS_LIMIT)
        for stanza in status.split("\n\n"):
            if re.search(r"(?m)^Package: dracut-core$", stanza) or re.search(
                r"(?m)^Package: dracut$", stanza
            ):
                match = re.search(r"(?m)^Version: (\S+)", stanza)
                if match:
                    return match.group(1)
    if rootfs.is_file("/usr/lib/dracut/dracut-version.sh"):
        text = rootfs.read_text("/usr/lib/dracut/dracut-version.sh", limit=CONFIG_LIMIT)
        match = re.search(r"DRACUT_VERSION=(\S+)", text)
        if match:
            return match.group(1).strip("\"'")
    return None


#: dpkg's package database of a big image is a few MiB.
DPKG_STATUS_LIMIT = 64 * 1024 * 1024
#: Where the sandboxed dracut writes its initrd: a directory of liveos' scratch space, bound in.
OUTPUT_DIR = "/run/liveos-out"


def dracut_command(
    rootfs: RootFs, kernel_version: str, *, info: DracutInfo, compress: str | None = None
) -> tuple[str, ...]:
    """The dracut command line for a live initrd of ``kernel_version`` (also what a cached initrd
    is keyed by). :class:`ImageError` when the image cannot make one: a live module or the
    kernel's modules are missing. ``compress`` is dracut's ``--compress`` command (see
    :mod:`liveos.initramfs.compression`); None keeps the image's. With ``SOURCE_DATE_EPOCH``
    set, ``--reproducible`` (dracut clamps mtimes to it and sorts its cpio)."""
    missing = [m for m in LIVE_MODULES if m not in info.modules]
    if missing:
        raise ImageError(
            f"the image's dracut lacks the module(s) {', '.join(missing)} needed for a live initrd",
            path=rootfs.path("/usr/lib/dracut/modules.d"),
            hint="install the dracut-live package in the image (Debian: dracut-live, dracut-network)",
        )
    if not rootfs.is_dir(f"/lib/modules/{kernel_version}"):
        raise ImageError(
            f"kernel modules for {kernel_version} are missing in the image",
            path=rootfs.path(f"/lib/modules/{kernel_version}"),
        )
    modules = list(LIVE_MODULES)
    handler = info.network_handler(rootfs)
    if handler:
        modules.append(handler)
    return (
        "dracut", "--force", "--no-hostonly", "--kver", kernel_version, "--tmpdir", "/tmp",
        "--add", " ".join(modules), "--add-drivers", LIVE_DRIVERS,
        *(["--compress", compress] if compress else []),
        *(["--reproducible"] if source_date_epoch() is not None else []), f"{OUTPUT_DIR}/initrd.img",
    )  # fmt: skip


def build_bootstrap_initrd(
    rootfs: RootFs,
    kernel_version: str,
    out: Path,
    *,
    info: DracutInfo | None = None,
    compress: str | None = None,
) -> Path:
    """Run the image's dracut, sandboxed, for ``kernel_version``; the initrd lands at ``out``.

    dracut is the image's own program: it runs in :mod:`liveos.host.sandbox` (namespaces, no
    host devices, /sys or network, reduced capabilities) with the image tree read-only, and
    writes into a scratch directory bound into the sandbox (its temporary files go to the
    sandbox's /tmp), so a build never changes the tree. A dracut failure raises
    :class:`~liveos.errors.CommandError`; a missing live module or a missing/odd output raises
    :class:`ImageError` -- never a silently broken initrd. See :func:`dracut_command`.
    """
    argv = dracut_command(rootfs, kernel_version, info=info or DracutInfo.probe(rootfs), compress=compress)
    with scratch_dir(out.parent, ".dracut-") as exchange:
        exchange.chmod(0o755)
        epoch = source_date_epoch()
        env = {} if epoch is None else {"SOURCE_DATE_EPOCH": str(epoch)}
        bind = Bind(exchange, OUTPUT_DIR, writable=True)
        sandbox = Sandbox(rootfs.root, binds=(bind,), env=env, read_only=True)
        run_sandboxed(
            sandbox,
            list(argv),
            step=f"dracut (kernel {kernel_version})",
            hint="read dracut's messages above; the image's /etc/dracut.conf.d may ask for missing tools",
        )
        _take_output(exchange / "initrd.img", out)
    append_device_nodes(out)
    os.chmod(out, 0o644)  # dracut writes 0600; TFTP/HTTP servers running as a user must read it
    log.info("bootstrap initrd for %s: %s (%d bytes)", kernel_version, out, out.stat().st_size)
    return out


#: What dracut ``mknod``s into an initrd when it may (dracut.sh), as (name, major, minor, mode).
#: In the sandbox it may not (a user namespace cannot create device nodes), like in any container.
DEVICE_NODES = (
    ("dev/null", 1, 3, 0o666),
    ("dev/kmsg", 1, 11, 0o644),
    ("dev/console", 5, 1, 0o600),
    ("dev/random", 1, 8, 0o666),
    ("dev/urandom", 1, 9, 0o666),
)


def append_device_nodes(initrd: Path) -> None:
    """Append an uncompressed newc segment with :data:`DEVICE_NODES` to ``initrd``.

    The kernel unpacks every segment of an initramfs in turn (zero padding between them is
    skipped, a CPIO segment must start 4-byte aligned), so the result holds the same nodes a
    privileged dracut would have made, without the sandbox ever creating a device node.
    """
    entries = [CpioEntry.directory("dev")]
    entries += [
        CpioEntry.char_device(name, major, minor, mode=mode) for name, major, minor, mode in DEVICE_NODES
    ]
    segment = b"".join(entry.pack() for entry in entries) + CpioEntry(TRAILER, 0).pack()
    segment += b"\0" * (-len(segment) % 512)
    with open(initrd, "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.write(b"\0" * (-size % 4) + segment)


def _take_output(produced: Path, out: Path) -> None:
    """Move what the sandbox wrote to ``out`` -- only if it is a non-empty regular file."""
    try:
        st = os.lstat(produced)
    except FileNotFoundError:
        raise ImageError("dracut reported success but wrote no initrd", path=produced) from None
    if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        raise ImageError("dracut's output is not a non-empty regular file", path=produced)
    os.replace(produced, out)
