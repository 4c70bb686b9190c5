"""Write a UEFI-bootable ISO 9660 image with pycdlib (2.5x faster than xorriso, streaming).

Format: ISO 9660 interchange level 3 (files >= 4 GiB as multi-extent) + Rock Ridge 1.09 (the real
names, modes and symlinks: what Linux and grub read) + Joliet level 3 (long names for Windows) +
an El Torito catalog with ONE UEFI (platform 0xEF) no-emulation entry for the FAT boot image.
With ``hybrid=True`` a GPT is written into the system area so the same file boots from a USB disk
(see :mod:`liveos.iso.hybrid`).

The tree is collected in memory first and handed to pycdlib in sorted order at :meth:`write`, so
the output does not depend on the order of ``add_*`` calls. File data is streamed: pycdlib opens
each source file only while copying it (no file descriptor per file is held).

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
from typing import Any

import pycdlib

from liveos.atomic import atomic_output
from liveos.errors import HostError, ImageError, InternalError, UsageError
from liveos.iso.hybrid import Extent, PartitionScheme, make_hybrid
from liveos.progress import Unit, current
from liveos.reproducible import source_date_epoch
from liveos.result import fd_sha256
from liveos.settings import Arch, validate_label

log = logging.getLogger("liveos.iso")

_BLOCK = 2048
_WRITE_BLOCKSIZE = 1024 * 1024
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

    # -- writing --------------------------------------------------------------------------
    def write(
        self,
        out: Path,
        *,
        hybrid: bool = True,
        scheme: PartitionScheme = PartitionScheme.GPT,
    ) -> WrittenIso:
        """Write the ISO to ``out`` atomically; return its size and the boot image's extent.

        ``hybrid=False`` writes a plain (optical-only) ISO; otherwise a GPT (or a hybrid MBR,
        see ``scheme``) with an ESP over the boot image makes it bootable from a USB disk too.
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
            efi_iso_path = self._populate(iso)
            if efi_iso_path is not None:
                self._add_eltorito(iso, efi_iso_path)
            fp = stack.enter_context(atomic_output(out))
            step = current()

            def written(done: int, total: int, opaque: object) -> None:
                step.advance(done, total, Unit.BYTES)

            try:
                iso.write_fp(fp, blocksize=_WRITE_BLOCKSIZE, progress_cb=written if step.active else None)
            except pycdlib.pycdlibexception.PyCdlibException as exc:
                raise ImageError(f"writing the ISO failed: {exc}", path=out) from exc
            except OSError as exc:
                where = exc.filename or out
                raise HostError(
                    f"writing the ISO failed: {exc.strerror}", path=where, hint=_io_hint(exc)
                ) from exc
            iso_size = fp.tell()
            extent = None
            if efi_iso_path is not None:
                record = iso.get_record(iso_path=efi_iso_path)
                extent = Extent(record.extent_location() * _BLOCK, record.get_data_length())
            size = iso_size
            if hybrid and extent is not None:
                size = make_hybrid(fp, iso_size=iso_size, esp=extent, scheme=scheme)
            fp.flush()
            digest = hashing.submit(_sha256_of_copy, os.dup(fp.fileno()))
        return WrittenIso(
            Path(out),
            size,
            self.label,
            None if extent is None else extent.offset,
            None if extent is None else extent.size,
            digest.result(),
        )

    # -- internals ------------------------------------------------------------------------
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

    def _populate(self, iso: Any) -> str | None:
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
                    _add_one(iso, child, name, iso_path, joliet_path)
                except pycdlib.pycdlibexception.PyCdlibException as exc:
                    raise ImageError(f"cannot add /{'/'.join(parts)} to the ISO: {exc}") from exc
                if child.kind is _Kind.DIR:
                    todo.append((child, iso_path, joliet_path, parts))
                elif self._efi_image is not None and PurePosixPath("/", *parts) == self._efi_image:
                    efi_iso_path = iso_path + ";1"
        if self._efi_image is not None and efi_iso_path is None:
            raise UsageError(f"EFI boot image {self._efi_image} is not a file on the ISO")
        return efi_iso_path

    def _add_eltorito(self, iso: Any, efi_iso_path: str) -> None:
        size = iso.get_record(iso_path=efi_iso_path).get_data_length()
        sectors = -(-size // 512)
        if sectors > 0xFFFF or size == 0:
            raise UsageError(
                f"EFI boot image {self._efi_image} has {size} bytes; El Torito needs 1..{0xFFFF * 512}",
                hint="build it with liveos.iso.efiboot.build_efiboot_image()",
            )
        iso.add_eltorito(
            efi_iso_path,
            bootcatfile="/BOOT.CAT;1",
            rr_bootcatname="boot.cat",
            joliet_bootcatfile="/boot.cat",
            boot_load_size=sectors,
            platform_id=0xEF,
            efi=True,
            media_name="noemul",
        )


def _add_one(iso: Any, node: _Node, name: str, iso_path: str, joliet_path: str) -> None:
    """Add one entry to the pycdlib object (its parent already exists)."""
    if node.kind is _Kind.DIR:
        iso.add_directory(iso_path, rr_name=name, joliet_path=joliet_path, file_mode=0o040000 | node.mode)
    elif node.kind is _Kind.SYMLINK:
        iso.add_symlink(iso_path, rr_symlink_name=name, rr_path=node.target, joliet_path=None)
    elif isinstance(node.source, Path):
        _stat_regular(node.source)
        iso.add_file(
            str(node.source),
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


def _sha256_of_copy(fd: int) -> str:
    """SHA-256 through ``fd`` (a dup the caller gave away: closed here)."""
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)
