"""Persistence on a USB disk written from a live ISO: a writable partition for dracut's overlay.

``with_persistence(size)`` appends, after the ISO 9660 data, an ext4 partition holding
``/liveos/overlay`` and ``/liveos/ovlwork``: dracut's dmsquash-live (059) takes a directory
``rd.live.overlay=<device>:<path>`` whose ``<path>/../ovlwork`` also exists as a persistent
OverlayFS upper/work pair.

Why not simply ``rd.live.overlay=LABEL=...`` next to ``root=live:CDLABEL=...``: on a disk written
from the ISO the iso9660 label belongs to the *whole disk*, dracut mounts it, and a mounted whole
disk is claimed exclusively: the kernel then refuses to mount any partition of it (EBUSY). So on
a disk the live root comes from a partition too: the hybrid GPT gets one over the squashfs file
inside the ISO (``root=live:PARTUUID=...``; dracut loop-mounts a squashfs device, which claims
nothing), and the ext4 partition can be mounted read-write.

CD or USB is decided by grub at boot: a prologue in the media's grub.cfg searches for the ext4's
UUID; found, ``$liveos_persistence`` holds the disk's ``root=`` and ``rd.live.overlay=`` and is
appended to every entry (dracut takes the last ``root=``). On a CD (no partitions) it is empty and
the media boot as without persistence: a RAM overlay, no prompt.

Identities (partition GUIDs, the filesystem UUID) are derived from the ISO label, so they are known
when grub.cfg is written and reproducible builds stay reproducible.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from liveos.grub import GrubConfig
from liveos.grub.kernelargs import KernelArg
from liveos.initramfs.liveargs import overlay_device_arg
from liveos.reproducible import source_date_epoch
from liveos.run import run

#: ext4 volume label of the persistence filesystem (at most 16 bytes).
FS_LABEL = "LIVEOS-RW"
#: GPT partition names.
ROOT_PARTITION_NAME = "LiveOS root image"
RW_PARTITION_NAME = "LiveOS persistence"
#: GPT type "Linux filesystem data".
LINUX_DATA_TYPE = uuid.UUID("0FC63DAF-8483-4772-8E79-3D69D8477DE4")
#: The overlay's upper directory on the partition; dracut wants ``ovlwork`` next to it.
OVERLAY_DIR = PurePosixPath("/liveos/overlay")
WORK_DIR = PurePosixPath("/liveos/ovlwork")
#: The grub variable the prologue sets and every boot entry appends.
GRUB_VARIABLE = "liveos_persistence"
#: Where the partition starts: the first MiB boundary after the ISO data.
ALIGN = 1 << 20
_NAMESPACE = uuid.UUID("0d7c0f55-63a4-4f8e-9c1e-6c69766572ff")
_BEGIN = "# liveos persistence: begin"
_END = "# liveos persistence: end"


@dataclass(frozen=True)
class Persistence:
    """The persistence partition of the ISO labelled ``label``: its size and derived identities."""

    size: int  #: bytes, a whole number of MiB
    label: str  #: the ISO volume label the identities derive from

    @property
    def fs_uuid(self) -> uuid.UUID:
        """UUID of the ext4 filesystem (what grub searches for and dracut mounts)."""
        return uuid.uuid5(_NAMESPACE, f"fs:{self.label}")

    @property
    def rw_guid(self) -> uuid.UUID:
        """Unique GUID of the persistence partition."""
        return uuid.uuid5(_NAMESPACE, f"rw:{self.label}")

    @property
    def root_guid(self) -> uuid.UUID:
        """Unique GUID (PARTUUID) of the partition over the squashfs inside the ISO."""
        return uuid.uuid5(_NAMESPACE, f"root:{self.label}")

    def disk_args(self, dracut_version: str | None) -> list[str]:
        """What a boot from the disk adds: the root partition and the persistent overlay."""
        overlay = f"UUID={self.fs_uuid}:{OVERLAY_DIR}"
        return [f"root=live:PARTUUID={self.root_guid}", overlay_device_arg(dracut_version, overlay)]

    def grub_prologue(self, dracut_version: str | None) -> str:
        """grub.cfg lines that set ``$liveos_persistence`` when the partition is there (USB)."""
        args = " ".join(self.disk_args(dracut_version))
        return (
            f"{_BEGIN}\n"
            f"set {GRUB_VARIABLE}=\n"
            "insmod part_gpt\n"
            "insmod ext2\n"
            f"if search --no-floppy --set=liveos_rw --fs-uuid {self.fs_uuid}; then\n"
            f'  set {GRUB_VARIABLE}="{args}"\n'
            "fi\n"
            f"{_END}\n"
        )


def grub_argument() -> KernelArg:
    """``$liveos_persistence``: expands to the disk's arguments (USB) or to nothing (CD)."""
    return KernelArg(f"${GRUB_VARIABLE}", expands=True)


def apply_to_grub(text: str, persistence: Persistence | None, dracut_version: str | None) -> str:
    """``text`` with the prologue (re)placed at the top, or removed when ``persistence`` is None.

    Idempotent: a re-opened liveos ISO's config loses the old prologue before a new one is added.
    """
    text = strip_prologue(text)
    if persistence is None:
        return text
    return persistence.grub_prologue(dracut_version) + text


def strip_prologue(text: str) -> str:
    """``text`` without a prologue a previous build added."""
    start = text.find(_BEGIN)
    end = text.find(_END, start)
    if start < 0 or end < 0:
        return text
    return text[:start] + text[end + len(_END) + 1 :]


def drop_argument(config: GrubConfig) -> GrubConfig:
    """Remove ``$liveos_persistence`` from every kernel line (a rebuild without persistence)."""
    arg = grub_argument()
    return config.edit_args(lambda args: type(args).of([a for a in args if a != arg]))


def make_ext4(path: Path, persistence: Persistence) -> Path:
    """A sparse file at ``path`` holding the partition's fresh ext4 with the overlay directories.

    Reproducible with ``SOURCE_DATE_EPOCH``: fixed UUID and hash seed, the epoch as every time.
    """
    tree = path.with_name(path.name + ".tree")
    epoch = source_date_epoch()
    for directory in (OVERLAY_DIR, WORK_DIR):
        (tree / directory.relative_to("/")).mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(persistence.size)
    env = {**os.environ, **({"E2FSPROGS_FAKE_TIME": str(epoch)} if epoch is not None else {})}
    run(
        [
            "mkfs.ext4", "-q", "-F", "-L", FS_LABEL, "-U", str(persistence.fs_uuid),
            "-E", f"hash_seed={persistence.fs_uuid},root_owner=0:0,lazy_itable_init=1,lazy_journal_init=1",
            "-d", tree, path,
        ],
        step="persistence partition (mkfs.ext4)",
        env=env,
    )  # fmt: skip
    if epoch is not None:  # -d copies the tree's times, and a ctime is always "now"
        dirs = ("/", str(OVERLAY_DIR.parent), str(OVERLAY_DIR), str(WORK_DIR))
        script = "".join(
            f"sif {d} {field} @{epoch}\n" for d in dirs for field in ("atime", "mtime", "ctime", "crtime")
        )
        run(
            ["debugfs", "-w", "-f", "-", path], input=script.encode(), step="persistence partition (debugfs)"
        )
    return path


def copy_sparse(source: Path, out: BinaryIO, offset: int) -> None:
    """Copy ``source`` into ``out`` at ``offset``, data ranges only (its holes stay holes)."""
    out.flush()
    fd_out = out.fileno()
    with source.open("rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break  # only a hole is left
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            while start < end:
                chunk = os.pread(fd, min(end - start, 1 << 20), start)
                if not chunk:
                    break
                os.pwrite(fd_out, chunk, offset + start)
                start += len(chunk)
            pos = end


__all__ = [
    "FS_LABEL",
    "GRUB_VARIABLE",
    "OVERLAY_DIR",
    "WORK_DIR",
    "Persistence",
    "apply_to_grub",
    "copy_sparse",
    "drop_argument",
    "grub_argument",
    "make_ext4",
    "strip_prologue",
]
