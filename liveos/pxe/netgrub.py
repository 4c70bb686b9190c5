"""Which grub EFI binary can boot over TFTP, and where it reads its grub.cfg there.

A grub EFI image made by ``grub-mkimage`` carries a ``mods`` PE section: the built-in modules
(ELF objects named by their ``.modname`` section), an optional memdisk, the embedded config and
the *prefix* -- the directory grub reads ``grub.cfg`` from. A prefix without a device means "on
the device grub was loaded from", which over PXE is ``(tftp,<server>)``. Reading that section
tells us, from the image's own files, whether a grub can work over the network at all (it needs
``efinet`` + ``tftp``) and which TFTP path it will read.

Measured on Debian bookworm: the disk ``grubx64.efi.signed`` (prefix ``/EFI/debian``) has no
``tftp`` and stops at ``disk 'tftp,...' not found``; ``grubnetx64.efi.signed`` (prefix ``/grub``)
has both, and its memdisk config sources ``$prefix/x86_64-efi/grub.cfg`` if ``[ -e ]`` says it
exists, else ``$prefix/grub.cfg``. Over TFTP ``[ -e ]`` is always false (grub's ``test`` lists the
parent directory, which TFTP cannot), so the one read is ``(tftp)/grub/grub.cfg`` (measured in a
real OVMF PXE boot: ``tests/test_pxe_boot.py``).
"""

from __future__ import annotations

import logging
import re
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.bootfiles import BootFiles
from liveos.errors import ImageError
from liveos.pe import pe_section
from liveos.rootfs import RootFs, read_limited
from liveos.settings import Arch

log = logging.getLogger("liveos")

#: ``struct grub_module_info`` magic ("mimg").
MODULE_INFO_MAGIC = 0x676D696D
#: ``grub_module_header`` object types (include/grub/kernel.h).
OBJ_ELF, OBJ_MEMDISK, OBJ_CONFIG, OBJ_PREFIX = 0, 1, 2, 3
#: A grub EFI image with every module built in is a few MiB; anything larger is not one.
MAX_GRUB_IMAGE = 64 * 1024 * 1024
#: Modules grub needs to read files over UEFI PXE.
NETWORK_MODULES = frozenset({"efinet", "tftp"})
#: grub's platform directory name per EFI architecture (``$prefix/<platform>/grub.cfg``).
GRUB_PLATFORM = {Arch.X64: "x86_64-efi", Arch.AA64: "arm64-efi"}


@dataclass(frozen=True)
class GrubImage:
    """What a grub EFI binary has built in."""

    path: Path
    prefix: str | None  #: e.g. ``/grub``; may start with a ``(device)``
    modules: frozenset[str]
    config: str | None  #: embedded (early) config
    has_memdisk: bool

    @classmethod
    def read(cls, path: Path) -> GrubImage | None:
        """Parse the ``mods`` section of ``path``; None if it is not a grub-mkimage EFI image."""
        try:
            data = read_limited(path, MAX_GRUB_IMAGE)
        except ImageError:
            return None
        section = pe_section(data, b"mods")
        if section is None or len(section) < 24:
            return None
        magic, _pad, offset, size = struct.unpack_from("<IIQQ", section, 0)
        if magic != MODULE_INFO_MAGIC or size > len(section):
            return None
        prefix = config = None
        modules: set[str] = set()
        memdisk = False
        pos = offset
        while pos + 8 <= size:
            kind, length = struct.unpack_from("<II", section, pos)
            if length < 8:
                break
            body = section[pos + 8 : pos + length]
            if kind == OBJ_ELF:
                name = _elf_modname(body)
                if name:
                    modules.add(name)
            elif kind == OBJ_PREFIX:
                prefix = body.split(b"\0", 1)[0].decode(errors="replace")
            elif kind == OBJ_CONFIG:
                config = body.split(b"\0", 1)[0].decode(errors="replace")
            elif kind == OBJ_MEMDISK:
                memdisk = True
            pos += length
        return cls(path=path, prefix=prefix, modules=frozenset(modules), config=config, has_memdisk=memdisk)

    @property
    def network_capable(self) -> bool:
        """Whether the grub image has the modules to load files over the network (efinet, tftp)."""
        return self.modules >= NETWORK_MODULES

    def tftp_config_dir(self) -> PurePosixPath | None:
        """The TFTP directory this grub reads grub.cfg from (prefix without a device), if known."""
        if not self.prefix:
            return None
        match = re.fullmatch(r"(?:\(([^)]*)\))?(/.*)?", self.prefix)
        if match is None or not match.group(2):
            return None
        device = match.group(1)
        if device and not device.startswith(("tftp", "http")):
            return None  # a fixed disk: not on the TFTP server at all
        return PurePosixPath(match.group(2))


def _elf_modname(elf: bytes) -> str | None:
    """The ``.modname`` of a grub module (ELF32 or ELF64, little endian)."""
    if len(elf) < 0x34 or elf[:4] != b"\x7fELF" or elf[5] != 1:
        return None
    is64 = elf[4] == 2
    try:
        if is64:
            (shoff,) = struct.unpack_from("<Q", elf, 0x28)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
            fmt, off_at = "<IIQQQQ", (4, 5)
        else:
            (shoff,) = struct.unpack_from("<I", elf, 0x20)
            shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x2E)
            fmt, off_at = "<IIIIII", (4, 5)

        def header(i: int) -> tuple[int, ...]:
            return struct.unpack_from(fmt, elf, shoff + i * shentsize)

        names = header(shstrndx)
        strtab = names[off_at[0]]
        for i in range(shnum):
            sh = header(i)
            start = strtab + sh[0]
            if elf[start : elf.index(b"\0", start)] == b".modname":
                offset, size = sh[off_at[0]], sh[off_at[1]]
                return elf[offset : offset + size].split(b"\0", 1)[0].decode(errors="replace") or None
    except (struct.error, ValueError):
        return None
    return None


@dataclass(frozen=True)
class NetGrub:
    """The grub that boots from TFTP (as ``grub<arch>.efi`` next to shim) and its config paths."""

    binary: Path
    image: GrubImage | None  #: None when the binary could not be inspected
    config_paths: tuple[PurePosixPath, ...]  #: TFTP paths it may read grub.cfg from, likeliest first


def network_grub_candidates(rootfs: RootFs, boot: BootFiles) -> list[Path]:
    """Debian/Ubuntu's signed network grub first, then the grub the image boots with."""
    platform = GRUB_PLATFORM[boot.arch].removesuffix("-efi")
    signed_dir = f"/usr/lib/grub/{platform}-efi-signed"
    found = [rootfs.path(f"{signed_dir}/grubnet{boot.arch.value}.efi.signed")]
    return [p for p in found if p.is_file()] + [boot.grub]


def choose_network_grub(rootfs: RootFs, boot: BootFiles) -> NetGrub:
    """The first candidate with ``efinet`` + ``tftp`` built in (an uninspectable one as a last resort)."""
    rejected: list[str] = []
    fallback: Path | None = None
    for candidate in network_grub_candidates(rootfs, boot):
        image = GrubImage.read(candidate)
        if image is None:
            fallback = fallback or candidate
            continue
        if image.network_capable:
            log.info("PXE grub: %s (prefix %s)", candidate.name, image.prefix)
            return NetGrub(candidate, image, config_paths_of(image, boot.arch))
        missing = sorted(NETWORK_MODULES - image.modules)
        rejected.append(f"{candidate.name} (lacks {', '.join(missing)})")
    if fallback is not None:
        log.warning("cannot inspect %s; using it for PXE without knowing its prefix", fallback)
        return NetGrub(fallback, None, ())
    raise ImageError(
        "no grub EFI binary in the image can boot over TFTP: " + "; ".join(rejected),
        path=boot.grub,
        hint="install the network grub in the image (Debian/Ubuntu: grub-efi-amd64-signed ships "
        "grubnetx64.efi.signed; Azure Linux/Fedora: grub2-efi-x64 has tftp built in)",
    )


def config_paths_of(image: GrubImage, arch: Arch) -> tuple[PurePosixPath, ...]:
    """TFTP paths grub reads: ``$prefix/grub.cfg`` first; Debian's memdisk also tries the platform dir.

    The platform-dir one is listed (and gets a redirector) for grubs whose ``[ -e ]`` does work on
    their network device; Debian's grubnet over TFTP never reads it (see the module docstring).
    """
    directory = image.tftp_config_dir()
    if directory is None:
        return ()
    paths = [directory / "grub.cfg"]
    if image.has_memdisk:
        paths.append(directory / GRUB_PLATFORM[arch] / "grub.cfg")
    return tuple(paths)
