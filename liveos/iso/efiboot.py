"""The El Torito EFI image: a small FAT file system that UEFI firmware loads ``boot<arch>.efi`` from.

Only the firmware reads this image (grub, once running, sees the whole ISO 9660 as ``(cd0)``), so
it holds just the EFI binaries. It is built without loop mounts (the build host may lack vfat):
``mkfs.vfat`` on a plain file, then ``mmd``/``mcopy`` from mtools.

Size: FAT12/16 only, sized from the content plus slack. FAT32 is avoided on purpose: a small
FAT32 has fewer clusters than the 65,525 minimum and mtools then refuses it (fixtures/notes.md),
and El Torito's 16-bit load size caps the image at 32 MiB anyway.

Reproducible when ``SOURCE_DATE_EPOCH`` is set: ``mkfs.vfat --invariant`` with a volume id
derived from the epoch, and mtools stamps files/directories with the epoch instead of "now".
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from liveos.atomic import atomic_path
from liveos.errors import UsageError
from liveos.reproducible import source_date_epoch
from liveos.run import run
from liveos.settings import Arch

#: El Torito's load size is a 16-bit count of 512-byte sectors.
MAX_IMAGE_BYTES = 65535 * 512
#: FAT volume label of the image (11 characters max).
VOLUME_LABEL = "EFIBOOT"
_CLUSTER = 4096
_SLACK = 256 * 1024
_ROUND = 64 * 1024


@dataclass(frozen=True)
class EfiBootFiles:
    """What goes into ``EFI/BOOT`` of the image.

    ``loader`` becomes ``boot<arch>.efi`` (shim, or a standalone grub / any EFI app), ``grub``
    ``grub<arch>.efi`` (what shim chain-loads), ``mok_manager`` ``mm<arch>.efi``. ``grub_cfg`` is
    optional: the firmware never reads it, but a grub started from the image may (``$cmdpath``).
    ``extra`` maps more file names in ``EFI/BOOT`` to their sources.
    """

    loader: Path
    grub: Path | None = None
    mok_manager: Path | None = None
    grub_cfg: bytes | None = None
    extra: Mapping[str, Path] = field(default_factory=dict)

    def placement(self, arch: Arch) -> dict[str, Path | bytes]:
        """Map file names inside ``EFI/BOOT`` to their content source, arch-aware."""
        files: dict[str, Path | bytes] = {arch.shim_name: self.loader}
        if self.grub is not None:
            files[arch.grub_name] = self.grub
        if self.mok_manager is not None:
            files[f"mm{arch.value}.efi"] = self.mok_manager
        if self.grub_cfg is not None:
            files["grub.cfg"] = self.grub_cfg
        for name, source in self.extra.items():
            if "/" in name or name in files:
                raise UsageError(f"EFI boot image: invalid or duplicate extra file name {name!r}")
            files[name] = source
        return files


def image_size(content_sizes: list[int]) -> int:
    """Bytes for a FAT image holding files of these sizes: cluster-rounded content + slack.

    The result is a multiple of 64 KiB (so of the 2 KiB ISO sector) and at least 1 MiB.
    """
    data = sum(-(-size // _CLUSTER) * _CLUSTER for size in content_sizes)
    # 2 directories, 2 FATs (<= 2 bytes per cluster each), root directory, boot sector.
    overhead = 2 * _CLUSTER + 4 * (data // _CLUSTER + 64) + 32 * 1024
    total = data + overhead + max(_SLACK, data // 20)
    total = -(-total // _ROUND) * _ROUND
    return max(total, 1024 * 1024)


def build_efiboot_image(out: Path, files: EfiBootFiles, *, arch: Arch = Arch.X64) -> int:
    """Write the El Torito FAT image to ``out`` (atomically) and return its size in bytes."""
    placement = {f"EFI/BOOT/{name}": source for name, source in files.placement(arch).items()}
    return _write_fat(out, placement)


def build_efiboot(files: Mapping[str, Path | bytes], out: Path, *, arch: Arch = Arch.X64) -> Path:
    """Write a FAT image holding ``files`` (relative paths such as ``EFI/BOOT/bootx64.efi``).

    The mapping form used by the media planner; ``EFI/BOOT/boot<arch>.efi`` must be among the
    files, since it is the only thing UEFI firmware loads from the image.
    """
    loader = f"EFI/BOOT/{arch.shim_name}"
    if not any(name.lower() == loader.lower() for name in files):
        raise UsageError(
            f"EFI boot image: no {loader} among {sorted(files)}",
            hint="the image needs the removable-media loader (shim or grub) under that name",
        )
    _write_fat(out, files)
    return out


def _write_fat(out: Path, files: Mapping[str, Path | bytes]) -> int:
    """mkfs.vfat a right-sized image and mcopy ``files`` (relative path -> source) into it."""
    sizes = []
    for name, source in files.items():
        parts = PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise UsageError(f"EFI boot image: invalid path {name!r} (must be relative)")
        if isinstance(source, Path):
            if not source.is_file():
                raise UsageError(f"EFI boot image: source of {name} is not a file", path=source)
            sizes.append(source.stat().st_size)
        else:
            sizes.append(len(source))
    dirs = _directories(files)
    size = image_size(sizes + [0] * len(dirs))
    if size > MAX_IMAGE_BYTES:
        raise UsageError(
            f"EFI boot image would be {size} bytes; El Torito allows at most {MAX_IMAGE_BYTES}",
            hint="ship fewer or smaller EFI binaries in the boot image",
        )
    env = _mtools_env()
    with atomic_path(out) as tmp:
        os.truncate(tmp, size)
        run(_mkfs_argv(tmp, size), step="format EFI boot image", env=env)
        if dirs:
            run(["mmd", "-i", tmp, *(f"::/{d}" for d in dirs)], step="populate EFI boot image", env=env)
        for name, source in files.items():
            _copy_in(tmp, name, source, env)
    return size


def _directories(names: Iterable[str]) -> list[str]:
    """Every directory the relative paths ``names`` need, parents first."""
    return sorted({str(p) for name in names for p in PurePosixPath(name).parents if str(p) != "."})


def planned_size(files: Mapping[str, int]) -> int:
    """The exact size :func:`build_efiboot` will give an image holding files of these sizes."""
    return image_size([*files.values()] + [0] * len(_directories(files)))


def _mkfs_argv(image: Path, size: int) -> list[str]:
    """``mkfs.vfat`` on an existing file; FAT12/16 chosen by mkfs from the size (<= 32 MiB)."""
    argv = ["mkfs.vfat", "-n", VOLUME_LABEL]
    epoch = source_date_epoch()
    if epoch is not None:
        argv += ["--invariant", "-i", f"{epoch & 0xFFFFFFFF:08x}"]
    return [*argv, str(image), str(size // 1024)]


def _copy_in(image: Path, name: str, source: Path | bytes, env: Mapping[str, str]) -> None:
    """Copy one file into ``::/EFI/BOOT`` (bytes are fed through stdin)."""
    target = f"::/{name}"
    if isinstance(source, Path):
        run(["mcopy", "-i", image, "-o", source, target], step=f"copy {name} into EFI boot image", env=env)
    else:
        run(["mcopy", "-i", image, "-o", "-", target], input=source, step=f"write {name}", env=env)


def _mtools_env() -> dict[str, str]:
    """No ~/.mtoolsrc surprises; mtools honours SOURCE_DATE_EPOCH from the environment itself."""
    return {"MTOOLS_SKIP_CHECK": "1", "MTOOLSRC": "/dev/null"}
