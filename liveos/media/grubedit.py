"""The live media's grub.cfg: the OS's own config, edited to find the media and boot the live root.

One edit serves every output: on an ISO, ``search`` finds the media by its label and a bootstrap
root is ``live:CDLABEL=<label>``; over the network (:class:`NetworkRoot`) there is no media to
search for (grub's root is the TFTP server) and a bootstrap root is the ISO that dracut's
livenet downloads from a URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from liveos.errors import InternalError
from liveos.grub import BlsEntry, GrubConfig, GrubEnv, KernelArgs, inline_bls
from liveos.initramfs.liveargs import live_args
from liveos.initramfs.livenet import NETWORK_ARGS
from liveos.layout import FULL_OS_INITRD, SQUASHFS_PATH
from liveos.media.persistence import Persistence, apply_to_grub, drop_argument, grub_argument, strip_prologue
from liveos.rootfs import CONFIG_LIMIT, RootFs
from liveos.settings import InitramfsMode

#: Where BLS entries live in the image.
BLS_ENTRIES_DIR = PurePosixPath("/boot/loader/entries")


@dataclass(frozen=True)
class NetworkRoot:
    """A network boot: no media to search; a bootstrap root is downloaded from ``url``."""

    url: str | None  #: where livenet downloads the ISO (bootstrap); None for full-os
    extra_args: tuple[str, ...] = ()  #: what the image's network stack needs besides ip=dhcp


@dataclass(frozen=True)
class GrubEdit:
    """Everything the live edit of a grub.cfg depends on."""

    mode: InitramfsMode
    label: str
    boot_separate: bool  #: /boot is its own filesystem: kernel paths get a /boot prefix
    dracut_version: str | None
    user_args: tuple[str, ...]
    disable_selinux: bool
    network: NetworkRoot | None = None
    persistence: Persistence | None = None  #: an ISO's USB persistence (bootstrap only)


def edit_grub_config(text: str, edit: GrubEdit, *, path: PurePosixPath) -> GrubConfig:
    """Turn the OS's own grub.cfg into the live media's: find the media, boot the live root.

    BLS entries must have been rendered in first (:func:`render_bls`).
    """
    config = GrubConfig.parse(strip_prologue(text), path=str(path))
    if config.has_blscfg():
        raise InternalError(f"{path} still runs blscfg: render_bls() must run before the edits")
    network = edit.network
    if network is None:
        config.set_search_label(edit.label)
    else:
        config.remove_search()
    if edit.boot_separate:
        config.prefix_boot_paths("/boot")
    if edit.mode is InitramfsMode.BOOTSTRAP:
        if network is None:
            config.set_root_live(str(SQUASHFS_PATH), label=edit.label)
        else:
            if not network.url:
                raise InternalError("a bootstrap network config needs the URL of the ISO")
            config.set_root_live(str(SQUASHFS_PATH), url=network.url)
            config.append_args([*NETWORK_ARGS, *network.extra_args])
        config.append_args(live_args(edit.dracut_version))
    else:
        config.remove_root().set_initrd(str(FULL_OS_INITRD))
    persistent = edit.persistence is not None and network is None and edit.mode is InitramfsMode.BOOTSTRAP
    if persistent:
        config.append_args([grub_argument()])
    else:
        drop_argument(config)  # media a persistent build made, rebuilt without it
    if edit.disable_selinux:
        config.disable_selinux()
    if edit.user_args:
        config.append_args(edit.user_args)
    if persistent:
        text = apply_to_grub(config.render(), edit.persistence, edit.dracut_version)
        config = GrubConfig.parse(text, path=str(path))
    return config


def load_bls_entries(rootfs: RootFs) -> list[BlsEntry]:
    """Every ``*.conf`` in ``/boot/loader/entries``, read through :class:`RootFs` (confined)."""
    return [
        BlsEntry.parse(rootfs.read_text(entry, limit=CONFIG_LIMIT), path=str(entry))
        for entry in rootfs.iterdir(BLS_ENTRIES_DIR)
        if entry.suffix == ".conf" and rootfs.is_file(entry)
    ]


def render_bls(text: str, rootfs: RootFs, grub_dir: PurePosixPath, *, path: PurePosixPath) -> str:
    """``text`` with its ``blscfg`` command replaced by the image's BLS entries as ``menuentry`` blocks.

    Live media boot with any grub then, also one built without the blscfg module (Debian's) and
    over TFTP, which cannot list ``/boot/loader/entries``; and every grub.cfg edit applies to the
    entries. ``kernelopts`` from grubenv is inlined (the media carry no writable grubenv).
    """
    config = GrubConfig.parse(text, path=str(path))
    if not config.has_blscfg():
        return text
    kernelopts = None
    grubenv = grub_dir / "grubenv"
    if rootfs.is_file(grubenv):
        value = GrubEnv.parse(rootfs.read_bytes(grubenv, limit=CONFIG_LIMIT), path=str(grubenv)).get(
            "kernelopts"
        )
        kernelopts = KernelArgs.parse(value, path=str(grubenv)) if value else None
    inline_bls(config, load_bls_entries(rootfs), kernelopts)
    return config.render()


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


def network_redirector(where: PurePosixPath, grub_dir: PurePosixPath) -> bytes:
    """A grub.cfg that hands over to the main config on the same (TFTP) device, and says so."""
    main = grub_dir / "grub.cfg"
    return (
        f'echo "liveos: PXE grub config {where} -> {main}"\n'
        f"set prefix=($root){grub_dir}\n"
        f"configfile $prefix/grub.cfg\n"
    ).encode()
