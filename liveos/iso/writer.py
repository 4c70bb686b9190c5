"""Write a UEFI-bootable ISO 9660 image with pycdlib (2.5x faster than xorriso, streaming).

Format: ISO 9660 interchange level 3 (files >= 4 GiB as multi-extent) + Rock Ridge 1.09 (the real
names, modes and symlinks: what Linux and grub read) + Joliet level 3 (long names for Windows) +
an El Torito catalog with a UEFI (platform 0xEF) no-emulation entry for the FAT boot image,
after a BIOS (platform 0x00) entry for GRUB's i386-pc image when one is set (see
:mod:`liveos.iso.biosboot`: the default entry, so BIOS firmware boots it and UEFI picks its own).
With ``hybrid=True`` a GPT is written into the system area so the same file boots from a USB disk
(see :mod:`liveos.iso.hybrid`). Last, an MD5 is implanted in the primary volume descriptor the
way ``implantisomd5`` does, so ``checkisomd5`` and dracut's ``rd.live.check`` can verify the medium
(see :mod:`liveos.iso.isomd5`).

The tree is collected in memory first and handed to pycdlib in sorted order at :meth:`write`, so
the output does not depend on the order of ``add_*`` calls. File data is streamed: each source
file is open only while it is copied (no file descriptor per file is held). Holes in a source are
neither read nor written and all-zero blocks are not written (:class:`_SparseSource`,
:class:`_SparseOutput`): a sparse disk image gives a sparse ISO with the same bytes.

Label: grub (``search --label``) reads the *Joliet* volume id when Joliet is present and dracut
(``root=live:CDLABEL=``) uses blkid, which also prefers Joliet. The Joliet id holds 16 UCS-2
characters, so labels are limited to 16 d-characters and written identically into both volume
descriptors.

Reproducible output: with ``SOURCE_DATE_EPOCH`` set, every timestamp pycdlib writes (volume
descriptors, directory records, Rock Ridge TF) is that epoch in UTC. pycdlib has no option for
it, so its module-level clock is swapped during :meth:`write` (see :func:`_frozen_clock`).

Progress: pycdlib's ``progress_cb`` (bytes written of the ISO's size) goes to the current step
(:mod:`liveos.progress`).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import io
import logging
import os
import re
import stat
import sys
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from time import struct_time
from typing import Any, BinaryIO, cast

import pycdlib

from liveos.atomic import atomic_output, scratch_dir
from liveos.errors import HostError, ImageError, InternalError, UsageError
from liveos.iso.biosboot import LOAD_SECTORS, mbr_boot_code, patch_boot_image
from liveos.iso.hybrid import SECTOR, Extent, GptPartition, PartitionScheme, make_hybrid
from liveos.iso.isomd5 import implant
from liveos.media.persistence import (
    ALIGN,
    LINUX_DATA_TYPE,
    ROOT_PARTITION_NAME,
    RW_PARTITION_NAME,
    Persistence,
    copy_sparse,
    make_ext4,
)
from liveos.progress import Unit, current
from liveos.reproducible import source_date_epoch
from liveos.result import fd_sha256
from liveos.settings import Arch, validate_label

log = logging.getLogger("liveos.iso")

_BLOCK = 2048
_WRITE_BLOCKSIZE = 1024 * 1024
_ZEROS = bytes(_WRITE_BLOCKSIZE)  #: what an all-zero copy block is compared with
_ISO_FILE_MAX = 30  # Ecma-119 7.5.2: name + extension of a file identifier
_ISO_DIR_MAX = 31  # Ecma-119 7.6.3
_JOLIET_MAX = 64  # Joliet: 64 UCS-2 characters per name
_JOLIET_BAD = re.compile(r"[*/:;?\\]|[^\u0000-\uffff]")
_D_CHARS_BAD = re.compile(r"[^A-Z0-9_]")
#: Root names pycdlib itself uses: the El Torito catalog and the Rock Ridge deep-directory parking lot.
_RELOCATED_ISO, _RELOCATED_RR = "RR_MOVED", ".rr_moved"
_RESERVED_ROOT = {"boot.cat", _RELOCATED_RR}
_RESERVED_ISO = {"BOOT.CAT", _RELOCATED_ISO}


class _Kind(enum.Enum):
    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"


@dataclass
class _Node:
    """One entry of the tree being collected (builder-internal, mutable)."""

    kind: _Kind
    mode: int
    source: Path | bytes | None = None
    target: str | None = None
    children: dict[str, _Node] = field(default_factory=dict)


@dataclass(frozen=True)
class WrittenIso:
    """What :meth:`IsoWriter.write` produced: where, how big, and where the boot image lies."""

    path: Path
    size: int
    label: str
    efi_image_offset: int | None
    efi_image_size: int | None
    sha256: str  #: of the whole file, hashed while the atomic output was synced
    md5: str | None = None  #: the MD5 implanted for checkisomd5 (not the file's), None when not
    bios_image_offset: int | None = None  #: of the El Torito BIOS image, None without BIOS boot


class IsoWriter:
    """Collect files for a UEFI Live ISO, then write it in one streaming pass.

    Paths on the ISO are POSIX paths (``/boot/grub2/grub.cfg``); missing parent directories are
    created with mode 0755. Adding a path twice replaces the earlier entry.
    """

    def __init__(self, label: str, *, arch: Arch = Arch.X64) -> None:
        self.label = validate_label(label)
        self.arch = arch
        self._root = _Node(_Kind.DIR, 0o755)
        self._efi_image: PurePosixPath | None = None
        self._bios_image: PurePosixPath | None = None
        self._boot_hybrid = b""  #: GRUB's boot_hybrid.img: the MBR's BIOS boot code
        self._persistence: tuple[Persistence, PurePosixPath] | None = None

    # -- collecting -----------------------------------------------------------------------
    def add_file(self, iso_path: str, source: Path, *, mode: int | None = None) -> None:
        """Add the regular file ``source`` (its mode unless ``mode`` is given)."""
        st = _stat_regular(source)
        self._put(iso_path, _Node(_Kind.FILE, stat.S_IMODE(st.st_mode) if mode is None else mode, source))

    def add_bytes(self, iso_path: str, data: bytes, mode: int = 0o644) -> None:
        """Add a small generated file (grub.cfg, ``.disk/info``)."""
        self._put(iso_path, _Node(_Kind.FILE, mode, bytes(data)))

    def add_directory(self, iso_path: str, mode: int = 0o755) -> None:
        """Add an (empty) directory, or set the mode of an existing one."""
        parts = _split(iso_path)
        node = self._dir(parts, create=True)
        node.mode = mode

    def add_symlink(self, iso_path: str, target: str) -> None:
        """Add a Rock Ridge symlink; ``target`` is stored verbatim (absolute targets stay absolute)."""
        if not target:
            raise UsageError(f"symlink {iso_path} has an empty target")
        self._put(iso_path, _Node(_Kind.SYMLINK, 0o777, target=target))

    def add_tree(self, iso_dir: str, source_dir: Path) -> None:
        """Add everything below ``source_dir`` under ``iso_dir``: files, directories, symlinks.

        Symlinks are kept as symlinks (never followed). Device nodes, FIFOs and sockets cannot
        be represented usefully on a Live ISO and are skipped with a warning.
        """
        if not source_dir.is_dir():
            raise UsageError("add_tree: source is not a directory", path=source_dir)
        base = _split(iso_dir)
        self._dir(base, create=True).mode = stat.S_IMODE(source_dir.stat().st_mode)
        self._add_tree(base, source_dir)

    def set_efi_boot(self, iso_path: str, efiboot_img: Path | None = None) -> None:
        """Make ``iso_path`` (e.g. ``/boot/grub2/efiboot.img``) the El Torito UEFI boot image.

        With ``efiboot_img`` the file is added there first; otherwise it must be added already.
        """
        if efiboot_img is not None:
            self.add_file(iso_path, efiboot_img, mode=0o644)
        self._efi_image = PurePosixPath("/", *_split(iso_path))

    def set_persistence(self, persistence: Persistence, root_image: str) -> None:
        """On a hybrid ISO, add GPT partitions for a persistent USB disk: one over ``root_image``
        (the squashfs, already added) and an ext4 of ``persistence.size`` after the ISO data
        (see :mod:`liveos.media.persistence`). The ISO 9660 volume (and its MD5) excludes it."""
        self._persistence = (persistence, PurePosixPath("/", *_split(root_image)))

    def set_bios_boot(self, iso_path: str, boot_hybrid: bytes = b"") -> None:
        """Make ``iso_path`` (GRUB's ``i386-pc-eltorito`` image, already added) the first El Torito
        entry, for BIOS; ``boot_hybrid`` (GRUB's ``boot_hybrid.img``) becomes the MBR's boot code
        of a hybrid ISO, pointed at that image (see :mod:`liveos.iso.biosboot`)."""
        self._bios_image = PurePosixPath("/", *_split(iso_path))
        self._boot_hybrid = bytes(boot_hybrid)

    # -- writing --------------------------------------------------------------------------
    def write(
        self,
        out: Path,
        *,
        hybrid: bool = True,
        scheme: PartitionScheme = PartitionScheme.GPT,
        implant_md5: bool = True,
    ) -> WrittenIso:
        """Write the ISO to ``out`` atomically; return its size and the boot image's extent.

        ``hybrid=False`` writes a plain (optical-only) ISO; otherwise a GPT (or a hybrid MBR,
        see ``scheme``) with an ESP over the boot image makes it bootable from a USB disk too.
        ``implant_md5=False`` leaves out the implanted MD5 (which costs one more read of the file).
        """
        if hybrid and self._efi_image is None:
            raise UsageError("a hybrid ISO needs an EFI boot image", hint="call set_efi_boot() first")
        epoch = source_date_epoch()
        # The hashing thread outlives the stack: the digest is taken while the output is synced.
        with (
            ThreadPoolExecutor(1, thread_name_prefix="liveos-sha256") as hashing,
            contextlib.ExitStack() as stack,
        ):
            if epoch is not None:
                stack.enter_context(_frozen_clock(epoch))
            iso = pycdlib.PyCdlib()
            iso.new(
                interchange_level=3,
                joliet=3,
                rock_ridge="1.09",
                vol_ident=self.label,
                sys_ident="LINUX",
                app_ident_str="LIVEOS",
            )
            stack.callback(iso.close)
            iso.set_relocated_name(_RELOCATED_ISO, _RELOCATED_RR)
            efi_iso_path = self._populate(iso, stack)
            bios_iso_path = self._add_bios_eltorito(iso)  # first: the default entry
            if efi_iso_path is not None:
                self._add_eltorito(iso, efi_iso_path)
            fp = stack.enter_context(atomic_output(out))
            step = current()

            def written(done: int, total: int, opaque: object) -> None:
                step.advance(done, total, Unit.BYTES)

            sparse = _SparseOutput(fp)  # pycdlib only writes, seeks and tells: typed as a file
            try:
                iso.write_fp(
                    cast(BinaryIO, sparse),
                    blocksize=_WRITE_BLOCKSIZE,
                    progress_cb=written if step.active else None,
                )
            except pycdlib.pycdlibexception.PyCdlibException as exc:
                raise ImageError(f"writing the ISO failed: {exc}", path=out) from exc
            except OSError as exc:
                where = exc.filename or out
                raise HostError(
                    f"writing the ISO failed: {exc.strerror}", path=where, hint=_io_hint(exc)
                ) from exc
            sparse.close()
            iso_size = fp.tell()
            extent = None
            if efi_iso_path is not None:
                record = iso.get_record(iso_path=efi_iso_path)
                extent = Extent(record.extent_location() * _BLOCK, record.get_data_length())
            bios, boot_code = None, b""
            if bios_iso_path is not None:
                record = iso.get_record(iso_path=bios_iso_path)
                bios = Extent(record.extent_location() * _BLOCK, record.get_data_length())
                patch_boot_image(fp, bios.offset, bios.size)
                boot_code = mbr_boot_code(self._boot_hybrid, bios.offset) if self._boot_hybrid else b""
            size = iso_size
            if hybrid and extent is not None:
                extra = self._persistent_partitions(iso, fp, iso_size)
                end = (extra[-1].last_lba + 1) * SECTOR if extra else 0
                size = make_hybrid(
                    fp, iso_size=iso_size, esp=extent, scheme=scheme, boot_code=boot_code,
                    extra=extra, end=end,
                )  # fmt: skip
                if extra:
                    _write_ext4(fp, Path(out).parent, extra[-1].first_lba * SECTOR, self._persistence)
            elif self._persistence is not None:
                raise UsageError("persistence needs a hybrid ISO", hint="keep hybrid=True")
            # After the partition tables (the sum covers the system area), before the file's hash.
            md5 = implant(fp).md5 if implant_md5 else None
            fp.flush()
            digest = hashing.submit(_sha256_of_copy, os.dup(fp.fileno()))
        return WrittenIso(
            Path(out),
            size,
            self.label,
            None if extent is None else extent.offset,
            None if extent is None else extent.size,
            digest.result(),
            md5,
            None if bios is None else bios.offset,
        )

    # -- internals ------------------------------------------------------------------------
    def _persistent_partitions(self, iso: Any, fp: BinaryIO, iso_size: int) -> tuple[GptPartition, ...]:
        """The root-image and persistence GPT partitions (none without persistence)."""
        if self._persistence is None:
            return ()
        persistence, root_image = self._persistence
        try:
            record = iso.get_record(rr_path=str(root_image))
        except pycdlib.pycdlibexception.PyCdlibException:
            raise UsageError(f"root image {root_image} is not a file on the ISO") from None
        offset = record.extent_location() * _BLOCK
        size = self._file_size(root_image)  # a multi-extent file's first record has a part only
        fp.seek(offset)
        if fp.read(4) != b"hsqs":
            raise UsageError(
                f"persistence needs a squashfs root image; {root_image} is not one",
                hint="dracut boots a persistent USB disk from a partition over the squashfs",
            )
        first = -(-iso_size // ALIGN) * ALIGN // SECTOR
        return (
            GptPartition(
                LINUX_DATA_TYPE, persistence.root_guid, offset // SECTOR,
                (offset + size + SECTOR - 1) // SECTOR - 1, ROOT_PARTITION_NAME,
            ),
            GptPartition(
                LINUX_DATA_TYPE, persistence.rw_guid, first, first + persistence.size // SECTOR - 1,
                RW_PARTITION_NAME,
            ),
        )  # fmt: skip

    def _file_size(self, path: PurePosixPath) -> int:
        node = self._root
        for part in path.parts[1:]:
            node = node.children[part]
        if isinstance(node.source, bytes):
            return len(node.source)
        if isinstance(node.source, Path):
            return _stat_regular(node.source).st_size
        raise InternalError(f"{path} is not a file on the ISO")

    def _put(self, iso_path: str, node: _Node) -> None:
        parts = _split(iso_path)
        if not parts:
            raise UsageError(f"cannot replace the ISO root with {iso_path!r}")
        parent = self._dir(parts[:-1], create=True)
        old = parent.children.get(parts[-1])
        if old is not None and old.kind is _Kind.DIR and node.kind is not _Kind.DIR:
            raise UsageError(f"{iso_path} is already a directory on the ISO")
        parent.children[parts[-1]] = node

    def _dir(self, parts: tuple[str, ...], *, create: bool) -> _Node:
        node = self._root
        for i, part in enumerate(parts):
            child = node.children.get(part)
            if child is None:
                if not create:
                    raise InternalError(f"missing directory {'/'.join(parts[: i + 1])}")
                child = node.children[part] = _Node(_Kind.DIR, 0o755)
            elif child.kind is not _Kind.DIR:
                raise UsageError(f"/{'/'.join(parts[: i + 1])} is a file on the ISO, not a directory")
            node = child
        return node

    def _add_tree(self, base: tuple[str, ...], directory: Path) -> None:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            parts = (*base, _check_name(entry.name, Path(entry.path)))
            st = entry.stat(follow_symlinks=False)
            path = Path(entry.path)
            iso_path = "/" + "/".join(parts)
            if stat.S_ISLNK(st.st_mode):
                self.add_symlink(iso_path, os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                self._dir(parts, create=True).mode = stat.S_IMODE(st.st_mode)
                self._add_tree(parts, path)
            elif stat.S_ISREG(st.st_mode):
                self._put(iso_path, _Node(_Kind.FILE, stat.S_IMODE(st.st_mode), path))
            else:
                log.warning("skipping %s: special files cannot go on the ISO", path)

    def _populate(self, iso: Any, stack: contextlib.ExitStack) -> str | None:
        """Hand the tree to pycdlib, parents first; return the ISO 9660 path of the boot image."""
        efi_iso_path = None
        todo: list[tuple[_Node, str, str, tuple[str, ...]]] = [(self._root, "", "", ())]
        while todo:
            node, iso_dir, joliet_dir, rr_parts = todo.pop()
            is_root = node is self._root
            if is_root and (clash := _RESERVED_ROOT & node.children.keys()):
                raise UsageError(f"/{clash.pop()} is reserved on the ISO root", hint="rename or move it")
            iso_names = _unique_names(node.children, _iso_name, _RESERVED_ISO if is_root else set())
            joliet_names = _unique_names(node.children, _joliet_name, {"BOOT.CAT"} if is_root else set())
            for name in sorted(node.children):
                child = node.children[name]
                iso_path = f"{iso_dir}/{iso_names[name]}"
                joliet_path = f"{joliet_dir}/{joliet_names[name]}"
                parts = (*rr_parts, name)
                try:
                    _add_one(iso, child, name, iso_path, joliet_path, stack)
                except pycdlib.pycdlibexception.PyCdlibException as exc:
                    raise ImageError(f"cannot add /{'/'.join(parts)} to the ISO: {exc}") from exc
                if child.kind is _Kind.DIR:
                    todo.append((child, iso_path, joliet_path, parts))
                elif self._efi_image is not None and PurePosixPath("/", *parts) == self._efi_image:
                    efi_iso_path = iso_path + ";1"
        if self._efi_image is not None and efi_iso_path is None:
            raise UsageError(f"EFI boot image {self._efi_image} is not a file on the ISO")
        return efi_iso_path

    def _add_bios_eltorito(self, iso: Any) -> str | None:
        """The BIOS entry (no emulation, 4 sectors, boot info table); its ISO 9660 path."""
        if self._bios_image is None:
            return None
        try:
            record = iso.get_record(rr_path=str(self._bios_image))
        except pycdlib.pycdlibexception.PyCdlibException:
            raise UsageError(f"BIOS boot image {self._bios_image} is not a file on the ISO") from None
        iso_path: str = iso.full_path_from_dirrecord(record)
        _add_entry(iso, iso_path, LOAD_SECTORS, platform_id=0x00, boot_info_table=True)
        return iso_path

    def _add_eltorito(self, iso: Any, efi_iso_path: str) -> None:
        size = iso.get_record(iso_path=efi_iso_path).get_data_length()
        sectors = -(-size // 512)
        if sectors > 0xFFFF or size == 0:
            raise UsageError(
                f"EFI boot image {self._efi_image} has {size} bytes; El Torito needs 1..{0xFFFF * 512}",
                hint="build it with liveos.iso.efiboot.build_efiboot_image()",
            )
        _add_entry(iso, efi_iso_path, sectors, platform_id=0xEF, efi=True)


def _add_entry(iso: Any, iso_path: str, sectors: int, **kind: Any) -> None:
    """One no-emulation El Torito entry (the first call also makes the boot catalog)."""
    iso.add_eltorito(
        iso_path,
        bootcatfile="/BOOT.CAT;1",
        rr_bootcatname="boot.cat",
        joliet_bootcatfile="/boot.cat",
        boot_load_size=sectors,
        media_name="noemul",
        **kind,
    )


def _add_one(
    iso: Any, node: _Node, name: str, iso_path: str, joliet_path: str, stack: contextlib.ExitStack
) -> None:
    """Add one entry to the pycdlib object (its parent already exists); files close with ``stack``."""
    if node.kind is _Kind.DIR:
        iso.add_directory(iso_path, rr_name=name, joliet_path=joliet_path, file_mode=0o040000 | node.mode)
    elif node.kind is _Kind.SYMLINK:
        iso.add_symlink(iso_path, rr_symlink_name=name, rr_path=node.target, joliet_path=None)
    elif isinstance(node.source, Path):
        size = _stat_regular(node.source).st_size
        iso.add_fp(
            stack.enter_context(_SparseSource(node.source)),
            size,
            iso_path + ";1",
            rr_name=name,
            joliet_path=joliet_path,
            file_mode=0o100000 | node.mode,
        )
    elif isinstance(node.source, bytes):
        data = node.source
        iso.add_fp(
            io.BytesIO(data), len(data), iso_path + ";1", rr_name=name, joliet_path=joliet_path,
            file_mode=0o100000 | node.mode,
        )  # fmt: skip
    else:
        raise InternalError(f"file node {iso_path} has no source")


def _unique_names(children: dict[str, _Node], mangle: Any, reserved: set[str]) -> dict[str, str]:
    """Map each real name to a mangled name unique in its directory (case-insensitively)."""
    result: dict[str, str] = {}
    taken = set(reserved)
    for name in sorted(children):
        is_dir = children[name].kind is _Kind.DIR
        candidate = mangle(name, is_dir, "")
        n = 1
        while candidate.upper() in taken:
            candidate = mangle(name, is_dir, f"_{n}")
            n += 1
        taken.add(candidate.upper())
        result[name] = candidate
    return result


def _iso_name(name: str, is_dir: bool, suffix: str) -> str:
    """ISO 9660 level 3 identifier: d-characters, <= 30 (files) / 31 (dirs); ``;1`` added later."""
    if is_dir:
        clean = _D_CHARS_BAD.sub("_", name.upper())
        return clean[: _ISO_DIR_MAX - len(suffix)] + suffix
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    stem = _D_CHARS_BAD.sub("_", stem.upper())
    ext = _D_CHARS_BAD.sub("_", ext.upper())[:8]
    stem = stem[: _ISO_FILE_MAX - 1 - len(ext) - len(suffix)] + suffix
    if not stem and not ext:
        stem = "_"
    return f"{stem}.{ext}"


def _joliet_name(name: str, is_dir: bool, suffix: str) -> str:
    """Joliet name: the real name minus forbidden characters, <= 64 UCS-2 characters.

    A uniqueness ``suffix`` goes before a file's extension (``a_b_1.txt``).
    """
    clean = _JOLIET_BAD.sub("_", name)
    stem, dot, ext = clean.rpartition(".")
    if is_dir or not dot or not stem or len(ext) > 16:
        stem, dot, ext = clean, "", ""
    stem = stem[: _JOLIET_MAX - len(suffix) - len(dot) - len(ext)]
    return f"{stem}{suffix}{dot}{ext}"


def _split(iso_path: str) -> tuple[str, ...]:
    """Split an ISO path into checked components (no ``.``, ``..`` or empty names)."""
    parts = tuple(p for p in iso_path.split("/") if p)
    for part in parts:
        if part in (".", ".."):
            raise UsageError(f"ISO path {iso_path!r} must not contain '.' or '..'")
        _check_name(part, iso_path)
    return parts


def _check_name(name: str, where: str | Path) -> str:
    """Rock Ridge names are UTF-8 on the ISO: undecodable (surrogate-escaped) names cannot go there."""
    try:
        encoded = name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise UsageError(f"file name {name!r} is not valid UTF-8", path=str(where)) from exc
    if len(encoded) > 255:
        raise UsageError(f"file name longer than 255 bytes: {name!r}", path=str(where))
    return name


def _write_ext4(
    fp: BinaryIO, scratch_parent: Path, offset: int, persistence: tuple[Persistence, PurePosixPath] | None
) -> None:
    """mkfs.ext4 the persistence partition in a sparse scratch file and copy its data to ``offset``."""
    if persistence is None:
        raise InternalError("no persistence to write")
    with scratch_dir(scratch_parent, "liveos-rw-") as scratch:
        copy_sparse(make_ext4(scratch / "rw.img", persistence[0]), fp, offset)


def _io_hint(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "free space on the output file system (the ISO needs about the size of its content)"
    return "check that every source file is readable and the output directory writable"


def _stat_regular(source: Path) -> os.stat_result:
    try:
        st = source.stat()
    except OSError as exc:
        raise UsageError(f"cannot read file for the ISO: {exc.strerror}", path=source) from exc
    if not stat.S_ISREG(st.st_mode):
        raise UsageError("not a regular file", path=source)
    return st


class _FrozenClock(types.SimpleNamespace):
    """Stand-in for the ``time`` module inside pycdlib: "now" is the epoch, local time is UTC."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self._epoch = float(epoch)

    def time(self) -> float:
        return self._epoch

    def localtime(self, secs: float | None = None) -> struct_time:
        return time.gmtime(self._epoch if secs is None else secs)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextlib.contextmanager
def _frozen_clock(epoch: int) -> Iterator[None]:
    """Swap the ``time`` module seen by pycdlib's modules for :class:`_FrozenClock` (not thread-safe)."""
    clock = _FrozenClock(epoch)
    patched = [
        m
        for n, m in list(sys.modules.items())
        if n.startswith("pycdlib") and getattr(m, "time", None) is time
    ]
    for module in patched:
        module.time = clock  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module in patched:
            module.time = time  # type: ignore[attr-defined]


class _SparseOutput:
    """The output as pycdlib sees it: an all-zero write at or past the end is skipped (a hole).

    A sparse input (a raw disk image with unallocated space) then makes a sparse ISO instead of
    gigabytes of written zeros. Writes below the end are always made (those bytes may hold data),
    and :meth:`close` grows the file over a trailing hole, so the content is exactly what writing
    every byte would give: a hole reads as zeros.
    """

    def __init__(self, fp: BinaryIO) -> None:
        self._fp = fp
        self._pos = fp.tell()
        self._end = os.fstat(fp.fileno()).st_size

    def write(self, data: bytes) -> int:
        size = len(data)
        if not size:
            return 0  # an empty write does not extend a file
        if self._pos >= self._end and data == _ZEROS[:size]:
            self._pos = self._end = self._pos + size
            return size
        if self._fp.tell() != self._pos:
            self._fp.seek(self._pos)
        self._fp.write(data)
        self._pos += size
        self._end = max(self._end, self._pos)
        return size

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._end}[whence]
        if base + offset < 0:
            raise InternalError(f"seek to {base + offset} in the ISO output")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        """Extend the file to its logical end; leave the real file's offset where this one is."""
        self._fp.flush()
        if os.fstat(self._fp.fileno()).st_size < self._end:
            self._fp.truncate(self._end)
        self._fp.seek(self._pos)


class _SparseSource:
    """A source file as pycdlib reads it: open only while read, holes returned without reading.

    pycdlib reads each file once, front to back, in ``_WRITE_BLOCKSIZE`` blocks. A block that lies
    in a hole (``SEEK_DATA``) is :data:`_ZEROS` itself, not read from disk, and
    :class:`_SparseOutput` leaves it a hole: a sparse disk image costs neither reads nor writes.
    The file is opened at the first read and closed at its end (no descriptor per file is held);
    :meth:`close` covers a write that stops half-way.
    """

    mode = "rb"  #: pycdlib's add_fp wants a binary file

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._size = 0  #: of the open file
        self._pos = 0
        self._hole = (0, 0)  #: a known hole [start, end) of the open file

    def __enter__(self) -> _SparseSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._open()[1]}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        fd, file_size = self._open()
        start = self._pos
        end = file_size if size < 0 else min(start + size, file_size)
        if start < end and not self._hole[0] <= start < end <= self._hole[1]:
            self._hole = (start, _next_data(fd, start, file_size))
        if start < end <= self._hole[1]:
            data = _ZEROS if end - start == len(_ZEROS) else bytes(end - start)
        else:
            data = _pread_all(fd, end - start, start)
        self._pos += len(data)
        if self._pos >= file_size:
            self.close()
        return data

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _open(self) -> tuple[int, int]:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            self._size = os.fstat(self._fd).st_size
            self._hole = (0, 0)
        return self._fd, self._size


def _next_data(fd: int, offset: int, size: int) -> int:
    """Where data starts at or after ``offset`` (``offset`` itself outside a hole, ``size`` if none)."""
    try:
        return min(os.lseek(fd, offset, os.SEEK_DATA), size)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            return size  # a hole up to the end
        return offset  # no hole information: read everything


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    """``size`` bytes at ``offset`` (fewer only at the end of the file)."""
    chunks = []
    while size > 0 and (chunk := os.pread(fd, size, offset)):
        chunks.append(chunk)
        size -= len(chunk)
        offset += len(chunk)
    return b"".join(chunks)


def _sha256_of_copy(fd: int) -> str:
    """SHA-256 through ``fd`` (a dup the caller gave away: closed here)."""
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)
