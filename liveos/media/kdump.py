"""kdump's boot files: find them in the image, and keep them in the live root or say they are left out.

kdump arms a crash kernel at boot (``kexec -p``) from files of the *running* OS: the kernel
``/boot/vmlinuz-<ver>`` and a kdump initrd -- ``/boot/initramfs-<ver>kdump.img`` (kexec-tools'
kdumpctl on Azure Linux, Fedora, RHEL) or ``/var/lib/kdump/initrd.img-<ver>`` (Debian's
kdump-tools, whose ``/var/lib/kdump/vmlinuz`` links to the kernel in ``/boot``). Live media leave
``/boot`` out of the root (the boot files are on the media itself), so kdump cannot arm there.

With :attr:`~liveos.settings.KdumpBootFiles.KEEP` the root image (or the full-os initrd) keeps
exactly those files in its ``/boot``: the exclusion of ``boot/*`` becomes one exclusion per other
entry of ``/boot`` (:func:`root_excludes`). With ``NONE`` (Image Customizer's default) they are
left out, and the plan says so instead of dropping them silently. They never become boot menu
entries: a kdump initrd boots a capture kernel, not the system.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from liveos.rootfs import RootFs
from liveos.settings import KdumpBootFiles

#: kexec-tools' kdump initrd in /boot (``initramfs-6.6.1kdump.img``; some name it ``initrd-...``).
_BOOT_KDUMP = re.compile(r"(?:initramfs|initrd\.img|initrd)-(?P<version>.+?)[-_.]?kdump\.img")
#: Debian's kdump-tools keeps its initrds here, next to links to the kernel.
DEBIAN_KDUMP_DIR = PurePosixPath("/var/lib/kdump")
_DEBIAN_KDUMP = re.compile(r"initrd\.img-(?P<version>.+)")


@dataclass(frozen=True)
class KdumpFiles:
    """One kernel's kdump pair, as image paths; ``kernel`` None when the image lacks it."""

    version: str
    initrd: PurePosixPath
    kernel: PurePosixPath | None

    @property
    def boot_paths(self) -> tuple[PurePosixPath, ...]:
        """The pair's files under ``/boot`` (what the live root leaves out unless kept)."""
        return tuple(
            p for p in (self.kernel, self.initrd) if p is not None and p.parent == PurePosixPath("/boot")
        )


def find_kdump_files(rootfs: RootFs) -> tuple[KdumpFiles, ...]:
    """Every kdump initrd of the image with its kernel, by kernel version."""
    kernels = {k.version: k.image for k in rootfs.kernels()}
    found: dict[PurePosixPath, KdumpFiles] = {}
    candidates = [(entry, _BOOT_KDUMP) for entry in rootfs.iterdir("/boot")]
    candidates += [(entry, _DEBIAN_KDUMP) for entry in rootfs.iterdir(DEBIAN_KDUMP_DIR)]
    for entry, pattern in candidates:
        match = pattern.fullmatch(entry.name)
        if match is None or not rootfs.is_file(entry):
            continue
        version = match.group("version")
        found[entry] = KdumpFiles(version, entry, kernels.get(version))
    return tuple(sorted(found.values(), key=lambda k: (k.version, str(k.initrd))))


def _glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def root_excludes(rootfs: RootFs, policy: KdumpBootFiles, base: Sequence[str]) -> tuple[str, ...]:
    """``base`` (the root image's or the full-os initrd's exclusions), with ``boot/*`` narrowed to
    spare the kdump files when ``policy`` keeps them."""
    kept = (
        {p.name for k in find_kdump_files(rootfs) for p in k.boot_paths}
        if policy is KdumpBootFiles.KEEP
        else set()
    )
    if not kept or "boot/*" not in base:
        return tuple(base)
    others = sorted(e.name for e in rootfs.iterdir("/boot") if e.name not in kept)
    out: list[str] = []
    for pattern in base:
        out += [f"boot/{_glob_escape(name)}" for name in others] if pattern == "boot/*" else [pattern]
    return tuple(out)


def kdump_notes(rootfs: RootFs, policy: KdumpBootFiles) -> tuple[list[str], list[str]]:
    """(warnings, kept image paths) of ``policy`` on this image: what is left out, or kept."""
    pairs = find_kdump_files(rootfs)
    if policy is KdumpBootFiles.KEEP:
        if not pairs:
            return ["kdump_boot_files is keep, but the image has no kdump initrd (nothing to keep)"], []
        missing = [str(k.initrd) for k in pairs if k.kernel is None]
        warnings = (
            [f"kdump initrd(s) without their kernel in /boot: {', '.join(missing)}"] if missing else []
        )
        return warnings, [str(p) for k in pairs for p in k.boot_paths]
    left_out = [str(p) for k in pairs for p in k.boot_paths]
    if not left_out:
        return [], []
    return [
        "kdump boot files left out of the live root (kdump_boot_files=none): "
        + ", ".join(left_out)
        + "; kdump cannot arm on the live system (--kdump-boot-files keep keeps them)"
    ], []
