"""Where an image keeps its boot chain: shim, grub, the main grub.cfg, and the EFI architecture.

Distributions differ (Azure Linux: ``EFI/BOOT`` + ``/boot/grub2``; Debian: ``EFI/debian`` +
``/boot/grub``; Fedora: ``EFI/fedora`` + BLS entries); this module finds them by looking, and says
precisely what is missing when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.errors import ImageError
from liveos.pe import pe_arch
from liveos.rootfs import RootFs
from liveos.settings import Arch

#: Where an ESP is mounted, by convention and by fstab.
ESP_MOUNTPOINTS = ("/boot/efi", "/efi", "/boot")
#: Main grub configs, most specific first.
GRUB_CONFIGS = ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
#: Real grub.cfg files are KiBs; a hostile multi-MiB one would only cost minutes of parsing.
MAX_GRUB_CFG_BYTES = 1 << 20


@dataclass(frozen=True)
class BootFiles:
    """The boot chain of an OS tree, as host paths inside its (merged) root."""

    arch: Arch
    shim: Path
    grub: Path
    mokmanager: Path | None
    grub_cfg: PurePosixPath  #: image path of the main grub config

    @property
    def grub_dir(self) -> PurePosixPath:
        """The image directory that holds the main grub config."""
        return self.grub_cfg.parent


def _efi_files(rootfs: RootFs) -> list[tuple[PurePosixPath, Path]]:
    """Every file under ``EFI/`` of the ESP as (image path, confined host path), sorted.

    FAT is case-insensitive, so is the search. A root-fs ``/boot/efi`` may hold symlinks: they
    are resolved inside the image root (a link to ``/etc/shadow`` must not read the host's).
    """
    found: list[tuple[PurePosixPath, Path]] = []
    for mountpoint in ESP_MOUNTPOINTS:
        for entry in rootfs.iterdir(mountpoint):
            if entry.name.lower() != "efi":
                continue
            base = rootfs.path(entry)
            for lexical in sorted(base.rglob("*")):
                image_path = entry / lexical.relative_to(base).as_posix()
                host = rootfs.path(image_path)
                if host.is_file():
                    found.append((image_path, host))
        if found:
            break
    return found


def _pick(files: list[tuple[PurePosixPath, Path]], names: list[str]) -> Path | None:
    """First file whose lower-cased name is in ``names``; EFI/BOOT (removable path) preferred."""
    by_name = [(image, host) for image, host in files if image.name.lower() in names]
    by_name.sort(
        key=lambda f: (f[0].parent.name.lower() != "boot", names.index(f[0].name.lower()), str(f[0]))
    )
    return by_name[0][1] if by_name else None


def find_grub_cfg(rootfs: RootFs) -> PurePosixPath:
    """The main grub config: the first that boots something (``linux`` or ``blscfg``), not a redirector."""
    seen = []
    for candidate in GRUB_CONFIGS:
        if not rootfs.is_file(candidate):
            continue
        seen.append(candidate)
        text = rootfs.read_text(candidate, limit=MAX_GRUB_CFG_BYTES)
        if any(word in text for word in ("linux", "blscfg")):
            return PurePosixPath(candidate)
    if seen:
        raise ImageError(
            f"{' and '.join(seen)} only redirect elsewhere; no main grub config boots a kernel",
            path=rootfs.path(seen[0]),
            hint="liveos needs the main grub.cfg (with 'linux' or 'blscfg' lines) under /boot",
        )
    raise ImageError(
        "no grub config found in the image (looked for " + ", ".join(GRUB_CONFIGS) + ")",
        path=rootfs.path("/boot"),
        hint="install grub for EFI and generate /boot/grub2/grub.cfg or /boot/grub/grub.cfg",
    )


def _refuse_uki_only(files: list[tuple[PurePosixPath, Path]]) -> None:
    """No grub but Unified Kernel Images (``EFI/Linux/*.efi``): name that instead of 'grub missing'."""
    ukis = [
        str(image)
        for image, _ in files
        if image.parent.name.lower() == "linux" and image.suffix.lower() == ".efi"
    ]
    if ukis:
        raise ImageError(
            f"the image boots Unified Kernel Images ({', '.join(ukis)}) without grub; "
            "liveos builds grub-based live media",
            path=files[0][1].parent,
            hint="install shim and grub for EFI in the image (with a grub.cfg under /boot), "
            "or build the image with a grub boot loader",
        )


def find_boot_files(rootfs: RootFs) -> BootFiles:
    """Locate shim, grub and the main config; the architecture comes from the image's binaries."""
    files = _efi_files(rootfs)
    arch = None
    shim = None
    for candidate_arch in Arch:
        shim = _pick(files, [candidate_arch.shim_name, f"shim{candidate_arch.value}.efi"])
        if shim is not None:
            arch = pe_arch(shim) or candidate_arch
            break
    if shim is None or arch is None:
        _refuse_uki_only(files)
        raise ImageError(
            "no shim found on the image's ESP (looked for EFI/BOOT/bootx64.efi, EFI/*/shimx64.efi and aa64)",
            path=rootfs.path("/boot/efi"),
            hint="install shim (Debian: shim-signed; Azure Linux/Fedora: shim) so the ESP holds it",
        )
    grub = _pick(files, [arch.grub_name, f"grub{arch.value}-noprefix.efi"])
    if grub is None:
        _refuse_uki_only(files)
        raise ImageError(
            f"no grub EFI binary ({arch.grub_name}) found on the image's ESP next to shim",
            path=shim.parent,
            hint="install grub for EFI (Debian: grub-efi-amd64-signed; Azure Linux: grub2-efi-binary)",
        )
    mokmanager = _pick(files, [f"mm{arch.value}.efi"])
    return BootFiles(arch=arch, shim=shim, grub=grub, mokmanager=mokmanager, grub_cfg=find_grub_cfg(rootfs))
