"""DiskImage: a disk image opened read-only as a full OS tree, with a writable overlay on top.

``with DiskImage.open("disk.qcow2") as img:`` detects the format from content, gets a raw view
(the file itself if raw), parses the partition table, finds the one partition holding
``/etc/fstab``, and mounts every filesystem fstab lists at its place -- read-only, each under its
own overlayfs, so ``img.root`` is writable while the OS tree is never copied and the input's
bytes never change. The FAT ESP (no vfat in the kernel) is extracted with mtools and overlaid
the same way. Everything acquired is released in reverse on exit, exception, Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from liveos.confined import resolve_in_root
from liveos.errors import ImageError
from liveos.host.loops import loop_device
from liveos.host.mounts import mount, mount_target, overlay
from liveos.host.namespace import private_mounts
from liveos.host.privilege import require_root
from liveos.host.signals import signals_as_exceptions
from liveos.image import fat
from liveos.image.base import SourceImage, image_scratch
from liveos.image.formats import DiskFormat, ImageInfo, RawView, raw_view
from liveos.image.fstab import (
    FAT_ALIASES,
    ROOT_FSTYPES,
    Filesystem,
    FstabEntry,
    disk_entries,
    match,
    parse_fstab,
    probe,
)
from liveos.image.layers import Layer
from liveos.image.partitions import Partition, PartitionTable, read_partition_table
from liveos.image.summary import ImageSummary, MountRow, PartitionRow, partition_type, summarize
from liveos.pe import elf_arch, pe_arch
from liveos.rootfs import CONFIG_LIMIT, RootFs
from liveos.settings import Arch

log = logging.getLogger("liveos")

#: Options that keep a read-only mount from writing: no journal replay, no log recovery.
READ_ONLY_OPTIONS = {
    "ext2": ("noload",),
    "ext3": ("noload",),
    "ext4": ("noload",),
    "xfs": ("norecovery", "nouuid"),
    "btrfs": ("rescue=nologreplay",),
}
ESP_MOUNTPOINTS = (PurePosixPath("/boot/efi"), PurePosixPath("/efi"), PurePosixPath("/boot"))


@dataclass(frozen=True)
class Mount:
    """One filesystem of the image in the merged tree."""

    mountpoint: PurePosixPath  #: path in the image (``/``, ``/boot``, ``/boot/efi``)
    fstype: str
    partition: Partition
    lower: Path  #: the read-only tree (a read-only mount, or the extracted FAT copy)
    upper: Path  #: overlay upper dir: every write to this filesystem lands here
    subvol: str | None = None  #: btrfs subvolume, if any


@dataclass(frozen=True)
class Esp:
    """The EFI system partition, extracted to a pristine directory."""

    partition: Partition
    extracted: Path  #: untouched copy of the ESP's files (writes go to the overlay at ``mountpoint``)
    mountpoint: PurePosixPath | None  #: where fstab mounts it; None if fstab does not list it
    volume: fat.FatVolume


@dataclass(frozen=True)
class _RootCandidate:
    filesystem: Filesystem
    subvol: str | None  #: btrfs subvolume path relative to the top level, None for the top level
    fstab: str

    def describe(self) -> str:
        where = f" subvolume {self.subvol}" if self.subvol else ""
        return f"partition {self.filesystem.partition.number} ({self.filesystem.fstype}{where})"


class DiskImage(SourceImage):
    """An opened disk image: its partitions, filesystems and where each is mounted in the tree."""

    def __init__(
        self,
        *,
        path: Path,
        format: DiskFormat,
        raw: RawView,
        table: PartitionTable,
        filesystems: Sequence[Filesystem],
        mounts: Sequence[Mount],
        esp: Esp | None,
        root: Path,
        scratch: Path,
    ) -> None:
        super().__init__(path=path, format=format, root=root, scratch=scratch)
        self.raw = raw
        self.table = table
        self.filesystems = tuple(filesystems)
        self.mounts = tuple(mounts)
        self.esp = esp

    @property
    def partitions(self) -> tuple[Partition, ...]:
        """The partitions of the disk, in table order."""
        return self.table.partitions

    @property
    def mountpoints(self) -> tuple[PurePosixPath, ...]:
        return tuple(m.mountpoint for m in self.mounts)

    @property
    def layers(self) -> tuple[Layer, ...]:
        return tuple(Layer(m.mountpoint, m.upper, (m.lower,)) for m in self.mounts)

    @cached_property
    def arch(self) -> Arch:
        """UEFI architecture from the image's EFI binaries (else its ELF binaries) -- never the host's."""
        for binary in self._efi_binaries():
            arch = pe_arch(binary)
            if arch is not None:
                return arch
        for candidate in ("/usr/bin/env", "/bin/sh", "/usr/lib/systemd/systemd", "/sbin/init"):
            arch = elf_arch(resolve_in_root(self.root, candidate))
            if arch is not None:
                return arch
        raise ImageError(
            "cannot tell the image's architecture: no x64/aa64 EFI binary on the ESP, no known ELF binary",
            path=self.path,
            hint="the image needs shim/grub EFI binaries for a UEFI live boot",
        )

    def _efi_binaries(self) -> list[Path]:
        dirs = [self.esp.extracted] if self.esp else []
        dirs += [resolve_in_root(self.root, p) for p in ("/boot/efi", "/efi")]
        found: list[Path] = []
        for base in dirs:
            efi = base / "EFI"
            for sub in ([efi / "BOOT", efi / "boot"] if efi.is_dir() else []) + (
                [efi] if efi.is_dir() else []
            ):
                if sub.is_dir() and not sub.is_symlink():
                    found += sorted(  # never a symlink: resolved on the host it could leave the image
                        p
                        for p in sub.rglob("*")
                        if p.suffix.lower() == ".efi" and p.is_file() and not p.is_symlink()
                    )
        return found

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    @contextlib.contextmanager
    def open(cls, info: ImageInfo, *, workdir: Path | None = None) -> Iterator[DiskImage]:
        """Open the disk image ``info`` (see :func:`~liveos.image.formats.detect`) read-only as a
        writable merged OS tree.

        ``workdir`` holds the scratch dir (raw conversion, overlay upper dirs, the extracted ESP);
        it is removed on exit. Needs root.
        """
        path = info.path
        with signals_as_exceptions(), contextlib.ExitStack() as stack:
            require_root(f"opening {path}")
            private_mounts()
            scratch = stack.enter_context(image_scratch(workdir))
            raw = stack.enter_context(raw_view(info, scratch))
            table = read_partition_table(raw.path, raw.size)
            filesystems = [probe(raw.path, p) for p in table.partitions]
            opener = _Opener(stack, raw, scratch)
            candidate = opener.find_root(filesystems, path)
            fstab = parse_fstab(candidate.fstab, path=Path("/etc/fstab"))
            opener.mount_tree(candidate, fstab, filesystems)
            esp = opener.esp or opener.extract_unlisted_esp(filesystems)
            yield cls(
                path=path,
                format=info.format,
                raw=raw,
                table=table,
                filesystems=filesystems,
                mounts=opener.mounts,
                esp=esp,
                root=opener.root,
                scratch=scratch,
            )

    # -- rich views -------------------------------------------------------------------------
    def summary(self) -> ImageSummary:
        """What the image is (:class:`~liveos.image.summary.ImageSummary`): the base facts plus
        the partitions, filesystems and mounts recorded when it was opened."""
        return summarize(
            self.rootfs,
            kind=type(self).__name__,
            path=self.path,
            format=self.format,
            arch=lambda: self.arch,
            table=self.table.kind.value,
            disk_id=self.table.disk_id,
            partitions=self._partition_rows(),
            mounts=self._mount_rows(),
        )

    def _mount_rows(self) -> list[MountRow]:
        rows = []
        for m in self.mounts:
            subvol = f" subvolume {m.subvol}" if m.subvol else ""
            rows.append(MountRow(str(m.mountpoint), m.fstype, f"partition {m.partition.number}{subvol}"))
        return rows

    def _partition_rows(self) -> list[PartitionRow]:
        """One row per partition: its type, its filesystem and where the tree mounts it."""
        rows = []
        for fs in self.filesystems:
            p = fs.partition
            where = [str(m.mountpoint) for m in self.mounts if m.partition.number == p.number]
            if self.esp is not None and self.esp.partition.number == p.number and not where:
                where = ["(ESP, extracted)"]
            kind = partition_type(p.type_guid, p.type_byte, esp=p.is_esp)
            row = (p.partlabel or "", fs.fstype or "", fs.label or "", tuple(where))
            rows.append(PartitionRow(p.number, p.start, p.size, kind, *row))
        return rows


class _Opener:
    """The steps of :meth:`DiskImage.open`, sharing the exit stack and the loop devices."""

    def __init__(self, stack: contextlib.ExitStack, raw: RawView, scratch: Path) -> None:
        self.stack = stack
        self.raw = raw
        self.scratch = scratch
        self.root = scratch / "root"
        self.loops: dict[int, Path] = {}
        self.mounts: list[Mount] = []
        self.esp: Esp | None = None

    def loop(self, partition: Partition) -> Path:
        """One read-only loop device per partition (btrfs refuses two devices with one fsid)."""
        if partition.number not in self.loops:
            self.loops[partition.number] = self.stack.enter_context(
                loop_device(self.raw.path, offset=partition.start, size=partition.size, read_only=True)
            )
        return self.loops[partition.number]

    def mount_ro(
        self, fs: Filesystem, target: Path, extra: Sequence[str] = ()
    ) -> contextlib.AbstractContextManager[Path]:
        assert fs.fstype is not None
        target.mkdir(parents=True, exist_ok=True)
        options = (*READ_ONLY_OPTIONS.get(fs.fstype, ()), *extra)
        return mount(self.loop(fs.partition), target, fstype=fs.fstype, options=options)

    # -- root discovery ---------------------------------------------------------------------
    def find_root(self, filesystems: Sequence[Filesystem], image: Path) -> _RootCandidate:
        """The one filesystem (or btrfs subvolume) holding ``/etc/fstab``."""
        candidates: list[_RootCandidate] = []
        probed: list[str] = []
        for fs in filesystems:
            if fs.fstype not in ROOT_FSTYPES:
                continue
            probed.append(f"partition {fs.partition.number} ({fs.fstype})")
            extra = ("subvolid=5",) if fs.fstype == "btrfs" else ()
            with self.mount_ro(fs, self.scratch / "probe", extra) as top:
                for subvol, tree in _subvolume_trees(top, fs.fstype):
                    text = _read_fstab(tree)
                    if text is not None:
                        candidates.append(_RootCandidate(fs, subvol, text))
        if len(candidates) == 1:
            log.info("root filesystem: %s", candidates[0].describe())
            return candidates[0]
        if not candidates:
            looked = ", ".join(probed) or "no ext2/3/4, xfs or btrfs partition"
            raise ImageError(
                f"failed to find rootfs partition: no filesystem of {image} has /etc/fstab "
                f"(probed: {looked})",
                path=image,
                hint="the image needs a root filesystem with /etc/fstab listing its mounts",
            )
        names = ", ".join(c.describe() for c in candidates)
        raise ImageError(
            f"found too many rootfs partition candidates ({len(candidates)}) in {image}: {names}",
            path=image,
            hint="keep /etc/fstab on the root filesystem only",
        )

    # -- the merged tree --------------------------------------------------------------------
    def mount_tree(
        self, root: _RootCandidate, fstab: Sequence[FstabEntry], filesystems: Sequence[Filesystem]
    ) -> None:
        """Mount the root and every fstab filesystem at its place, parents first, each overlaid."""
        self.root.mkdir()
        seen: set[PurePosixPath] = set()
        root_entry = next((e for e in fstab if PurePosixPath("/", e.file) == PurePosixPath("/")), None)
        self._mount_one(PurePosixPath("/"), root.filesystem, root.subvol, root_entry)
        seen.add(PurePosixPath("/"))
        for entry in disk_entries(fstab):
            mountpoint = PurePosixPath(os.path.normpath(PurePosixPath("/", entry.file)))
            if mountpoint in seen:
                if mountpoint != PurePosixPath("/"):
                    raise ImageError(f"/etc/fstab mounts {mountpoint} twice", path=Path("/etc/fstab"))
                continue
            fs = match(entry, filesystems)
            if fs is None or fs.fstype not in (*ROOT_FSTYPES, "vfat"):
                what = "matches no partition" if fs is None else f"is {fs.fstype or 'unrecognised'}"
                if entry.optional:
                    log.warning("skipping fstab entry %s on %s: it %s", entry.spec, mountpoint, what)
                    continue
                raise ImageError(
                    f"/etc/fstab entry {entry.spec} for {mountpoint} {what} in the image",
                    path=Path("/etc/fstab"),
                    hint="every filesystem fstab needs must be on a partition of the image (ext4, xfs, "
                    "btrfs or vfat); mark optional ones nofail",
                )
            if entry.vfstype not in ("auto", fs.fstype) and not (
                entry.vfstype in FAT_ALIASES and fs.fstype == "vfat"
            ):
                log.warning("fstab says %s is %s, blkid says %s", mountpoint, entry.vfstype, fs.fstype)
            seen.add(mountpoint)
            self._mount_one(mountpoint, fs, entry.subvol, entry)

    def _mount_one(
        self, mountpoint: PurePosixPath, fs: Filesystem, subvol: str | None, entry: FstabEntry | None
    ) -> None:
        index = len(self.mounts)
        layer = self.scratch / "layers" / str(index)
        if fs.fstype == "vfat":
            lower = self._extract_esp(fs, mountpoint)
        else:
            extra: tuple[str, ...] = ()
            if fs.fstype == "btrfs":
                extra = (f"subvol={subvol}",) if subvol else ("subvolid=5",)
                subvolid = entry.option("subvolid") if entry else None
                if subvolid and not subvol:
                    extra = (f"subvolid={subvolid}",)
            lower = self.stack.enter_context(self.mount_ro(fs, layer / "lower", extra))
        target = self.root if mountpoint == PurePosixPath("/") else mount_target(self.root, str(mountpoint))
        self.stack.enter_context(overlay(lower, layer / "upper", layer / "work", target))
        assert fs.fstype is not None
        self.mounts.append(Mount(mountpoint, fs.fstype, fs.partition, lower, layer / "upper", subvol))
        log.info("mounted partition %d (%s) at %s", fs.partition.number, fs.fstype, mountpoint)

    def _extract_esp(self, fs: Filesystem, mountpoint: PurePosixPath | None) -> Path:
        dest = self.scratch / "fat" / f"p{fs.partition.number}"
        if dest.exists():
            raise ImageError(f"the FAT partition {fs.partition.number} is listed twice in /etc/fstab")
        fat.extract(self.raw.path, fs.partition.start, dest)
        volume = fat.read_volume(self.raw.path, fs.partition.start)
        is_esp_place = mountpoint in ESP_MOUNTPOINTS
        wanted = fs.partition.is_esp or (is_esp_place and self.esp is None)
        if wanted and (self.esp is None or not self.esp.partition.is_esp):
            self.esp = Esp(fs.partition, dest, mountpoint, volume)
        return dest

    def extract_unlisted_esp(self, filesystems: Sequence[Filesystem]) -> Esp | None:
        """An ESP that fstab does not mount is still extracted (boot files and the arch come from it)."""
        for fs in filesystems:
            if fs.partition.is_esp and fs.fstype == "vfat":
                self._extract_esp(fs, None)
                return self.esp
        return None


def _subvolume_trees(top: Path, fstype: str | None) -> Iterator[tuple[str | None, Path]]:
    """The top level and, for btrfs, each subvolume one or two levels below it (``@``, ``@/root``)."""
    yield None, top
    if fstype != "btrfs":
        return
    for depth_one in sorted(top.iterdir()):
        if depth_one.is_symlink() or not depth_one.is_dir():
            continue
        children = [depth_one, *sorted(c for c in depth_one.iterdir() if c.is_dir() and not c.is_symlink())]
        for tree in children:
            if tree.stat().st_ino == 256:  # the root directory of every btrfs subvolume
                yield str(tree.relative_to(top)), tree


def _read_fstab(tree: Path) -> str | None:
    """The text of ``/etc/fstab`` in ``tree``, resolved confined to the tree (it may be a hostile link)."""
    rootfs = RootFs(tree)
    if not rootfs.is_file("/etc/fstab"):
        return None
    return rootfs.read_text("/etc/fstab", limit=CONFIG_LIMIT)
