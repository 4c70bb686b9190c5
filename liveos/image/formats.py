"""Disk image formats, detected from content (never from the file name), and the raw view of a disk.

Everything after this module reads a plain byte-addressable disk: a raw file is used as it is
(read-only, no copy), a fixed VHD is its raw payload followed by a 512-byte footer (also used in
place), and qcow2 / dynamic VHD / VHDX are exported read-only as a raw file in the work dir by
``qemu-storage-daemon`` through FUSE (:mod:`liveos.host.export`): nothing is converted, each
read is served from the image when it is made, so opening costs what is read, not the disk's size.
"""

from __future__ import annotations

import contextlib
import enum
import errno
import json
import logging
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from liveos.errors import CommandError, ImageError, UsageError
from liveos.host.export import fuse_export
from liveos.run import run

log = logging.getLogger("liveos")

#: ISO 9660 primary volume descriptor magic: sector 16, byte 1.
ISO_MAGIC_OFFSET = 0x8001
ISO_MAGIC = b"CD001"
VHD_COOKIE = b"conectix"
VHD_FOOTER_SIZE = 512
#: VHD creator apps whose size qemu derives from the CHS geometry, not from ``current_size``.
VHD_GEOMETRY_CREATORS = (b"vpc ", b"qemu")
VHD_MAX_CHS = (65535, 16, 255)


class DiskFormat(enum.StrEnum):
    """Container format of an input image. Values are user-facing names."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VHD = "vhd"  #: dynamic VHD (qemu's ``vpc`` driver)
    VHD_FIXED = "vhd-fixed"  #: fixed VHD: raw payload + footer (qemu reports it as ``raw``)
    VHDX = "vhdx"
    ISO = "iso"

    @property
    def qemu_driver(self) -> str:
        """qemu block driver that reads this format."""
        return {"vhd": "vpc", "vhd-fixed": "raw", "iso": "raw"}.get(self.value, self.value)

    @property
    def in_place(self) -> bool:
        """True when the file itself is a raw disk (read in place, no export needed)."""
        return self in (DiskFormat.RAW, DiskFormat.VHD_FIXED)


_QEMU_FORMATS = {
    "raw": DiskFormat.RAW,
    "qcow2": DiskFormat.QCOW2,
    "vpc": DiskFormat.VHD,
    "vhdx": DiskFormat.VHDX,
}


@dataclass(frozen=True)
class VhdFooter:
    """The fields of a VHD footer that decide how big the disk is."""

    creator: bytes
    current_size: int
    cylinders: int
    heads: int
    sectors: int
    disk_type: int  #: 2 fixed, 3 dynamic, 4 differencing

    @classmethod
    def parse(cls, data: bytes) -> VhdFooter | None:
        """Parse a 512-byte footer; None if it is not one (bad cookie or checksum), whatever the bytes.

        Only the first 512 bytes are read; every field is a fixed-size unsigned integer, so no
        value can be out of range for what is computed from it.
        """
        if len(data) < VHD_FOOTER_SIZE or data[:8] != VHD_COOKIE:
            return None
        (checksum,) = struct.unpack_from(">I", data, 64)
        computed = ~(sum(data[:64]) + sum(data[68:VHD_FOOTER_SIZE])) & 0xFFFFFFFF
        if checksum != computed:
            return None
        (current_size,) = struct.unpack_from(">Q", data, 48)
        cylinders, heads, sectors, disk_type = struct.unpack_from(">HBBI", data, 56)
        return cls(bytes(data[28:32]), current_size, cylinders, heads, sectors, disk_type)

    @property
    def geometry_size(self) -> int:
        """The disk size the footer's CHS geometry gives (some VHD creators size the disk by it)."""
        return self.cylinders * self.heads * self.sectors * 512

    @property
    def uses_geometry_size(self) -> bool:
        """True when readers disagree on the size: CHS-sized creator and CHS size != current size.

        Virtual PC (and qemu without ``force_size``) size a disk by its CHS geometry, Hyper-V and
        Azure by ``current_size``; when the two differ the partition table may lie past the end.
        """
        if self.creator not in VHD_GEOMETRY_CREATORS:
            return False
        if (self.cylinders, self.heads, self.sectors) == VHD_MAX_CHS:
            return False
        return self.geometry_size != self.current_size


@dataclass(frozen=True)
class ImageInfo:
    """What the content of an input file says it is."""

    path: Path
    format: DiskFormat
    virtual_size: int  #: bytes of the disk the image holds


class RawBacking(enum.StrEnum):
    """What the file of a :class:`RawView` is."""

    INPUT = "input"  #: the input file itself (raw, fixed VHD)
    FUSE = "fuse"  #: qemu-storage-daemon's read-only FUSE export of the input, in the work dir


@dataclass(frozen=True)
class RawView:
    """A raw disk to read partitions from: ``size`` bytes at the start of ``path``."""

    path: Path
    size: int
    backing: RawBacking  #: the input itself, or a FUSE export of it in the work dir


def _read_at(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)


def _qemu_info(path: Path) -> dict[str, object]:
    try:
        text = run(
            ["qemu-img", "info", "--output=json", path], step=f"reading the format of {path}"
        ).stdout.decode(errors="replace")
    except CommandError as exc:
        tail = " ".join(exc.stderr.strip().splitlines()[-3:])
        raise ImageError(
            f"{path} is not a readable disk image: qemu-img could not open it ({tail})",
            path=path,
            hint="the file may be truncated or corrupt; re-download or re-export it",
        ) from exc
    try:
        info = json.loads(text)
    except (ValueError, RecursionError):
        info = None
    if not isinstance(info, dict):
        raise ImageError(f"qemu-img info gave no JSON object for {path}", path=path)
    return info


def _virtual_size(info: dict[str, object], path: Path) -> int:
    """``virtual-size`` of qemu-img's report: a non-negative integer, or the image is refused."""
    size = info.get("virtual-size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ImageError(f"qemu-img reports no usable virtual size for {path} ({size!r:.40})", path=path)
    return size


def _describe_start(path: Path) -> str:
    head = _read_at(path, 0, 16)
    return "bytes " + head.hex(" ") if head.strip(b"\0") else "only zero bytes at the start"


def detect(path: Path) -> ImageInfo:
    """Detect the container format of ``path`` from its content.

    Raises :class:`UsageError` if the path is missing or not a file, :class:`ImageError` for an
    empty, truncated, unsupported or unreadable image.
    """
    if not path.exists():
        raise UsageError(f"input image {path} does not exist", path=path)
    if not path.is_file():
        raise UsageError(f"input image {path} is not a regular file", path=path)
    size = path.stat().st_size
    if size == 0:
        raise ImageError(
            f"input image {path} is empty (0 bytes)",
            path=path,
            hint="the download or export did not finish; re-download or re-export the image",
        )
    if _read_at(path, ISO_MAGIC_OFFSET, len(ISO_MAGIC)) == ISO_MAGIC:
        return ImageInfo(path, DiskFormat.ISO, size)
    info = _qemu_info(path)
    name = str(info.get("format", "?"))
    fmt = _QEMU_FORMATS.get(name)
    if fmt is None:
        raise ImageError(
            f"{path} is a '{name}' image; supported are raw, qcow2, vhd, vhdx",
            path=path,
            hint=f"convert it first: qemu-img convert -f {name} -O qcow2 {path} image.qcow2",
        )
    for key in ("backing-filename", "full-backing-filename"):
        if info.get(key):
            raise ImageError(
                f"{path} has a backing file ({info[key]}); liveos reads only self-contained images",
                path=path,
                hint=f"flatten it: qemu-img convert -O qcow2 {path} flat.qcow2",
            )
    specific = info.get("format-specific")
    data = specific.get("data") if isinstance(specific, dict) else None
    if isinstance(data, dict) and data.get("data-file"):
        raise ImageError(f"{path} uses an external data file; flatten it with qemu-img convert", path=path)
    virtual_size = _virtual_size(info, path)
    if fmt is DiskFormat.RAW:
        fmt, virtual_size = _raw_or_fixed_vhd(path, size)
    elif fmt is DiskFormat.VHD:
        _check_vhd_footer(path, VhdFooter.parse(_read_at(path, 0, VHD_FOOTER_SIZE)))
        if VhdFooter.parse(_read_at(path, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE)) is None:
            raise ImageError(
                f"{path} is a dynamic VHD without its footer at the end: the file is truncated",
                path=path,
                hint="re-download or re-export the image",
            )
    else:
        _check_metadata(path, fmt)
    if virtual_size < 1024:
        raise ImageError(
            f"{path} holds a disk of only {virtual_size} bytes ({_describe_start(path)}): too small for a "
            "partition table",
            path=path,
        )
    return ImageInfo(path, fmt, virtual_size)


def _check_metadata(path: Path, fmt: DiskFormat) -> None:
    """``qemu-img check`` (metadata only, milliseconds): a truncated qcow2/vhdx reads as zeros otherwise."""
    proc = run(
        ["qemu-img", "check", "--output=json", "-f", fmt.qemu_driver, path],
        step=f"checking {path}",
        check=False,
    )
    if proc.returncode in (0, 3, 63):  # clean, leaked clusters only, format has no check
        return
    try:
        report = json.loads(proc.stdout.decode(errors="replace") or "{}")
    except (ValueError, RecursionError):
        report = {}
    if not isinstance(report, dict):
        report = {}
    problems = proc.stderr.decode(errors="replace").strip().splitlines()[:3]
    raise ImageError(
        f"{path} ({fmt}) is damaged: {report.get('corruptions', '?')} corruptions found by qemu-img check"
        + (f" ({'; '.join(problems)})" if problems else ""),
        path=path,
        hint="the file is probably truncated or corrupt; re-download or re-export it",
    )


def _raw_or_fixed_vhd(path: Path, size: int) -> tuple[DiskFormat, int]:
    if size < VHD_FOOTER_SIZE:
        return DiskFormat.RAW, size
    footer = VhdFooter.parse(_read_at(path, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE))
    if footer is None:
        return DiskFormat.RAW, size
    if footer.disk_type != 2:
        raise ImageError(
            f"{path} ends with a VHD footer of disk type {footer.disk_type}, not fixed", path=path
        )
    _check_vhd_footer(path, footer)
    payload = size - VHD_FOOTER_SIZE
    if footer.current_size != payload:
        raise ImageError(
            f"{path}: fixed VHD footer says {footer.current_size} bytes but the payload is {payload} bytes",
            path=path,
            hint="the file is truncated or was padded; re-export it",
        )
    return DiskFormat.VHD_FIXED, payload


def _check_vhd_footer(path: Path, footer: VhdFooter | None) -> None:
    if footer is not None and footer.uses_geometry_size:
        raise ImageError(
            f"rejecting VHD file that uses 'Disk Geometry' based size: {path} (creator "
            f"{footer.creator.decode(errors='replace')!r}, geometry {footer.geometry_size} bytes, "
            f"current size {footer.current_size} bytes)",
            path=path,
            hint="pass '-o force_size=on' to qemu-img when outputting as 'vpc' (i.e. VHD)",
        )


#: errno values of a read the FUSE export could not serve: the daemon failed to read the image (a
#: corrupt cluster) or is gone.
_READ_ERRNOS = (errno.EIO, errno.ENOTCONN, errno.ECONNABORTED, errno.ENODEV)


def _legacy_options(info: ImageInfo) -> tuple[list[str], int]:
    """Driver options beyond qemu's ``--blockdev`` schema, and the disk size they give.

    A dynamic VHD is as big as its footer's ``current_size`` (what Hyper-V and Azure read), as
    ``qemu-img convert --image-opts ...,force_size_calc=current_size`` made it. qemu's default
    (``info.virtual_size``) is the CHS size for creators it does not know; only then does the
    option change anything, and only then is it passed (through qemu-nbd, see
    :mod:`liveos.host.export`).
    """
    if info.format is not DiskFormat.VHD:
        return [], info.virtual_size
    size = info.path.stat().st_size
    footer = VhdFooter.parse(_read_at(info.path, size - VHD_FOOTER_SIZE, VHD_FOOTER_SIZE))
    if footer is None or footer.current_size == info.virtual_size:
        return [], info.virtual_size
    return ["force_size_calc=current_size"], footer.current_size


@contextlib.contextmanager
def raw_view(info: ImageInfo, workdir: Path) -> Iterator[RawView]:
    """Yield a raw disk for ``info``: the input itself when raw, else a FUSE export in ``workdir``.

    The export (daemon, mount, files) is gone on exit; the input file is never opened for writing.
    A read of the export that fails because the image cannot be read there (a corrupt cluster, the
    daemon gone) and escapes the block becomes an :class:`ImageError` naming the image. Needs
    root for non-raw images (the export is mounted in liveos' private mount namespace).
    """
    if info.format is DiskFormat.ISO:
        raise UsageError(
            f"{info.path} is an ISO 9660 image, not a disk image",
            path=info.path,
            hint="open it with liveos.image.open_image(), which re-opens ISOs liveos wrote",
        )
    if info.format.in_place:
        yield RawView(info.path.resolve(), info.virtual_size, RawBacking.INPUT)
        return
    options, expected = _legacy_options(info)
    with fuse_export(info.path, info.format.qemu_driver, workdir, legacy_options=options) as export:
        if export.size != expected:
            log.warning("raw view of %s is %d bytes, expected %d", info.path, export.size, expected)
        try:
            yield RawView(export.path, export.size, RawBacking.FUSE)
        except OSError as exc:
            if exc.errno not in _READ_ERRNOS or not _inside(exc.filename, workdir):
                raise
            trouble = export.trouble()
            why = trouble or (
                "qemu-storage-daemon reported nothing: unless a disk of this machine is failing, the "
                "image's data is corrupt where it was read"
            )
            raise ImageError(
                f"{info.path} ({info.format}) could not be read: {exc.strerror}; {why}",
                path=info.path,
                hint=f"the image may be truncated or corrupt; check it with: qemu-img check {info.path}",
            ) from exc


def _inside(filename: object, workdir: Path) -> bool:
    """True if an OSError's ``filename`` is None (a read of an open file) or lies in ``workdir``."""
    if filename is None:
        return True
    if not isinstance(filename, str | bytes | os.PathLike):
        return False
    path = Path(os.fsdecode(filename))
    return path.is_absolute() and path.is_relative_to(workdir.resolve())
