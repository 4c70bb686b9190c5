"""Bootstrap initrds: dracut run *inside* the image, with the live modules added.

The image's own dracut and its configuration are used (so users customise the initrd the dracut
way, by dropping files in ``/etc/dracut.conf.d``). liveos passes everything it needs on the
command line, so no temporary dracut config is ever left in the image.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.errors import ImageError
from liveos.host.chroot import chroot_mounts
from liveos.rootfs import RootFs
from liveos.run import run

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
    status = rootfs.path("/var/lib/dpkg/status")
    if status.is_file():
        for stanza in status.read_text(errors="replace").split("\n\n"):
            if re.search(r"(?m)^Package: dracut-core$", stanza) or re.search(
                r"(?m)^Package: dracut$", stanza
            ):
                match = re.search(r"(?m)^Version: (\S+)", stanza)
                if match:
                    return match.group(1)
    version_file = rootfs.path("/usr/lib/dracut/dracut-version.sh")
    if version_file.is_file():
        match = re.search(r"DRACUT_VERSION=(\S+)", version_file.read_text(errors="replace"))
        if match:
            return match.group(1).strip("\"'")
    return None


def build_bootstrap_initrd(
    rootfs: RootFs, kernel_version: str, out: Path, *, info: DracutInfo | None = None
) -> Path:
    """Run dracut in a chroot of ``rootfs`` for ``kernel_version`` and move the initrd to ``out``.

    A dracut failure raises :class:`~liveos.errors.CommandError`; an initrd without the live
    modules raises :class:`ImageError` -- never a silently broken initrd.
    """
    info = info or DracutInfo.probe(rootfs)
    missing = [m for m in LIVE_MODULES if m not in info.modules]
    if missing:
        raise ImageError(
            f"the image's dracut lacks the module(s) {', '.join(missing)} needed for a live initrd",
            path=rootfs.path("/usr/lib/dracut/modules.d"),
            hint="install the dracut-live package in the image (Debian: dracut-live, dracut-network)",
        )
    if not rootfs.path(f"/lib/modules/{kernel_version}").is_dir():
        raise ImageError(
            f"kernel modules for {kernel_version} are missing in the image",
            path=rootfs.path(f"/lib/modules/{kernel_version}"),
        )
    modules = list(LIVE_MODULES)
    handler = info.network_handler(rootfs)
    if handler:
        modules.append(handler)
    inside = PurePosixPath("/var/tmp") / f"liveos-initrd-{kernel_version}.img"
    argv = [
        "chroot", str(rootfs.root), "dracut", "--force", "--no-hostonly", "--kver", kernel_version,
        "--add", " ".join(modules), "--add-drivers", LIVE_DRIVERS, str(inside),
    ]  # fmt: skip
    with chroot_mounts(rootfs.root):
        run(argv, step=f"dracut (kernel {kernel_version})",
            hint="read dracut's messages above; the image's /etc/dracut.conf.d may ask for missing tools",
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})  # fmt: skip
    produced = rootfs.path(inside)
    if not produced.is_file() or produced.stat().st_size == 0:
        raise ImageError(f"dracut reported success but wrote no initrd at {inside}", path=produced)
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(produced, out)
    os.chmod(out, 0o644)  # dracut writes 0600; TFTP/HTTP servers running as a user must read it
    log.info("bootstrap initrd for %s: %s (%d bytes)", kernel_version, out, out.stat().st_size)
    return out
