"""Whether the image's dracut can download a live ISO over the network (livenet), and what it needs.

dracut's systemd-networkd module never runs the netroot hooks before dracut-ng 103 (dracut-ng
issue #719, PR #388), so ``root=live:<url>`` is never downloaded. Azure Linux patches dracut (a
``liveos-artifacts-download`` service enabled by ``rd.live.azldownloader=enable``); elsewhere a
bundle with that stack would hang at boot, so it is refused at build time.
"""

from __future__ import annotations

from liveos.errors import ImageError
from liveos.initramfs.dracut import DRACUT_MODULE_DIRS, DracutInfo
from liveos.rootfs import RootFs
from liveos.versions import DracutVersion

#: dracut-ng release whose systemd-networkd module calls netroot (dracut-ng PR #388).
NETWORKD_NETROOT_FIXED = 103
#: What livenet needs on every kernel line, whatever the network stack.
NETWORK_ARGS = ("ip=dhcp", "rd.neednet=1")


def livenet_extra_args(rootfs: RootFs) -> tuple[str, ...]:
    """Kernel arguments the image's dracut needs for livenet with its network stack (or an error).

    dracut's systemd-networkd module never runs the netroot hooks before dracut-ng 103 (dracut-ng
    issue #719, PR #388), so ``root=live:<url>`` is never downloaded. Azure Linux patches dracut
    (a ``liveos-artifacts-download`` service enabled by ``rd.live.azldownloader=enable``);
    elsewhere a bundle with that stack would hang at boot, so it is refused.
    """
    info = DracutInfo.probe(rootfs)
    handler = info.network_handler(rootfs)
    if handler is None:
        raise ImageError(
            "the image's dracut has no usable network module for livenet "
            "(network-manager, network-legacy or systemd-networkd with its binary)",
            hint="install dracut-network plus dhclient (isc-dhcp-client) or NetworkManager in the image",
        )
    if handler != "systemd-networkd":
        return ()
    version = DracutVersion.parse(info.version) if info.version else None
    if version is not None and version.major >= NETWORKD_NETROOT_FIXED:
        return ()
    if _has_azl_downloader(rootfs):
        return ("rd.live.azldownloader=enable",)
    raise ImageError(
        f"dracut {info.version or '(unknown version)'} with systemd-networkd never downloads "
        "root=live:<URL> (its networkd module does not run netroot hooks before dracut-ng 103)",
        hint="install network-legacy's dhclient (isc-dhcp-client) or NetworkManager in the image, "
        "or a dracut >= 103",
    )


def _has_azl_downloader(rootfs: RootFs) -> bool:
    """Azure Linux's livenet module (its scripts mention ``azldownloader``), read confined."""
    for base in DRACUT_MODULE_DIRS:
        for module in rootfs.iterdir(base):
            if not module.name.endswith("livenet"):
                continue
            for script in rootfs.iterdir(module):
                if rootfs.is_file(script) and b"azldownloader" in rootfs.read_bytes(script):
                    return True
    return False
