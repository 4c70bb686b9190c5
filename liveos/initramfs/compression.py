"""Which compressor the image's dracut uses for an initrd, and at which level under each preset.

The kernel of the image must be able to unpack its initrd, so liveos never changes the *kind* of
compressor the image chose; it only changes the level. Under the ``fast`` preset dracut gets
``--compress "<the image's compressor> <a fast level>"`` (zstd -3 instead of dracut's -15: 0.8 s
against 41 s for a 194 MB initrd, +15 % size); ``balanced`` and ``small`` keep the image's own
setting. The choice is read from the image's dracut configuration the way dracut reads it
(``/etc/dracut.conf``, then the ``*.conf`` drop-ins of ``/usr/lib/dracut/dracut.conf.d`` and
``/etc/dracut.conf.d`` in name order, ``/etc`` winning on equal names; the last ``compress=``
wins). Unset, dracut takes the first compressor it finds of pigz, gzip, lz4, lzop, ...; so does
this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from liveos.rootfs import CONFIG_LIMIT, RootFs
from liveos.settings import Preset

#: dracut's configuration files, in the order dracut reads them (drop-ins merged below).
MAIN_CONF = PurePosixPath("/etc/dracut.conf")
DROPIN_DIRS = (PurePosixPath("/usr/lib/dracut/dracut.conf.d"), PurePosixPath("/etc/dracut.conf.d"))
#: What dracut 059..106 runs for each compressor name, and the level that implies.
DRACUT_LEVELS = {
    "zstd": 15,
    "gzip": 9,
    "pigz": 9,
    "xz": 6,
    "lzma": 9,
    "lz4": 9,
    "lzop": 9,
    "bzip2": 9,
    "lbzip2": 9,
}
#: The fast command per compressor (same format the kernel unpacks: lz4 legacy frames, xz with
#: CRC32 checks and a 1 MiB dictionary, as dracut itself writes them) and its level.
FAST = {
    "zstd": ("zstd -3 -q -T0", 3),
    "gzip": ("gzip -n -1", 1),
    "pigz": ("pigz -1 -n -T -R", 1),
    "xz": ("xz -1 --check=crc32 --lzma2=dict=1MiB -T0", 1),
    "lzma": ("lzma -1 -T0", 1),
    "lz4": ("lz4 -l -1", 1),
    "lzop": ("lzop -1", 1),
    "bzip2": ("bzip2 -1", 1),
    "lbzip2": ("lbzip2 -1", 1),
}
#: dracut's own search order when nothing is configured (dracut.sh, "check all known compressors").
AUTO_ORDER = ("pigz", "gzip", "lz4", "lzop")
ALIASES = {"lzo": "lzop", "cat": "none"}
BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")
_COMPRESS = re.compile(r"""^\s*compress\s*=\s*(?:"([^"]*)"|'([^']*)'|(\S*))""", re.MULTILINE)
_LEVEL = re.compile(r"(?:^|\s)-(\d{1,2})(?=\s|$)")


@dataclass(frozen=True)
class InitrdCompression:
    """How the image's dracut will compress an initrd in this build."""

    name: str  #: the compressor (``zstd``, ``gzip``, ``xz``, ...; ``none``)
    level: int | None  #: its level, when known
    command: str | None  #: what liveos passes as ``--compress``; None: the image's own setting
    configured: str | None  #: the image's ``compress=`` value, None if unset

    def describe(self) -> str:
        """``zstd level 3 (fast preset)`` or ``zstd level 15 (the image's setting)``."""
        level = f" level {self.level}" if self.level is not None else ""
        why = "fast preset" if self.command else "the image's setting"
        return f"{self.name}{level} ({why})"


def configured_compress(rootfs: RootFs) -> str | None:
    """The image's dracut ``compress=`` value (the last one dracut reads), None if unset."""
    files = [MAIN_CONF] if rootfs.is_file(MAIN_CONF) else []
    dropins: dict[str, PurePosixPath] = {}
    for directory in DROPIN_DIRS:  # /etc last: it replaces a drop-in of the same name
        for entry in rootfs.iterdir(directory):
            if entry.suffix == ".conf" and rootfs.is_file(entry):
                dropins[entry.name] = entry
    files += [dropins[name] for name in sorted(dropins)]
    value = None
    for path in files:
        for match in _COMPRESS.finditer(rootfs.read_text(path, limit=CONFIG_LIMIT)):
            value = next(g for g in match.groups() if g is not None)
    return value or None


def _program(command: str) -> str:
    name = PurePosixPath(command.split()[0]).name if command.split() else ""
    return ALIASES.get(name, name)


def _installed(rootfs: RootFs, program: str) -> bool:
    return any(rootfs.is_file(f"{directory}/{program}") for directory in BIN_DIRS)


def initrd_compression(rootfs: RootFs, preset: Preset) -> InitrdCompression:
    """The compressor and level of the bootstrap initrd under ``preset`` (see the module doc)."""
    configured = configured_compress(rootfs)
    if configured is not None:
        name = _program(configured)
    else:
        name = next((p for p in AUTO_ORDER if _installed(rootfs, p)), "")
    if name in FAST and not _installed(rootfs, name):
        return InitrdCompression(name, None, None, configured)  # dracut falls back on its own
    if preset is Preset.FAST and name in FAST:
        command, fast_level = FAST[name]
        return InitrdCompression(name, fast_level, command, configured)
    explicit = _LEVEL.search(configured or "")
    if explicit is not None and configured is not None and " " in configured.strip():
        level: int | None = int(explicit.group(1))
    else:
        level = DRACUT_LEVELS.get(name)
    return InitrdCompression(name or "unknown", level, None, configured)
