"""Every build setting, declared once: closed choices as enums, and the settings table.

Each field of :class:`LiveSettings` carries its :class:`SettingSpec` (mkosi's ``ConfigSetting``
idea): the default is the field default, and the same record gives the ``with_*`` method's
validation, the CLI flag (:func:`add_cli_arguments`), and the table in docs/usage.md
(:func:`markdown_table`). Adding a setting means adding one field here.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from liveos.cache import parse_size
from liveos.errors import UsageError
from liveos.mediafiles import MediaFile, validate_media_files
from liveos.reproducible import source_date_epoch

T = TypeVar("T")


class InitramfsMode(enum.StrEnum):
    """How the OS reaches the booted machine.

    ``BOOTSTRAP``: a small dracut initrd finds ``/liveos/rootfs.img`` (squashfs) on the media or
    downloads the ISO (PXE) and pivots into an overlay of it.
    ``FULL_OS``: the whole OS is the initrd (a compressed newc CPIO); no ``root=``, no pivot.
    """

    BOOTSTRAP = "bootstrap"
    FULL_OS = "full-os"


class Compression(enum.StrEnum):
    """Compressor of a CPIO initrd stream (each one the kernel can unpack)."""

    ZSTD = "zstd"
    GZIP = "gzip"
    XZ = "xz"
    NONE = "none"

    @property
    def default_level(self) -> int:
        """The level used when none is given (zstd 3: ~500 MB/s on 2 cores, ratio ~3.1)."""
        return _DEFAULT_LEVELS[self]

    @property
    def levels(self) -> range:
        """Levels the compressor accepts."""
        return _LEVEL_RANGES[self]


_DEFAULT_LEVELS = {Compression.ZSTD: 3, Compression.GZIP: 6, Compression.XZ: 6, Compression.NONE: 0}
_LEVEL_RANGES = {
    Compression.ZSTD: range(1, 23),
    Compression.GZIP: range(1, 10),
    Compression.XZ: range(0, 10),
    Compression.NONE: range(0, 1),
}


class Preset(enum.StrEnum):
    """Speed/size trade-off of every compressor a build drives.

    Compression level dominates build time (perf-baselines: zstd-15 squashes a 2.2 GB tree in 91 s
    where zstd-3 takes 5.5 s for +14 % size; dracut's zstd-15 of a 194 MB initrd takes 41 s
    against 0.8 s at level 3), so the default is fast and size is opt-in:

    ========== ======================= ================================ ====================
    preset     root image (squashfs)   bootstrap initrd (image's dracut) full-os initrd (CPIO)
    ========== ======================= ================================ ====================
    fast       zstd level 3            the image's compressor, fast     zstd level 3
                                       level (zstd 3, gzip 1, xz 1 ...)
    balanced   zstd level 15           the image's own setting          zstd level 10
    small      xz, x86 BCJ, 1 MiB      the image's own setting          zstd level 19
    ========== ======================= ================================ ====================
    """

    FAST = "fast"
    BALANCED = "balanced"
    SMALL = "small"

    @property
    def cpio(self) -> tuple[Compression, int]:
        """The full-os initrd's compressor and level under this preset."""
        return _CPIO_PRESETS[self]


_CPIO_PRESETS = {
    Preset.FAST: (Compression.ZSTD, 3),
    Preset.BALANCED: (Compression.ZSTD, 10),
    Preset.SMALL: (Compression.ZSTD, 19),
}


class RootFsFormat(enum.StrEnum):
    """Filesystem of the bootstrap root image (``/liveos/rootfs.img``, the same path for both).

    ``SQUASHFS``: every dracut's dmsquash-live mounts it. ``EROFS``: needs a dracut that detects
    the image's filesystem (dracut-ng, e.g. Debian 13's 106; Debian 12's 059 mounts squashfs
    only); it decompresses with less CPU than zstd squashfs, at a larger image (erofs-utils 1.5
    has lz4hc only).
    """

    SQUASHFS = "squashfs"
    EROFS = "erofs"


class SELinux(enum.StrEnum):
    """What happens to the image's SELinux mode on the media.

    ``KEEP``: as the image has it where the mode allows (bootstrap); full-os media boot with
    ``selinux=0`` because a CPIO carries no labels. ``DISABLE``: ``selinux=0`` on every entry.
    ``REQUIRE``: the media must boot with SELinux as configured in the image: an error for
    full-os media and for an image whose SELinux is disabled.
    """

    KEEP = "keep"
    DISABLE = "disable"
    REQUIRE = "require"


class KdumpBootFiles(enum.StrEnum):
    """Whether the live OS keeps the image's kdump boot files (Image Customizer's ``kdumpBootFiles``).

    kdump loads a crash kernel and its own initrd (``/boot/initramfs-<ver>kdump.img`` on Azure
    Linux and Fedora; ``/var/lib/kdump/initrd.img-<ver>`` plus ``/boot/vmlinuz-<ver>`` with
    Debian's kdump-tools) from the running OS's ``/boot``, which live media leave out of the
    root. ``NONE``: left out, and the plan lists what was left out. ``KEEP``: those files stay
    in the live root's ``/boot`` (the squashfs, or the full-os initrd), so kdump can arm.
    """

    NONE = "none"
    KEEP = "keep"


class Arch(enum.StrEnum):
    """UEFI architecture of an image, named by its EFI file-name suffix."""

    X64 = "x64"
    AA64 = "aa64"

    @property
    def shim_name(self) -> str:
        """File name of shim on removable media (``bootx64.efi``)."""
        return f"boot{self.value}.efi"

    @property
    def grub_name(self) -> str:
        """File name of grub next to shim (``grubx64.efi``)."""
        return f"grub{self.value}.efi"


class OutputKind(enum.StrEnum):
    """What a build writes."""

    ISO = "iso"  #: a hybrid ISO (CD and USB)
    PXE = "pxe"  #: a TFTP tree (folder or .tar.gz)


# -- validation ------------------------------------------------------------------------------
#: Joliet's volume identifier is 32 bytes of UCS-2: 16 characters; grub and blkid read it.
MAX_LABEL = 16
_LABEL_RE = re.compile(r"[A-Z0-9_]{1,16}")


@overload
def validate_label(label: str) -> str: ...


@overload
def validate_label(label: None) -> None: ...


def validate_label(label: str | None) -> str | None:
    """``label`` if it is a valid volume label (None: a unique one per build), else UsageError."""
    if label is None:
        return None
    if not isinstance(label, str) or not _LABEL_RE.fullmatch(label):
        raise UsageError(
            f"invalid ISO volume label {label!r}: use 1-{MAX_LABEL} characters A-Z, 0-9 and _",
            hint="e.g. LIVEOS; the same label goes to grub 'search --label' and 'root=live:CDLABEL='",
        )
    return label


def validate_kernel_args(args: Iterable[str]) -> tuple[str, ...]:
    """Each string is one kernel argument: non-empty, no control characters."""
    out = tuple(args)
    for index, arg in enumerate(out):
        if not isinstance(arg, str) or not arg.strip():
            raise UsageError(f"kernel argument {index} ({arg!r}) is empty", hint="drop it or give a value")
        if any(ord(c) < 32 or c == "\x7f" for c in arg):
            raise UsageError(
                f"kernel argument {arg!r} contains a control character",
                hint="arguments must be free of newlines, tabs and other control characters",
            )
    return out


def _enum_parser(kind: type[T]) -> Callable[[object], T]:
    def parse(value: object) -> T:
        try:
            return kind(value)  # type: ignore[call-arg]
        except ValueError:
            known = ", ".join(m.value for m in kind)  # type: ignore[attr-defined]
            raise UsageError(f"{value!r} is not one of {known}") from None

    return parse


def _level(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise UsageError(f"compression level {value!r} is not an integer")
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"compression level {value!r} is not an integer") from None


def _optional(parse: Callable[[object], T]) -> Callable[[object], T | None]:
    def parse_optional(value: object) -> T | None:
        return None if value is None else parse(value)

    return parse_optional


#: Smallest persistence partition: room for an ext4 with its journal and some changes.
MIN_PERSISTENCE = 16 * 1024 * 1024


def parse_persistence(value: object) -> int | None:
    """Bytes of the persistence partition: an int, or ``"1G"``/``"512M"`` (powers of 1024), rounded
    up to whole MiB; None for none. UsageError for anything else or a size under 16 MiB."""
    if value is None:
        return None
    size = None
    if isinstance(value, int) and not isinstance(value, bool):
        size = value
    elif isinstance(value, str):
        size = parse_size(value)
    if size is None:
        raise UsageError(
            f"persistence size {value!r} is not a size",
            hint="give bytes or a number with K, M, G or T (powers of 1024), e.g. 1G or 512M",
        )
    if size < MIN_PERSISTENCE:
        raise UsageError(
            f"persistence size {value!r} is under {MIN_PERSISTENCE >> 20} MiB",
            hint="give at least 16M (e.g. 256M or 1G)",
        )
    return -(-size // (1 << 20)) << 20


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    raise UsageError(f"{value!r} is not a boolean")


def _identity(value: T) -> T:
    return value


# -- the table -------------------------------------------------------------------------------
@dataclass(frozen=True)
class SettingSpec:
    """How one setting is validated, set from Python, exposed on the CLI and documented."""

    help: str
    method: str  #: the LiveOS method that sets it (``with_label``)
    flag: str  #: CLI flag (``--label``)
    validate: Callable[[Any], Any] = _identity  #: Python value -> checked value (UsageError)
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    repeat: bool = False  #: CLI flag may repeat; values are appended
    boolean: bool = False  #: CLI ``--flag`` / ``--no-flag``
    default_text: str | None = None  #: how the docs show the default (else repr of the value)


def _setting(default: T, spec: SettingSpec) -> T:
    return dataclasses.field(default=default, metadata={"spec": spec})


def _choices(kind: type[enum.StrEnum]) -> tuple[str, ...]:
    return tuple(m.value for m in kind)


@dataclass(frozen=True)
class LiveSettings:
    """Everything that decides what the live media look like (frozen; see the module docstring)."""

    label: str | None = _setting(
        None,
        SettingSpec(
            "ISO volume label (1-16 of A-Z 0-9 _), used by grub `search --label` and `root=live:CDLABEL=`",
            "with_label",
            "--label",
            validate_label,
            metavar="LABEL",
            default_text="unique `LIVEOS_xxxxxxxx` per build",
        ),
    )
    mode: InitramfsMode = _setting(
        InitramfsMode.BOOTSTRAP,
        SettingSpec(
            "initramfs mode: `bootstrap` (dracut initrd + squashfs root) or `full-os` (the whole "
            "OS is the initrd)",
            "with_mode",
            "--mode",
            _enum_parser(InitramfsMode),
            _choices(InitramfsMode),
        ),
    )
    kernel_args: tuple[str, ...] = _setting(
        (),
        SettingSpec(
            "arguments appended to every boot entry; each string is one argument",
            "with_kernel_args",
            "--kernel-arg",
            validate_kernel_args,
            metavar="ARG",
            repeat=True,
            default_text="none",
        ),
    )
    selinux: SELinux = _setting(
        SELinux.KEEP,
        SettingSpec(
            "SELinux on the media: `keep` the image's mode where the mode allows, `disable` "
            "(`selinux=0`), `require` (an error where it cannot be kept)",
            "with_selinux",
            "--selinux",
            _enum_parser(SELinux),
            _choices(SELinux),
        ),
    )
    preset: Preset = _setting(
        Preset.FAST,
        SettingSpec(
            "speed/size of every compressor: `fast` (zstd-3 root image, the image's initrd compressor "
            "at a fast level, zstd-3 full-os initrd), `balanced` (zstd-15, the image's own initrd "
            "setting, zstd-10), `small` (xz, the image's own, zstd-19)",
            "with_preset",
            "--preset",
            _enum_parser(Preset),
            _choices(Preset),
        ),
    )
    rootfs_format: RootFsFormat = _setting(
        RootFsFormat.SQUASHFS,
        SettingSpec(
            "bootstrap root image filesystem: `squashfs` (any dracut) or `erofs` (dracut-ng's "
            "dmsquash-live, e.g. Debian 13; not full-os mode)",
            "with_rootfs_format",
            "--rootfs",
            _enum_parser(RootFsFormat),
            _choices(RootFsFormat),
        ),
    )
    compression: Compression | None = _setting(
        None,
        SettingSpec(
            "full-os initrd compressor, overriding the preset's",
            "with_compression",
            "--compression",
            _optional(_enum_parser(Compression)),
            _choices(Compression),
            default_text="the preset's (zstd)",
        ),
    )
    compression_level: int | None = _setting(
        None,
        SettingSpec(
            "full-os initrd compression level, overriding the preset's",
            "with_compression",
            "--compression-level",
            _level,
            metavar="N",
            default_text="the preset's (zstd 3/10/19), else the compressor's default",
        ),
    )
    hybrid: bool = _setting(
        True,
        SettingSpec(
            "ISO: also write USB partition tables (GPT in the system area), so the same file boots "
            "from a USB stick",
            "with_hybrid",
            "--hybrid",
            _bool,
            boolean=True,
        ),
    )
    implant_md5: bool = _setting(
        True,
        SettingSpec(
            "ISO: implant an MD5 in the volume descriptor as `implantisomd5` does, so `checkisomd5`, "
            "`liveos verify` and the kernel argument `rd.live.check` can check the medium",
            "with_implant_md5",
            "--implant-md5",
            _bool,
            boolean=True,
        ),
    )
    bios: bool = _setting(
        True,
        SettingSpec(
            "ISO, x86-64: also boot under BIOS, as a CD and from USB (GRUB's i386-pc El Torito "
            "image and MBR code: the image's own GRUB, else the host's `grub-pc-bin`); other "
            "architectures: no effect",
            "with_bios",
            "--bios",
            _bool,
            boolean=True,
        ),
    )
    persistence: int | None = _setting(
        None,
        SettingSpec(
            "ISO written to a USB disk: a writable ext4 partition of this size after the ISO data "
            "holds dracut's overlay, so changes survive a reboot (bootstrap mode, hybrid ISO; a CD "
            "boot keeps a RAM overlay)",
            "with_persistence",
            "--persistent",
            parse_persistence,
            metavar="SIZE",
            default_text="none",
        ),
    )
    media_files: tuple[MediaFile, ...] = _setting(
        (),
        SettingSpec(
            "the caller's files on the media (ISO root, PXE TFTP root): `SRC:DEST[:MODE]`, MODE "
            "octal (default 644); DEST may not replace or shadow a boot file",
            "with_files",
            "--add-file",
            validate_media_files,
            metavar="SRC:DEST[:MODE]",
            repeat=True,
            default_text="none",
        ),
    )
    kdump_boot_files: KdumpBootFiles = _setting(
        KdumpBootFiles.NONE,
        SettingSpec(
            "kdump's kernel and initrd in the live root's /boot: `none` (left out, listed in the "
            "plan) or `keep` (kdump can arm on the live system)",
            "with_kdump_boot_files",
            "--kdump-boot-files",
            _enum_parser(KdumpBootFiles),
            _choices(KdumpBootFiles),
        ),
    )
    cache: bool = _setting(
        True,
        SettingSpec(
            "reuse build products (initrds, root images, full-os archives) whose inputs did not "
            "change, from an on-disk cache (`$LIVEOS_CACHE_DIR`, default /var/cache/liveos as root)",
            "with_cache",
            "--cache",
            _bool,
            boolean=True,
        ),
    )

    def __post_init__(self) -> None:
        level = self.compression_level
        compression = self.cpio_compression
        if self.persistence is not None and self.mode is InitramfsMode.FULL_OS:
            raise UsageError(
                "persistence needs bootstrap mode: a full-os initrd has no dracut live overlay",
                hint="drop --persistent or use --mode bootstrap",
            )
        if self.persistence is not None and not self.hybrid:
            raise UsageError(
                "persistence needs a hybrid ISO: the partition is for the USB disk written from it",
                hint="drop --persistent or --no-hybrid",
            )
        if level is not None and level not in compression.levels:
            bounds = compression.levels
            raise UsageError(
                f"compression level {level} is out of range for {compression} "
                f"({bounds.start}..{bounds.stop - 1})"
            )

    def replace(self, **changes: object) -> LiveSettings:
        """A copy with ``changes`` applied, each validated by its setting's spec."""
        checked = {}
        for name, value in changes.items():
            checked[name] = spec(name).validate(value)
        return dataclasses.replace(self, **checked)

    @property
    def cpio_compression(self) -> Compression:
        """The full-os initrd's compressor in effect (explicit, else the preset's)."""
        return self.preset.cpio[0] if self.compression is None else self.compression

    @property
    def level(self) -> int:
        """The full-os compression level in effect (explicit; else the preset's level for the
        preset's compressor, the compressor's default for another)."""
        if self.compression_level is not None:
            return self.compression_level
        compression, level = self.preset.cpio
        return level if self.cpio_compression is compression else self.cpio_compression.default_level

    def resolved_label(self) -> str:
        """The label to use: the given one, or a unique (reproducible with SOURCE_DATE_EPOCH) one."""
        if self.label:
            return self.label
        epoch = source_date_epoch()
        seed = str(epoch) if epoch is not None else f"{time.time_ns()}-{os.getpid()}"
        return "LIVEOS_" + hashlib.sha256(seed.encode()).hexdigest()[:8].upper()

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable values, keyed by setting name."""
        out: dict[str, object] = {}
        for name, _spec, _default in table():
            value = getattr(self, name)
            if isinstance(value, tuple):
                out[name] = [_jsonable(v) for v in value]
            else:
                out[name] = value
        return out


def _jsonable(value: object) -> object:
    """A setting's item as JSON: a media file as its destination, source (or size) and mode."""
    if isinstance(value, MediaFile):
        origin: dict[str, object] = (
            {"source": str(value.source)}
            if value.source is not None
            else {"content_size": len(value.content or b"")}
        )
        return {"destination": value.destination, **origin, "mode": f"{value.file_mode:04o}"}
    return value


def table() -> list[tuple[str, SettingSpec, object]]:
    """(name, spec, default) of every setting, in declaration order."""
    return [(f.name, f.metadata["spec"], f.default) for f in dataclasses.fields(LiveSettings)]


def spec(name: str) -> SettingSpec:
    """The spec of one setting; UsageError for an unknown name."""
    for field in dataclasses.fields(LiveSettings):
        if field.name == name:
            found: SettingSpec = field.metadata["spec"]
            return found
    known = ", ".join(n for n, _, _ in table())
    raise UsageError(f"unknown setting {name!r}", hint=f"known settings: {known}")


# -- the CLI and the docs, from the table ------------------------------------------------------
def add_cli_arguments(parser: argparse._ActionsContainer) -> None:
    """One flag per setting; every default is None (= not given), so the library's defaults rule."""
    for name, item, default in table():
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": _cli_help(item, default)}
        if item.boolean:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif item.repeat:
            kwargs.update(action="append", metavar=item.metavar)
        else:
            kwargs.update(choices=item.choices, metavar=item.metavar)
        parser.add_argument(item.flag, **kwargs)


def from_cli(args: argparse.Namespace, base: LiveSettings | None = None) -> LiveSettings:
    """``base`` (default settings) with every setting the command line gave."""
    settings = base or LiveSettings()
    changes: dict[str, object] = {}
    for name, item, _default in table():
        value = getattr(args, name, None)
        if value is None:
            continue
        if item.repeat:
            value = (*getattr(settings, name), *value)
        changes[name] = value
    return settings.replace(**changes)


def _default_text(item: SettingSpec, default: object) -> str:
    if item.default_text is not None:
        return item.default_text
    if isinstance(default, bool):
        return "on" if default else "off"
    return f"`{default}`"


def _cli_help(item: SettingSpec, default: object) -> str:
    return f"{item.help} (default: {_default_text(item, default)})".replace("`", "")


def markdown_table() -> str:
    """The settings table of docs/usage.md (a test keeps the docs in sync with this)."""
    rows = ["| setting | Python | CLI | default | meaning |", "|---|---|---|---|---|"]
    for name, item, default in table():
        flag = f"`{item.flag}`/`--no-{item.flag[2:]}`" if item.boolean else f"`{item.flag}`"
        rows.append(
            f"| `{name}` | `{item.method}()` | {flag} | {_default_text(item, default)} | {item.help} |"
        )
    return "\n".join(rows) + "\n"


__all__ = [
    "Arch",
    "Compression",
    "InitramfsMode",
    "KdumpBootFiles",
    "LiveSettings",
    "MediaFile",
    "OutputKind",
    "Preset",
    "RootFsFormat",
    "SELinux",
    "SettingSpec",
    "add_cli_arguments",
    "from_cli",
    "markdown_table",
    "parse_persistence",
    "spec",
    "table",
    "validate_kernel_args",
    "validate_label",
]
