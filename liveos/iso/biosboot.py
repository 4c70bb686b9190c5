"""BIOS boot for the hybrid ISO: GRUB's i386-pc El Torito image, and MBR code for USB disks.

The UEFI path (shim -> the image's signed grub -> kernel) is never touched; BIOS gets its own
GRUB, the way ``grub-mkrescue`` + ``xorriso`` build one:

* ``<grub_dir>/i386-pc/eltorito.img`` (``grub-mkimage -O i386-pc-eltorito``: ``cdboot.img`` +
  ``diskboot.img`` + the core) is the *first* (default) El Torito entry: platform 0x00, no
  emulation, 4 x 512 bytes loaded, with a boot info table. Its embedded config finds the media by
  label and sets the prefix to the directory of the media's main grub.cfg, so both firmwares
  read the same grub.cfg; ``<grub_dir>/i386-pc`` holds the modules its ``insmod`` lines load.
* For a USB disk, GRUB's ``boot_hybrid.img`` is the MBR's boot code (bytes 0..439, the
  partition table is untouched), with the 64-bit LE address in 512-byte sectors of the core's
  ``diskboot.img`` at byte 0x1b0 (El Torito image start x 4 + 4: xorriso's ``--grub2-mbr``), and
  ``diskboot.img``'s block list points at the core that follows it (start x 4 + 5, at byte 2548
  of the image: xorriso's ``--grub2-boot-info``).

Which GRUB: the image's own ``/usr/lib/grub/i386-pc`` when it is complete (read through
:class:`~liveos.rootfs.RootFs`, each file size-capped), else the build host's (Debian package
``grub-pc-bin``); the plan says which (:attr:`BiosGrub.description`). ``grub-mkimage`` is always
the host's (``grub-common``). Only x86-64 media get BIOS boot.

One grub.cfg serves both firmwares: ``linuxefi``/``initrdefi`` exist only in EFI builds of
(Fedora's) GRUB, so :func:`bios_grub_cfg` guards each with ``$grub_platform``.
"""

from __future__ import annotations

import enum
import re
import shutil
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from liveos.errors import HostError, ImageError, InternalError
from liveos.grub import GrubConfig
from liveos.plan import Origin, PlannedFile
from liveos.rootfs import RootFs
from liveos.run import run

#: Where GRUB's i386-pc platform files live, in an image (grub-pc-bin, grub2-pc-modules) and here.
PLATFORM_DIR = PurePosixPath("/usr/lib/grub/i386-pc")
HOST_PLATFORM_DIR = Path(str(PLATFORM_DIR))
#: The Debian package of the host's i386-pc GRUB (tools/setup-host.sh installs it).
HOST_PACKAGE = "grub-pc-bin"
#: Product id (and file name on the media) of the El Torito BIOS image.
BIOS_PRODUCT = "eltorito.img"
#: Modules in the core image: enough to read the media as a CD or a USB disk and find it by label.
CORE_MODULES = ("biosdisk", "iso9660", "part_gpt", "part_msdos", "search")
#: Boot images grub-mkimage and the MBR need, shipped in the media's i386-pc directory too.
BOOT_IMAGES = (
    "boot.img",
    "boot_hybrid.img",
    "cdboot.img",
    "diskboot.img",
    "kernel.img",
    "lzma_decompress.img",
)
#: What makes a platform directory usable for BIOS boot of the media.
REQUIRED = (*BOOT_IMAGES, "moddep.lst", "normal.mod", "linux.mod", *(f"{m}.mod" for m in CORE_MODULES))
#: A GRUB module is tens of KiB (normal.mod ~115 KiB); larger files are refused, not read.
FILE_LIMIT = 1 << 20
TOTAL_LIMIT = 32 << 20
#: El Torito: sectors (512 bytes) the BIOS loads of a no-emulation image: cdboot.img's 2 KiB.
LOAD_SECTORS = 4
#: The boot code area of the MBR (the disk signature follows at 440).
MBR_CODE_SIZE = 440
#: Where boot_hybrid.img reads the 512-byte LBA of diskboot.img (xorriso --grub2-mbr).
MBR_LBA_OFFSET = 0x1B0
#: Where diskboot.img keeps the start of its block list (xorriso --grub2-boot-info).
BLOCKLIST_OFFSET = 2548
_BOOT_INFO = struct.Struct("<IIII")  #: at byte 8: PVD LBA, file LBA, file length, checksum
_CD_SECTOR = 2048
_SHIPPED = re.compile(r"[A-Za-z0-9_.-]+\.(mod|lst)|modinfo\.sh")
_VERSION = re.compile(r"""^grub_package_version=["']?([^"'\n]+)""", re.MULTILINE)
#: EFI-only loader commands -> what BIOS GRUB calls them.
EFI_ONLY = {"linuxefi": "linux", "initrdefi": "initrd"}


class GrubSource(enum.StrEnum):
    """Whose i386-pc GRUB boots the media under BIOS."""

    IMAGE = "image"  #: the image's own (``/usr/lib/grub/i386-pc`` in it)
    HOST = "host"  #: the build host's (``grub-pc-bin``), when the image has none


@dataclass(frozen=True)
class BiosGrub:
    """The i386-pc GRUB a build uses: whose, which version, and its files on the media."""

    source: GrubSource
    version: str
    grub_dir: PurePosixPath  #: the media directory of the main grub.cfg (the core's prefix)
    files: tuple[PlannedFile, ...]  #: ``<grub_dir>/i386-pc/*``, the El Torito image included
    missing: str = ""  #: why the image's GRUB is not used (HOST only)

    @property
    def description(self) -> str:
        """``BIOS: host GRUB 2.06-13 (grub-pc-bin), the image has no i386-pc GRUB``."""
        if self.source is GrubSource.IMAGE:
            return f"BIOS: the image's GRUB {self.version} (i386-pc)"
        return f"BIOS: host GRUB {self.version} ({HOST_PACKAGE}), {self.missing}"

    @property
    def module_dir(self) -> PurePosixPath:
        """``<grub_dir>/i386-pc`` on the media."""
        return self.grub_dir / "i386-pc"


def find_bios_grub(rootfs: RootFs, grub_dir: PurePosixPath) -> BiosGrub:
    """The i386-pc GRUB for media whose main grub.cfg is in ``grub_dir``: the image's if complete,
    else the host's (HostError naming ``grub-pc-bin`` when the host has none either)."""
    module_dir = grub_dir / "i386-pc"
    missing = _image_missing(rootfs)
    if not missing:
        files, total = [], 0
        for name in sorted(n.name for n in rootfs.iterdir(PLATFORM_DIR)):
            if _ships(name) and rootfs.is_file(PLATFORM_DIR / name):
                source = PLATFORM_DIR / name
                data = rootfs.read_bytes(source, limit=FILE_LIMIT)
                total += len(data)
                if total > TOTAL_LIMIT:
                    raise ImageError(
                        f"{PLATFORM_DIR} in the image holds over {TOTAL_LIMIT} bytes of GRUB files"
                    )
                files.append(PlannedFile(module_dir / name, Origin.IMAGE, str(source), len(data), data=data))
        version = _version(next((f.data for f in files if f.path.name == "modinfo.sh"), None))
        return BiosGrub(GrubSource.IMAGE, version, grub_dir, (*files, _eltorito(module_dir)))
    host = [name for name in REQUIRED if not (HOST_PLATFORM_DIR / name).is_file()]
    if host:
        raise HostError(
            f"no GRUB for BIOS boot: {missing}, and this host has none either "
            f"(no {HOST_PLATFORM_DIR / host[0]})",
            hint=f"apt-get install {HOST_PACKAGE}, or build without BIOS boot (--no-bios)",
        )
    files = [_host_file(module_dir, p) for p in sorted(HOST_PLATFORM_DIR.iterdir()) if _ships(p.name)]
    modinfo = HOST_PLATFORM_DIR / "modinfo.sh"
    version = _version(modinfo.read_bytes() if modinfo.is_file() else None)
    return BiosGrub(GrubSource.HOST, version, grub_dir, (*files, _eltorito(module_dir)), missing)


def _host_file(module_dir: PurePosixPath, path: Path) -> PlannedFile:
    """A host file on the media (GENERATED: liveos adds it; the image has no such file)."""
    source = f"host {HOST_PACKAGE}: {path}"
    return PlannedFile(module_dir / path.name, Origin.GENERATED, source, path.stat().st_size, host=path)


def _image_missing(rootfs: RootFs) -> str:
    """Why the image's i386-pc GRUB cannot be used ("" when it can)."""
    if not rootfs.is_dir(PLATFORM_DIR):
        return "the image has no i386-pc GRUB"
    absent = [name for name in REQUIRED if not rootfs.is_file(PLATFORM_DIR / name)]
    if absent:
        return f"the image's i386-pc GRUB lacks {', '.join(absent)}"
    return ""


def _ships(name: str) -> bool:
    return name in BOOT_IMAGES or bool(_SHIPPED.fullmatch(name))


def _version(modinfo: bytes | None) -> str:
    found = _VERSION.search(modinfo.decode("utf-8", "replace")) if modinfo else None
    return found.group(1) if found else "(unknown version)"


def _eltorito(module_dir: PurePosixPath) -> PlannedFile:
    return PlannedFile(module_dir / BIOS_PRODUCT, Origin.BUILT, BIOS_PRODUCT, 40 * 1024, estimated=True)


def bios_files(
    files: tuple[PlannedFile, ...] | list[PlannedFile],
) -> tuple[PlannedFile | None, list[PlannedFile]]:
    """The El Torito BIOS image of a plan's ``files`` (None: no BIOS boot) and the other files of
    its directory (what grub-mkimage reads)."""
    image = next((f for f in files if f.origin is Origin.BUILT and f.source == BIOS_PRODUCT), None)
    if image is None:
        return None, []
    return image, [f for f in files if f.path.parent == image.path.parent and f is not image]


def build_bios_image(
    platform: Mapping[str, Path | bytes], scratch: Path, *, label: str, grub_dir: PurePosixPath
) -> Path:
    """Run ``grub-mkimage -O i386-pc-eltorito`` on the ``platform`` files (name -> content) and
    return the image; its embedded config finds the media by ``label`` and sets the prefix to
    ``grub_dir`` on it."""
    work = scratch / "bios"
    directory = work / "i386-pc"
    directory.mkdir(parents=True)
    for name, content in platform.items():
        target = directory / name
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            shutil.copyfile(content, target)
    load_cfg = work / "load.cfg"
    load_cfg.write_text(f"search --no-floppy --set=root --label {label}\nset prefix=($root){grub_dir}\n")
    out = work / BIOS_PRODUCT
    run(
        ["grub-mkimage", "-O", "i386-pc-eltorito", "-d", directory, "-p", str(grub_dir), "-c", load_cfg,
         "-o", out, *CORE_MODULES],
        step="building the BIOS El Torito image (grub-mkimage)",
        hint="the i386-pc GRUB files may be incomplete; build with --no-bios to leave BIOS out",
    )  # fmt: skip
    if out.stat().st_size <= _CD_SECTOR + 512:
        raise InternalError(f"grub-mkimage wrote a {out.stat().st_size}-byte El Torito image")
    return out


def mbr_boot_code(boot_hybrid: bytes, image_offset: int) -> bytes:
    """The MBR's 440 bytes of boot code: ``boot_hybrid.img`` pointed at the El Torito image at
    byte ``image_offset`` of the ISO (its diskboot.img: 512-byte LBA = offset / 512 + 4)."""
    if len(boot_hybrid) < MBR_CODE_SIZE or image_offset % _CD_SECTOR:
        raise InternalError(f"bad boot_hybrid.img ({len(boot_hybrid)} bytes) or offset {image_offset}")
    lba = image_offset // 512 + LOAD_SECTORS
    code = bytearray(boot_hybrid[:MBR_CODE_SIZE])
    struct.pack_into("<Q", code, MBR_LBA_OFFSET, lba)
    return bytes(code)


def patch_boot_image(fp: BinaryIO, image_offset: int, image_size: int) -> None:
    """Point diskboot.img's block list (byte 2548 of the El Torito image at ``image_offset`` of the
    written ISO ``fp``) at the core behind it, and fix the boot info table's checksum."""
    if image_size <= BLOCKLIST_OFFSET + 8:
        raise InternalError(f"the BIOS El Torito image has only {image_size} bytes")
    fp.seek(image_offset)
    data = bytearray(fp.read(image_size))
    struct.pack_into("<Q", data, BLOCKLIST_OFFSET, image_offset // 512 + LOAD_SECTORS + 1)
    struct.pack_into("<I", data, 8 + 12, boot_info_checksum(bytes(data)))
    fp.seek(image_offset)
    fp.write(data)


def boot_info_checksum(image: bytes) -> int:
    """El Torito boot info table checksum: the 32-bit LE words of the image from byte 64 on."""
    body = image[64:]
    body += b"\0" * (-len(body) % 4)
    words: tuple[int, ...] = struct.unpack(f"<{len(body) // 4}I", body)
    return sum(words) & 0xFFFFFFFF


@dataclass(frozen=True)
class BiosImageFacts:
    """What the BIOS El Torito image at ``offset`` says about itself (see :func:`read_bios_image`)."""

    offset: int
    boot_info: tuple[int, int, int, int]  #: PVD LBA, image LBA, image length, checksum
    blocklist_start: int  #: diskboot.img's first 512-byte LBA of the core
    checksum: int  #: the boot info checksum the image's bytes give


def read_bios_image(fp: BinaryIO, offset: int, size: int) -> BiosImageFacts:
    """The boot info table, block list start and real checksum of the image at ``offset``."""
    fp.seek(offset)
    data = fp.read(size)
    if len(data) < size or size <= BLOCKLIST_OFFSET + 8:
        raise ImageError(f"the BIOS El Torito image at byte {offset} is truncated ({len(data)} bytes)")
    info = _BOOT_INFO.unpack_from(data, 8)
    (start,) = struct.unpack_from("<Q", data, BLOCKLIST_OFFSET)
    return BiosImageFacts(offset, info, start, boot_info_checksum(data))


def bios_grub_cfg(text: str, *, path: PurePosixPath) -> str:
    """``text`` with each ``linuxefi``/``initrdefi`` line guarded so BIOS GRUB runs its
    ``linux``/``initrd`` instead (unchanged when the config has none)."""
    config = GrubConfig.parse(text, path=str(path))
    commands = sorted(config.find(EFI_ONLY), key=lambda c: c.start, reverse=True)
    out = str(config)
    for command in commands:
        name = command.name
        assert name is not None
        args = out[command.args[0].start : command.end] if command.args else ""
        guarded = f'if [ "$grub_platform" = pc ]; then {EFI_ONLY[name]} {args}; else {name} {args}; fi'
        out = out[: command.start] + guarded + out[command.end :]
    if commands:
        GrubConfig.parse(out, path=str(path))  # still a config grub can read
    return out


__all__ = [
    "BIOS_PRODUCT",
    "BiosGrub",
    "BiosImageFacts",
    "GrubSource",
    "bios_files",
    "bios_grub_cfg",
    "boot_info_checksum",
    "build_bios_image",
    "find_bios_grub",
    "mbr_boot_code",
    "patch_boot_image",
    "read_bios_image",
]
