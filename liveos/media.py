"""Staging of live media: which file goes where on the ISO / PXE tree, and the edited grub.cfg.

The media layout is one plan shared by :class:`~liveos.iso.IsoWriter` and
:class:`~liveos.pxe.PxeBundle`: a :class:`MediaTree` maps media paths to host files or bytes.
Nothing here writes an ISO; everything here is decided from the customised OS tree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from liveos.bootfiles import BootFiles
from liveos.errors import ImageError, InternalError
from liveos.grub import GrubConfig, GrubEnv, KernelArgs, inline_bls, load_entries
from liveos.liveargs import live_args
from liveos.rootfs import RootFs
from liveos.settings import InitramfsMode

log = logging.getLogger("liveos")

#: Where the bootstrap root image sits on the media (dracut: rd.live.dir + rd.live.squashimg).
SQUASHFS_PATH = PurePosixPath("/liveos/rootfs.img")
#: The single initrd of full-os media.
FULL_OS_INITRD = PurePosixPath("/boot/initrd.img")
#: El Torito EFI image on the media.
EFIBOOT_PATH = PurePosixPath("/boot/efiboot.img")
#: Removable-media EFI directory (firmware looks here; so do Rufus and friends).
EFI_BOOT_DIR = PurePosixPath("/EFI/BOOT")


@dataclass
class MediaTree:
    """Files of the media: media path -> host file (copied/streamed) or bytes (generated)."""

    files: dict[PurePosixPath, Path | bytes] = field(default_factory=dict)

    def add(self, media_path: str | PurePosixPath, source: Path | bytes) -> None:
        path = PurePosixPath("/", media_path)
        if ".." in path.parts:
            raise ImageError(f"media path {media_path} escapes the media root")
        self.files[path] = source

    def __iter__(self) -> Iterator[tuple[PurePosixPath, Path | bytes]]:
        return iter(sorted(self.files.items()))


@dataclass(frozen=True)
class BootEntryFiles:
    """Kernels and initrds a grub config boots, as effective image paths."""

    kernels: tuple[PurePosixPath, ...]
    initrds: tuple[PurePosixPath, ...]


def grub_redirector(label: str, grub_dir: PurePosixPath) -> bytes:
    """A tiny grub.cfg that finds the media by its label and hands over to the main config.

    Placed where a grub binary may look first: ``EFI/BOOT/grub.cfg`` (Debian's signed grub falls
    back to ``$cmdpath/grub.cfg``; on a USB stick that is inside the ESP image) and
    ``/boot/grub/grub.cfg`` when the main config lives in ``/boot/grub2``.
    """
    return (
        f"search --no-floppy --set=root --label {label}\n"
        f"set prefix=($root){grub_dir}\n"
        "configfile $prefix/grub.cfg\n"
    ).encode()


def kernel_version_of(name: str, versions: list[str]) -> str | None:
    """The kernel version a boot file name refers to (longest match, so 6.6.10.1 beats 6.6.10)."""
    matches = [v for v in versions if re.search(rf"(^|[-_]){re.escape(v)}($|[._-])", name)]
    return max(matches, key=len) if matches else None


def render_bls(text: str, rootfs: RootFs, grub_dir: PurePosixPath, *, path: PurePosixPath) -> str:
    """``text`` with its ``blscfg`` command replaced by the image's BLS entries as ``menuentry`` blocks.

    Live media boot with any grub then, also one built without the blscfg module (Debian's) and
    over TFTP, which cannot list ``/boot/loader/entries``; and every grub.cfg edit applies to the
    entries. ``kernelopts`` from grubenv is inlined (the media carry no writable grubenv).
    """
    config = GrubConfig.parse(text, path=str(path))
    if not config.has_blscfg():
        return text
    entries = load_entries(rootfs.path("/boot/loader/entries"))
    kernelopts = None
    grubenv = grub_dir / "grubenv"
    if rootfs.path(grubenv).is_file():
        value = GrubEnv.parse(rootfs.read_bytes(grubenv), path=str(grubenv)).get("kernelopts")
        kernelopts = KernelArgs.parse(value, path=str(grubenv)) if value else None
    inline_bls(config, entries, kernelopts)
    return config.render()


def edit_grub_config(
    text: str,
    *,
    path: PurePosixPath,
    mode: InitramfsMode,
    label: str,
    boot_separate: bool,
    dracut_version: str | None,
    user_args: tuple[str, ...],
    disable_selinux: bool,
    pxe: bool = False,
    pxe_url: str | None = None,
) -> GrubConfig:
    """Turn the OS's own grub.cfg into the live media's: find the media, boot the live root.

    For PXE (``pxe=True``) there is no media to search for (grub's root is the TFTP server) and a
    bootstrap root is the ISO that dracut's livenet downloads from ``pxe_url``. BLS entries must
    have been rendered in first (:func:`render_bls`).
    """
    config = GrubConfig.parse(text, path=str(path))
    if config.has_blscfg():
        raise InternalError(f"{path} still runs blscfg: render_bls() must run before the edits")
    if pxe:
        config.remove_search()
    else:
        config.set_search_label(label)
    if boot_separate:
        config.prefix_boot_paths("/boot")
    if mode is InitramfsMode.BOOTSTRAP:
        if pxe:
            if not pxe_url:
                raise InternalError("a bootstrap PXE config needs the URL of the ISO")
            config.set_root_live(str(SQUASHFS_PATH), url=pxe_url)
            config.append_args(["ip=dhcp", "rd.neednet=1"])
        else:
            config.set_root_live(str(SQUASHFS_PATH), label=label)
        config.append_args(live_args(dracut_version))
    else:
        config.remove_root()
        config.set_initrd(str(FULL_OS_INITRD))
    if disable_selinux:
        config.disable_selinux()
    if user_args:
        config.append_args(user_args)
    return config


def stage_boot_chain(tree: MediaTree, boot: BootFiles, label: str) -> None:
    """shim + grub (+ MokManager) in EFI/BOOT, and the redirector configs grub may read first."""
    tree.add(EFI_BOOT_DIR / boot.arch.shim_name, boot.shim)
    tree.add(EFI_BOOT_DIR / boot.arch.grub_name, boot.grub)
    if boot.mokmanager is not None:
        tree.add(EFI_BOOT_DIR / f"mm{boot.arch.value}.efi", boot.mokmanager)
    redirector = grub_redirector(label, boot.grub_dir)
    tree.add(EFI_BOOT_DIR / "grub.cfg", redirector)
    if boot.grub_dir != PurePosixPath("/boot/grub"):
        tree.add("/boot/grub/grub.cfg", redirector)
    # Debian's signed grub looks for this file to find the CD when its own prefix is missing.
    tree.add("/.disk/info", f"liveos {label}\n".encode())


def stage_grub_dir(tree: MediaTree, rootfs: RootFs, boot: BootFiles) -> None:
    """Copy the grub dir's other files (grubenv, fonts, themes) so the config finds what it loads."""
    grub_dir = rootfs.path(boot.grub_dir)
    for host in sorted(grub_dir.rglob("*")):
        if host.is_file() and not host.is_symlink() and host.name != "grub.cfg":
            tree.add(boot.grub_dir / host.relative_to(grub_dir).as_posix(), host)


def efiboot_files(tree: MediaTree) -> dict[str, Path | bytes]:
    """What goes into the El Torito FAT image: the EFI/BOOT directory of the media."""
    return {str(path.relative_to("/")): source for path, source in tree if path.parent == EFI_BOOT_DIR}
