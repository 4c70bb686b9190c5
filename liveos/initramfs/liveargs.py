"""Which live-boot kernel arguments the dracut inside the image understands.

dracut's dmsquash-live needs ``rd.live.image`` plus an OverlayFS overlay for a squashfs of a plain
root tree. The overlay switch was ``rd.live.overlay.overlayfs=1`` up to dracut-ng 109 (REQUIRED on
Debian's dracut 059: without it the boot ends in an emergency shell, see fixtures/notes.md). After
release 109, dracut-ng renamed the overlay options into the ``rd.overlay`` namespace (PRs #1822,
#2041, #2114, #2177: ``rd.live.overlay.overlayfs`` -> ``rd.overlay``, ``rd.live.overlay=`` ->
``rd.overlay=``, ``rd.live.overlay.readonly``/``.reset`` -> ``rd.overlay.readonly``/``.reset``); the
old names still work there but log a deprecation warning. So the spelling follows the version.
"""

from __future__ import annotations

from collections.abc import Iterable

from liveos.versions import DracutVersion

#: First dracut-ng release with the ``rd.overlay`` names (they landed after release 109).
OVERLAY_RENAME_VERSION = 110
#: dracut-ng 103 dropped the pre-"rd." legacy options (dracut-ng PR #613).
LEGACY_REMOVED_VERSION = 103

#: old name -> new name (dracut-ng >= 110)
RENAMED = {
    "rd.live.overlay.overlayfs": "rd.overlay",
    "rd.live.overlay": "rd.overlay",
    "rd.live.overlay.readonly": "rd.overlay.readonly",
    "rd.live.overlay.reset": "rd.overlay.reset",
}
#: legacy option -> its replacement (deprecated long ago, removed in dracut-ng 103)
LEGACY = {
    "liveimg": "rd.live.image",
    "overlay": "rd.live.overlay",
    "readonly_overlay": "rd.live.overlay.readonly",
    "reset_overlay": "rd.live.overlay.reset",
    "live_ram": "rd.live.ram",
    "live_dir": "rd.live.dir",
    "check": "rd.live.check",
    "rdlivedebug": "rd.live.debug",
    "rdshell": "rd.shell",
    "rdinfo": "rd.info",
    "rdbreak": "rd.break",
}
#: ``rd.live.*`` options dmsquash-live/livenet know (any dracut we target).
KNOWN_LIVE = frozenset(
    {
        "rd.live.image",
        "rd.live.dir",
        "rd.live.squashimg",
        "rd.live.ram",
        "rd.live.check",
        "rd.live.debug",
        "rd.live.overlay",
        "rd.live.overlay.size",
        "rd.live.overlay.thin",
        "rd.live.overlay.cowfs",
        "rd.live.overlay.readonly",
        "rd.live.overlay.reset",
        "rd.live.overlay.overlayfs",
        "rd.live.overlay.nouserconfirmprompt",
        "rd.live.azldownloader",
    }
)
NEW_NAMES = frozenset(RENAMED.values())


def _renamed(version: DracutVersion) -> bool:
    """Whether this dracut knows the ``rd.overlay`` names (dracut-ng after release 109)."""
    return version.major >= OVERLAY_RENAME_VERSION


def _version(dracut_version: str | DracutVersion | None) -> DracutVersion | None:
    if dracut_version is None or isinstance(dracut_version, DracutVersion):
        return dracut_version
    return DracutVersion.parse(dracut_version)


def live_args(dracut_version: str | DracutVersion | None, *, shell: bool = False) -> list[str]:
    """Arguments that make the image's dracut boot ``root=live:...`` on a RAM OverlayFS overlay.

    Unknown version: the old spelling (newer dracut still accepts it, older never knew the new).
    ``shell=True`` adds ``rd.shell`` (a root shell on failure: off by default, it is a console
    backdoor on any machine that fails to boot).
    """
    version = _version(dracut_version)
    overlay = "rd.overlay" if version is not None and _renamed(version) else "rd.live.overlay.overlayfs=1"
    args = ["rd.live.image", overlay]
    if shell:
        args.append("rd.shell")
    return args


def overlay_device_arg(dracut_version: str | DracutVersion | None, spec: str) -> str:
    """The argument that puts the overlay on a device: ``rd.live.overlay=<dev>:<path>`` (dracut 059:
    a ``<path>`` directory with ``<path>/../ovlwork`` next to it is a persistent OverlayFS), spelled
    ``rd.overlay=`` from dracut-ng 110 on."""
    version = _version(dracut_version)
    name = RENAMED["rd.live.overlay"] if version is not None and _renamed(version) else "rd.live.overlay"
    return f"{name}={spec}"


def check_args(args: Iterable[str], dracut_version: str | DracutVersion | None) -> list[str]:
    """Warnings for arguments the image's dracut would not know, or knows only as deprecated."""
    version = _version(dracut_version)
    warnings: list[str] = []
    for arg in args:
        name = arg.split("=", 1)[0]
        where = f"dracut {version}" if version else "dracut"
        if name in LEGACY:
            removed = version is not None and version.major >= LEGACY_REMOVED_VERSION
            state = "was removed in dracut-ng 103" if removed else "is deprecated"
            warnings.append(f"'{name}' {state}; use '{LEGACY[name]}'")
        elif name in RENAMED and (version is None or _renamed(version)):
            if version is not None:
                warnings.append(f"'{name}' is deprecated in {where}; use '{RENAMED[name]}'")
        elif name in NEW_NAMES and name not in KNOWN_LIVE and (version is None or not _renamed(version)):
            value = arg.partition("=")[2]
            device = name == "rd.overlay" and value not in ("", "0", "1")
            old = "rd.live.overlay" if device else next(k for k, v in RENAMED.items() if v == name)
            warnings.append(
                f"'{name}' is unknown to {where} (new in dracut-ng {OVERLAY_RENAME_VERSION}); use '{old}'"
            )
        elif name == "rd.overlayfs":
            warnings.append("'rd.overlayfs' never shipped in a dracut release; use 'rd.overlay'")
        elif name.startswith("rd.live.") and name not in KNOWN_LIVE:
            warnings.append(f"'{name}' is not a dmsquash-live option; dracut ignores it")
        elif name == "rd.live.azldownloader" and (version is None or not version.azure_linux):
            warnings.append(f"'{name}' exists only in Azure Linux's patched dracut, not in {where}")
        if name == "rd.shell" and not arg.endswith("=0"):
            warnings.append("'rd.shell' gives a root shell to anyone at the console when boot fails")
    return warnings
