"""Check a finished ISO or PXE bundle before it is shipped or booted: what ``liveos verify`` runs.

Each check reads the medium (never mounts it) and says ok or why not:

* ``grub-references``: every file a grub.cfg loads (``linux``, ``initrd``, ``chainloader``,
  ``configfile``, ``source``) exists on the medium -- the configs on the medium and, on an ISO,
  the one in the El Torito image.
* ``labels``: the ISO volume label (and the Joliet one), every ``search --label``, every
  ``root=live:CDLABEL=`` and the state file name the same label; a PXE bundle's ``root=live:<URL>``
  names the ISO the bundle carries, whose label is the bundle's.
* ``efi-image``: El Torito's UEFI entry points at the FAT image, which holds shim
  (``EFI/BOOT/boot<arch>.efi``) and grub (``grub<arch>.efi``).
* ``bios-boot``: when an ISO boots under BIOS (a BIOS El Torito entry, GRUB's i386-pc files or
  MBR boot code), all of it: the BIOS entry is the default one (no emulation, 4 sectors) and
  points at ``<grub dir>/i386-pc/eltorito.img``, its boot info table and GRUB block list point at
  itself, a hybrid ISO's MBR code points at its core, and ``normal.mod`` is beside it.
* ``partition-tables``: the hybrid GPT of an ISO: protective MBR, both GPT headers and their
  entry arrays (CRCs, positions, sizes), partitions inside the file, the ESP over the El Torito
  image.
* ``initrd-modules``: a bootstrap initrd holds dracut's ``dmsquash-live`` (and ``livenet`` in a
  PXE bundle), found by the module's files in the CPIO listing.
* ``root-image``: the squashfs (``unsquashfs -pf /dev/null`` decompresses every block), the erofs
  (``fsck.erofs --extract`` decompresses every file, on a scratch copy: erofs-utils 1.5 reads no
  offset into the ISO) or the full-os CPIO (every member read to the end) is readable end to end.
* ``state``: ``/liveos/state.json`` parses strictly and matches the medium's mode.
* ``md5``: the MD5 implanted in an ISO's volume descriptor (``implantisomd5``'s format, what
  ``checkisomd5`` and ``rd.live.check`` verify) matches the ISO; an ISO without one passes.

A bootstrap PXE bundle's ISO is checked too (the checks named ``live.iso: ...``). Damaged media
fail the check concerned and leave the others alone; a missing host tool is a
:class:`~liveos.errors.HostError`, not a failed check.
"""

from __future__ import annotations

import enum
import logging
import os
import posixpath
import struct
import subprocess
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from liveos import views
from liveos.cpio.reader import iter_entries
from liveos.erofs import EROFS_SUPERBLOCK_OFFSET, is_erofs
from liveos.errors import CommandError, HostError, ImageError, LiveOSError
from liveos.grub import GrubConfig
from liveos.grub.parser import DEVICE, UNKNOWN, expand_parts, split_assignment
from liveos.image import fat
from liveos.inspection import (
    MAX_CONFIG_BYTES,
    GrubFile,
    IsoMedia,
    Media,
    MediaKind,
    carried_iso,
    grub_configs,
    load_env_vars,
    menu_entries,
    open_media,
    read_state,
)
from liveos.iso import biosboot, isomd5
from liveos.iso.hybrid import ESP_TYPE, SECTOR, GptHeader, GptPartition, HybridLayout, MbrPartition
from liveos.layout import EFIBOOT_PATH, FULL_OS_INITRD, SQUASHFS_PATH
from liveos.media.persistence import ROOT_PARTITION_NAME, RW_PARTITION_NAME
from liveos.run import output, run
from liveos.settings import Arch, InitramfsMode

log = logging.getLogger("liveos")

#: dracut module -> basenames of files only that module installs (any one is evidence).
MODULE_FILES = {
    "dmsquash-live": ("dmsquash-live-root", "parse-dmsquash-live.sh"),
    "livenet": ("livenetroot", "parse-livenet.sh"),
}
#: Where dracut lists the modules it put into an initrd.
MODULES_TXT = ("usr/lib/dracut/modules.txt", "lib/dracut/modules.txt")
#: grub commands that load a file, and which of their words are paths.
_LOADERS = {"linux", "linuxefi", "linux16", "chainloader", "configfile", "source"}
_INITRDS = {"initrd", "initrdefi", "initrd16"}
#: The longest value a variable may take while expanding paths (a hostile config doubles one).
_MAX_VALUE = 4096
_CD_SECTOR = 2048
_SQUASHFS_MAGIC = b"hsqs"


class CheckKind(enum.StrEnum):
    """The checks :func:`verify` runs (see the module documentation)."""

    GRUB_REFERENCES = "grub-references"
    LABELS = "labels"
    EFI_IMAGE = "efi-image"
    BIOS_BOOT = "bios-boot"
    PARTITION_TABLES = "partition-tables"
    INITRD_MODULES = "initrd-modules"
    ROOT_IMAGE = "root-image"
    STATE = "state"
    MD5 = "md5"


@dataclass(frozen=True)
class Check:
    """The outcome of one check: ``ok``, and what was found or what is wrong."""

    kind: CheckKind
    ok: bool
    detail: str
    media: str = ""  #: "" for the medium itself, else the carried file (``/live.iso``)

    @property
    def name(self) -> str:
        """``kind``, prefixed with the carried medium (``live.iso: labels``)."""
        return f"{self.media.lstrip('/')}: {self.kind.value}" if self.media else self.kind.value

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "media": self.media,
            "ok": self.ok,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class VerifyReport:
    """Every check of one medium; ``ok`` when all passed."""

    path: Path
    kind: MediaKind
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """Every check passed."""
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The checks that failed, in order."""
        return tuple(c for c in self.checks if not c.ok)

    def check(self, kind: CheckKind | str, media: str = "") -> Check:
        """The check of that kind (of the carried ISO ``media``, e.g. ``/live.iso``)."""
        for c in self.checks:
            if c.kind == kind and c.media == media:
                return c
        raise KeyError(f"{kind}{' of ' + media if media else ''}")

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable: what ``liveos verify --json`` prints."""
        return {
            "path": str(self.path),
            "kind": self.kind.value,
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
        }

    def describe(self) -> str:
        """One line per check, failures first in the verdict line."""
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures)} of {len(self.checks)} checks)"
        lines = [f"verify {self.path} ({self.kind.value}): {verdict}"]
        for c in self.checks:
            detail = c.detail.replace("\n", "\n" + " " * 8)
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'}  {c.name}: {detail}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        failed = ", ".join(c.name for c in self.failures)
        return f"VerifyReport({str(self.path)!r}, ok={self.ok}{', failed: ' + failed if failed else ''})"

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe)

    def _repr_html_(self) -> str:
        return views.safe_html(self._html, "verify report")

    def _html(self) -> str:
        rows = [("ok" if c.ok else "FAILED", c.name, c.detail) for c in self.checks]
        verdict = "OK" if self.ok else f"FAILED ({len(self.failures)} of {len(self.checks)} checks)"
        return views.html_block(
            f"verify {self.path}: {verdict}", views.html_table(["result", "check", "detail"], rows)
        )


def verify(path: str | os.PathLike[str], *, workdir: Path | None = None) -> VerifyReport:
    """Run every check on the ISO, PXE folder or PXE ``.tar.gz`` at ``path``.

    A medium that cannot be opened at all (not an ISO, a truncated archive) raises
    :class:`ImageError` / :class:`UsageError`; everything else ends up in the report.
    """
    with open_media(path, workdir=workdir) as media:
        return VerifyReport(media.path, media.kind, tuple(_checks(media)))


def _checks(media: Media, *, carried: str = "", pxe: bool | None = None) -> list[Check]:
    """The checks of ``media`` (``carried``: its path in the bundle that carries it)."""
    pxe = media.kind is not MediaKind.ISO if pxe is None else pxe
    facts = _Facts(media)
    runs: list[tuple[CheckKind, Callable[[], str]]] = [
        (CheckKind.STATE, facts.check_state),
        (CheckKind.GRUB_REFERENCES, facts.check_references),
        (CheckKind.LABELS, facts.check_labels),
    ]
    if isinstance(media, IsoMedia):
        runs += [
            (CheckKind.EFI_IMAGE, facts.check_efi_image),
            (CheckKind.BIOS_BOOT, facts.check_bios),
            (CheckKind.PARTITION_TABLES, facts.check_tables),
        ]
    runs += [
        (CheckKind.INITRD_MODULES, lambda: facts.check_initrd_modules(pxe)),
        (CheckKind.ROOT_IMAGE, facts.check_root_image),
    ]
    if isinstance(media, IsoMedia):
        runs.append((CheckKind.MD5, facts.check_md5))
    checks = [_run(kind, check, carried) for kind, check in runs]
    if media.kind is not MediaKind.ISO:
        checks += facts.carried_checks()
    return checks


def _run(kind: CheckKind, check: Callable[[], str], media: str) -> Check:
    try:
        return Check(kind, True, check(), media)
    except HostError:
        raise
    except (LiveOSError, OSError) as exc:  # CommandError is a LiveOSError
        text = (
            exc.message if isinstance(exc, LiveOSError) and not isinstance(exc, CommandError) else str(exc)
        )
        return Check(kind, False, text, media)


class _Failed(ImageError):
    """A check found the medium wrong (the message says how)."""

    def __init__(self, problems: Iterable[str]) -> None:
        super().__init__("; ".join(problems))


class _Facts:
    """What several checks read once: the state, the grub configs, the El Torito image."""

    def __init__(self, media: Media) -> None:
        self.media = media
        self._configs: list[GrubFile] | None = None
        self._efi: tuple[int, int] | None = None
        self._embedded: list[GrubFile] | None = None

    @property
    def configs(self) -> list[GrubFile]:
        if self._configs is None:
            self._configs = grub_configs(self.media)
        return self._configs

    def mode(self) -> InitramfsMode:
        """The mode the state file says, else what the medium holds."""
        try:
            return read_state(self.media).mode
        except ImageError:
            full = self.media.is_file(str(FULL_OS_INITRD))
            return InitramfsMode.FULL_OS if full else InitramfsMode.BOOTSTRAP

    # -- state ---------------------------------------------------------------------------------
    def check_state(self) -> str:
        state = read_state(self.media)
        if state.mode is InitramfsMode.FULL_OS and not self.media.is_file(str(FULL_OS_INITRD)):
            raise _Failed([f"the state says full-os but {FULL_OS_INITRD} is missing"])
        iso = self.media.kind is MediaKind.ISO
        if state.mode is InitramfsMode.BOOTSTRAP and iso and not self.media.is_file(str(SQUASHFS_PATH)):
            raise _Failed([f"the state says bootstrap but {SQUASHFS_PATH} is missing"])
        return (
            f"schema {state.schema}, {state.mode.value}, label {state.label}, liveos {state.liveos_version}"
        )

    # -- grub references -----------------------------------------------------------------------
    def all_configs(self) -> list[GrubFile]:
        """The grub.cfg files of the medium and, on an ISO, the El Torito image's."""
        if self._embedded is None:
            self._embedded = []
            if isinstance(self.media, IsoMedia):
                try:
                    self._embedded = [c for c in [self._efi_grub_cfg()] if c is not None]
                except ImageError as exc:  # no El Torito image: the efi-image check says so
                    log.debug("no grub.cfg read from the El Torito image: %s", exc)
        return [*self.configs, *self._embedded]

    def check_references(self) -> str:
        configs = self.all_configs()
        if not configs:
            raise _Failed(["no grub.cfg on the medium"])
        problems: list[str] = []
        count = 0
        for grub in configs:
            for command, path in _references(grub):
                count += 1
                if path is None:
                    problems.append(f"{grub.path}: '{command}' names a path with an unknown variable")
                elif not self.media.is_file(path):
                    problems.append(f"{grub.path}: '{command} {path}': no such file on the medium")
        if problems:
            raise _Failed(problems)
        return f"{count} file references in {len(configs)} grub configs all exist"

    # -- labels --------------------------------------------------------------------------------
    def check_labels(self) -> str:
        found: list[tuple[str, str]] = []  # (where, label)
        if isinstance(self.media, IsoMedia):
            found.append(("ISO volume label", self.media.label or ""))
            joliet = self.media.joliet_label
            if joliet is not None:
                found.append(("Joliet volume label", joliet))
        state_label = None
        try:
            state_label = read_state(self.media).label
            found.append(("state.json", state_label))
        except ImageError:
            pass
        for grub in self.all_configs():
            for command in grub.config.search_commands():
                label = _search_label(command.name, [w.literal for w in command.args])
                if label is not None:
                    found.append((f"search in {grub.path}", label))
        urls = set()
        for entry in menu_entries(self.configs):
            for arg in entry.cmdline:
                if arg.startswith("root=live:CDLABEL="):
                    found.append((f"root= in {entry.config}", arg.split("=", 2)[2]))
                elif arg.startswith("root=live:") and "://" in arg:
                    urls.add(arg.removeprefix("root=live:"))
        problems = []
        iso = None
        if self.media.kind is not MediaKind.ISO and urls:
            if len(urls) > 1:
                problems.append(f"the boot entries download different ISOs: {', '.join(sorted(urls))}")
            iso = carried_iso(self.media, menu_entries(self.configs))
            if iso is None:
                problems.append(f"root=live:{sorted(urls)[0]} names no ISO in the bundle")
            else:
                host, offset, _ = self.media.locate(iso)
                if offset == 0:
                    with IsoMedia(host) as inner:
                        found.append((f"volume label of {iso}", inner.label or ""))
        labels = {label for _, label in found}
        if len(labels) > 1:
            problems.append("labels differ: " + ", ".join(f"{where} {label!r}" for where, label in found))
        if problems:
            raise _Failed(problems)
        if not found:
            return "no label on the medium to agree on (nothing boots it by label)"
        where = ", ".join(dict.fromkeys(where.split(" in ")[0] for where, _ in found))
        url = f"; root=live: downloads {iso}" if iso else ""
        return f"{labels.pop()!r} in every place ({where}){url}"

    # -- El Torito -----------------------------------------------------------------------------
    def efi_extent(self) -> tuple[int, int]:
        """(byte offset, byte size) of the El Torito UEFI boot image, from the boot catalog."""
        if self._efi is None:
            assert isinstance(self.media, IsoMedia)
            self._efi = _eltorito_efi(self.media.path)
        return self._efi

    def _efi_grub_cfg(self) -> GrubFile | None:
        offset, _ = self.efi_extent()
        files = fat.list_files(self.media.path, offset)
        name = next((f for f in files if f.lower() == "/efi/boot/grub.cfg"), None)
        if name is None:
            return None
        data = output(
            ["mtype", "-i", f"{self.media.path}@@{offset}", f"::{name}"],
            step="reading grub.cfg from the El Torito image",
            env=fat.MTOOLS_ENV,
        )
        path = f"{EFIBOOT_PATH}:{name}"
        config = GrubConfig.parse(data[:MAX_CONFIG_BYTES], path)
        return GrubFile(path, config, load_env_vars(self.media, config))

    def check_efi_image(self) -> str:
        assert isinstance(self.media, IsoMedia)
        offset, size = self.efi_extent()
        problems = []
        if self.media.is_file(str(EFIBOOT_PATH)):
            runs = self.media.reader.extents(str(EFIBOOT_PATH))
            if runs != [(offset, runs[0][1])] or not 0 <= runs[0][1] - size < 512:
                problems.append(f"the El Torito entry does not point at {EFIBOOT_PATH} {runs}")
        fat.read_volume(self.media.path, offset)
        files = {f.lower(): f for f in fat.list_files(self.media.path, offset)}
        arch = next((a for a in Arch if f"/efi/boot/{a.shim_name}".lower() in files), None)
        if arch is None:
            problems.append("no EFI/BOOT/boot<arch>.efi (shim) in the El Torito image")
        elif f"/efi/boot/{arch.grub_name}".lower() not in files:
            problems.append(f"no EFI/BOOT/{arch.grub_name} (grub, what shim loads) in the El Torito image")
        if problems:
            raise _Failed(problems)
        assert arch is not None
        return (
            f"El Torito UEFI image at byte {offset} ({size} bytes) holds "
            f"EFI/BOOT/{arch.shim_name} and EFI/BOOT/{arch.grub_name}"
        )

    # -- BIOS boot -----------------------------------------------------------------------------
    def check_bios(self) -> str:
        assert isinstance(self.media, IsoMedia)
        path = self.media.path
        entry = _eltorito_bios(path)
        carried = sorted(p for p in self.media.entries() if p.endswith(f"/i386-pc/{biosboot.BIOS_PRODUCT}"))
        with path.open("rb") as f:
            mbr = f.read(SECTOR)
        code = mbr[: biosboot.MBR_CODE_SIZE] if mbr[510:512] == b"\x55\xaa" else b""
        if entry is None:
            if carried or code.strip(b"\0"):
                what = carried[0] if carried else "MBR boot code"
                raise _Failed([f"the ISO carries BIOS boot ({what}) but El Torito has no BIOS entry"])
            return "no BIOS boot (a UEFI-only ISO)"
        rba, sectors, media_type, initial = entry
        problems = []
        if not initial:
            problems.append("the BIOS El Torito entry is not the default (initial) entry")
        if media_type != 0 or sectors != biosboot.LOAD_SECTORS:
            problems.append(f"the BIOS entry loads {sectors} sectors, media type {media_type} (4, 0 wanted)")
        offset = rba * _CD_SECTOR
        image = next((p for p in carried if self.media.locate(p)[1] == offset), None)
        if image is None:
            raise _Failed([*problems, f"the BIOS entry (sector {rba}) is no i386-pc/eltorito.img"])
        size = self.media.locate(image)[2]
        with path.open("rb") as f:
            facts = biosboot.read_bios_image(f, offset, size)
        if facts.boot_info != (16, rba, size, facts.checksum):
            problems.append(f"the boot info table {facts.boot_info} does not describe {image}")
        if facts.blocklist_start != offset // SECTOR + biosboot.LOAD_SECTORS + 1:
            problems.append(f"GRUB's block list starts at LBA {facts.blocklist_start}, not at its core")
        hybrid = bool(code.strip(b"\0")) or self._has_tables()
        if hybrid:
            (lba,) = struct.unpack_from("<Q", code.ljust(SECTOR, b"\0"), biosboot.MBR_LBA_OFFSET)
            if lba != offset // SECTOR + biosboot.LOAD_SECTORS:
                problems.append(f"the MBR boot code loads LBA {lba}, not the core of {image}")
        modules = posixpath.dirname(image) + "/normal.mod"
        if not self.media.is_file(modules):
            problems.append(f"no {modules}: BIOS GRUB cannot run grub.cfg")
        if problems:
            raise _Failed(problems)
        usb = ", MBR boot code for USB" if hybrid else ""
        return f"El Torito BIOS default entry {image} (sector {rba}): boot info, block list{usb} agree"

    def _has_tables(self) -> bool:
        with self.media.path.open("rb") as f:
            f.seek(SECTOR)
            return f.read(8) == b"EFI PART"

    # -- the hybrid partition tables -----------------------------------------------------------
    def check_tables(self) -> str:
        path = self.media.path
        size = path.stat().st_size
        persistent = ""
        with path.open("rb") as f:
            head = f.read(34 * SECTOR)
            if not head.strip(b"\0"):
                return "no partition tables (a CD-only ISO, not hybrid)"
            try:
                problems = _table_problems(f, head, size, self.efi_extent())
            except (ValueError, struct.error) as exc:  # a GPT name that is not UTF-16, a short read
                problems = [f"unreadable partition tables: {exc}"]
            if not problems:
                problems, persistent = _persistence(f)
        if problems:
            raise _Failed(problems)
        return (
            "protective MBR, primary and backup GPT (headers and entries, CRCs) agree; ESP = El Torito image"
            + persistent
        )

    # -- the implanted MD5 ----------------------------------------------------------------------
    def check_md5(self) -> str:
        with self.media.path.open("rb") as f:
            implanted = isomd5.check(f)
        if implanted is None:
            return "no implanted MD5 (written with --no-implant-md5, or not by liveos)"
        return (
            f"implanted MD5 {implanted.md5} matches (the volume but its last "
            f"{implanted.skip_sectors} sectors, as checkisomd5 sums it)"
        )

    # -- initrds -------------------------------------------------------------------------------
    def check_initrd_modules(self, pxe: bool) -> str:
        if self.mode() is InitramfsMode.FULL_OS:
            return "full-os: the initrd is the OS itself (no dracut live modules needed)"
        wanted = ["dmsquash-live", *(["livenet"] if pxe else [])]
        initrds = list(dict.fromkeys(i for e in menu_entries(self.configs) for i in e.initrds))
        if not initrds:
            raise _Failed(["no boot entry loads an initrd"])
        problems = []
        for initrd in initrds:
            missing = _missing_modules(self.media, initrd, wanted)
            if missing:
                problems.append(f"{initrd} lacks the dracut module(s) {', '.join(missing)}")
        if problems:
            raise _Failed(problems)
        return f"{', '.join(initrds)}: {' and '.join(wanted)} present"

    # -- the root image ------------------------------------------------------------------------
    def check_root_image(self) -> str:
        if self.mode() is InitramfsMode.FULL_OS:
            return _read_cpio(self.media, str(FULL_OS_INITRD))
        if self.media.kind is not MediaKind.ISO:
            return "bootstrap bundle: the root image is in the ISO it carries (checked below)"
        host, offset, _ = self.media.locate(str(SQUASHFS_PATH))
        with host.open("rb") as f:
            f.seek(offset)
            header = f.read(EROFS_SUPERBLOCK_OFFSET + 64)
        if is_erofs(header):
            return _read_erofs(self.media, str(SQUASHFS_PATH))
        return _read_squashfs(self.media, str(SQUASHFS_PATH))

    # -- the ISO a bootstrap bundle carries ----------------------------------------------------
    def carried_checks(self) -> list[Check]:
        if self.mode() is not InitramfsMode.BOOTSTRAP:
            return []
        iso = carried_iso(self.media, menu_entries(self.configs))
        if iso is None:
            return [Check(CheckKind.ROOT_IMAGE, False, "the bundle carries no ISO to boot from", "")]
        host, _, _ = self.media.locate(iso)
        try:
            inner = IsoMedia(host)
        except LiveOSError as exc:
            return [Check(CheckKind.ROOT_IMAGE, False, exc.message, iso)]
        with inner:
            return _checks(inner, carried=iso, pxe=False)


def _references(grub: GrubFile) -> list[tuple[str, str | None]]:
    """(command, media path or None when a variable is unknown) of every file ``grub`` loads.

    Variables are followed as grub sets them, in file order; the device (``($root)``) is dropped:
    on liveos media it is the medium itself (found by label, or the TFTP server).
    """
    values = {"root": "media", **grub.env}  # the device grub's search finds: the medium
    out: list[tuple[str, str | None]] = []
    for command in grub.config.commands:
        name = command.name
        if (name == "set" and len(command.words) == 2) or (
            len(command.words) == 1 and "=" in command.words[0].source
        ):
            assignment = split_assignment(command.words[-1])
            if assignment is not None:
                var, parts = assignment
                value = expand_parts(parts, values)
                if UNKNOWN in value or len(value) > _MAX_VALUE:
                    values.pop(var, None)
                else:
                    values[var] = value
            continue
        if name in _INITRDS:
            words = list(command.args)
        elif name in _LOADERS:
            words = [w for w in command.args if not w.source.startswith("-")][:1]
        else:
            continue
        for word in words:
            expanded = DEVICE.sub("", expand_parts(word.parts, values))
            if UNKNOWN in expanded or len(expanded) > _MAX_VALUE:
                out.append((name or "?", None))
            else:
                out.append((name or "?", posixpath.normpath("/" + expanded.lstrip("/"))))
    return out


def _search_label(name: str | None, args: list[str | None]) -> str | None:
    """The label a ``search --label L`` / ``search -l L`` / ``search.fs_label L`` looks for."""
    positional = [a for a in args if a is not None and not a.startswith("-")]
    if name == "search.fs_label" or (name == "search" and ("--label" in args or "-l" in args)):
        return positional[0] if positional else "?"
    return None


def _eltorito_efi(iso: Path) -> tuple[int, int]:
    """(byte offset, byte size) of the UEFI entry of the El Torito boot catalog of ``iso``."""
    size = iso.stat().st_size
    with iso.open("rb") as f:
        f.seek(17 * _CD_SECTOR)
        record = f.read(_CD_SECTOR)
        if record[:7] != b"\0CD001\x01" or not record[7:39].startswith(b"EL TORITO SPECIFICATION"):
            raise _Failed(["no El Torito boot record (sector 17): the ISO is not bootable"])
        (catalog_lba,) = struct.unpack_from("<I", record, 0x47)
        if catalog_lba * _CD_SECTOR + _CD_SECTOR > size:
            raise _Failed(
                [f"the El Torito boot catalog (sector {catalog_lba}) lies past the end of the ISO"]
            )
        f.seek(catalog_lba * _CD_SECTOR)
        catalog = f.read(_CD_SECTOR)
    if catalog[0] != 1 or catalog[30:32] != b"\x55\xaa" or sum(struct.unpack("<16H", catalog[:32])) & 0xFFFF:
        raise _Failed(["the El Torito boot catalog's validation entry is corrupt"])
    found = _efi_entry(catalog)
    if found is None:
        raise _Failed(["the El Torito boot catalog has no bootable UEFI (platform 0xEF) entry"])
    sectors, rba = struct.unpack_from("<HI", found, 6)
    start, length = rba * _CD_SECTOR, sectors * 512
    if length == 0 or start + length > size:
        raise _Failed(
            [f"the El Torito UEFI image (sector {rba}, {sectors} x 512 bytes) lies outside the ISO"]
        )
    return start, length


def _eltorito_bios(iso: Path) -> tuple[int, int, int, bool] | None:
    """(image sector, 512-byte sectors loaded, media type, is the initial entry) of the first
    BIOS (platform 0x00) boot entry of ``iso``'s El Torito catalog; None when it has none."""
    with iso.open("rb") as f:
        f.seek(17 * _CD_SECTOR)
        record = f.read(_CD_SECTOR)
        if record[:7] != b"\0CD001\x01" or not record[7:39].startswith(b"EL TORITO SPECIFICATION"):
            return None
        (catalog_lba,) = struct.unpack_from("<I", record, 0x47)
        f.seek(catalog_lba * _CD_SECTOR)
        catalog = f.read(_CD_SECTOR)
    if len(catalog) < 64 or catalog[0] != 1 or catalog[30:32] != b"\x55\xaa":
        return None  # no catalog at all: the efi-image check says so
    found: tuple[bytes, bool] | None = None
    if catalog[1] == 0x00 and catalog[32] == 0x88:
        found = catalog[32:64], True
    offset = 64
    while found is None and offset + 32 <= len(catalog) and catalog[offset] in (0x90, 0x91):
        platform, count = catalog[offset + 1], struct.unpack_from("<H", catalog, offset + 2)[0]
        for i in range(count):
            start = offset + 32 * (i + 1)
            if start + 32 <= len(catalog) and platform == 0x00 and catalog[start] == 0x88:
                found = catalog[start : start + 32], False
                break
        if catalog[offset] == 0x91:
            break
        offset += 32 * (count + 1)
    if found is None:
        return None
    entry, initial = found
    sectors, rba = struct.unpack_from("<HI", entry, 6)
    return rba, sectors, entry[1] & 0x0F, initial


def _efi_entry(catalog: bytes) -> bytes | None:
    """The first bootable entry for UEFI (platform 0xEF) of a boot catalog: the initial entry
    (platform of the validation entry) or one of a section (platform of its header)."""
    if catalog[1] == 0xEF and catalog[32] == 0x88:
        return catalog[32:64]
    offset = 64
    while offset + 32 <= len(catalog) and catalog[offset] in (0x90, 0x91):
        platform, count = catalog[offset + 1], struct.unpack_from("<H", catalog, offset + 2)[0]
        for i in range(count):
            start = offset + 32 * (i + 1)
            if start + 32 > len(catalog):
                return None
            if platform == 0xEF and catalog[start] == 0x88:
                return catalog[start : start + 32]
        if catalog[offset] == 0x91:
            return None
        offset += 32 * (count + 1)
    return None


def _table_problems(f: BinaryIO, head: bytes, size: int, esp: tuple[int, int]) -> list[str]:
    """What is wrong with the MBR + GPTs of a hybrid ISO (``f``: the open file)."""
    problems: list[str] = []
    if size % SECTOR:
        problems.append(f"the file size {size} is not a multiple of {SECTOR}")
    last = size // SECTOR - 1
    if head[510:512] != b"\x55\xaa":
        problems.append("no MBR signature (55 aa) in sector 0")
    mbr = [MbrPartition.parse(head[446 + 16 * i : 462 + 16 * i]) for i in range(4)]
    mbr = [p for p in mbr if p.type]
    protective = [p for p in mbr if p.type == 0xEE]
    if len(protective) != 1 or protective[0].first_lba != 1:
        problems.append("the MBR has no protective (0xEE) partition starting at sector 1")
    for p in mbr:
        if p.first_lba + p.sectors - 1 > last and not (p.type == 0xEE and p.sectors == 0xFFFFFFFF):
            problems.append(f"MBR partition type {p.type:#04x} ends past the end of the file")
    try:
        primary = GptHeader.parse(head[SECTOR : 2 * SECTOR])
    except ImageError as exc:
        return [*problems, f"primary GPT header: {exc.message}"]
    if primary.current_lba != 1 or primary.backup_lba != last:
        problems.append(
            f"primary GPT header says it is at LBA {primary.current_lba} with its backup at "
            f"{primary.backup_lba}; the file's last LBA is {last}"
        )
    array = primary.entry_count * primary.entry_size
    if primary.entry_size < 128 or array > 1 << 20:
        return [
            *problems,
            f"GPT entry array of {primary.entry_count} x {primary.entry_size} bytes is implausible",
        ]
    if not (primary.entries_lba * SECTOR + array <= primary.first_usable_lba * SECTOR):
        problems.append("the primary GPT entries overlap the usable area")
    if primary.last_usable_lba >= last or primary.first_usable_lba > primary.last_usable_lba:
        problems.append("the GPT usable area lies outside the file")
    f.seek(primary.entries_lba * SECTOR)
    blob = f.read(array)
    if zlib.crc32(blob) != primary.entries_crc:
        problems.append("the primary GPT partition entries have a bad CRC")
    parts = [
        GptPartition.parse(blob[i : i + 128])
        for i in range(0, len(blob), primary.entry_size)
        if blob[i : i + 16].strip(b"\0")
    ]
    for part in parts:
        if not primary.first_usable_lba <= part.first_lba <= part.last_lba <= primary.last_usable_lba:
            problems.append(
                f"GPT partition {part.name!r} (LBA {part.first_lba}-{part.last_lba}) "
                "lies outside the usable area"
            )
    esps = [part for part in parts if part.type_guid == ESP_TYPE]
    efi_offset, efi_size = esp
    if len(esps) != 1:
        problems.append(f"{len(esps)} EFI system partitions in the GPT (one expected)")
    elif esps[0].first_lba * SECTOR != efi_offset or not (
        0 <= (esps[0].last_lba + 1) * SECTOR - efi_offset - efi_size < SECTOR
    ):
        problems.append(
            f"the ESP (LBA {esps[0].first_lba}-{esps[0].last_lba}) is not the El Torito image "
            f"(bytes {efi_offset}-{efi_offset + efi_size})"
        )
    for p in mbr:
        if (
            p.type == 0xEF
            and esps
            and (p.first_lba, p.sectors)
            != (
                esps[0].first_lba,
                esps[0].last_lba - esps[0].first_lba + 1,
            )
        ):
            problems.append("the hybrid MBR's ESP entry differs from the GPT's")
    f.seek(last * SECTOR)
    try:
        backup = GptHeader.parse(f.read(SECTOR))
    except ImageError as exc:
        return [*problems, f"backup GPT header (last LBA {last}): {exc.message}"]
    if backup.current_lba != last or backup.backup_lba != 1:
        problems.append(
            f"the backup GPT header says it is at LBA {backup.current_lba}, primary at {backup.backup_lba}"
        )
    same = ("first_usable_lba", "last_usable_lba", "disk_guid", "entry_count", "entry_size", "entries_crc")
    if any(getattr(backup, name) != getattr(primary, name) for name in same):
        problems.append("the backup GPT header disagrees with the primary one")
    if not primary.last_usable_lba < backup.entries_lba < last:
        problems.append("the backup GPT entries lie outside the space before the backup header")
    else:
        f.seek(backup.entries_lba * SECTOR)
        backup_blob = f.read(array)
        if zlib.crc32(backup_blob) != backup.entries_crc:
            problems.append("the backup GPT partition entries have a bad CRC")
    return problems


def _persistence(f: BinaryIO) -> tuple[list[str], str]:
    """(problems, note) of a persistent USB layout: a partition over the squashfs inside the ISO
    volume and an ext4 after it (:mod:`liveos.media.persistence`); ([], "") without one."""
    parts = {p.name: p for p in HybridLayout.parse(f).partitions}
    root, rw = parts.get(ROOT_PARTITION_NAME), parts.get(RW_PARTITION_NAME)
    if root is None and rw is None:
        return [], ""
    if root is None or rw is None:
        return ["a persistence partition without the root-image partition (or the reverse)"], ""
    volume = isomd5.volume_size(f)
    problems = []
    f.seek(root.first_lba * SECTOR)
    if f.read(4) != b"hsqs" or (root.last_lba + 1) * SECTOR > volume:
        problems.append(f"the {ROOT_PARTITION_NAME!r} partition is not the squashfs inside the ISO")
    f.seek(rw.first_lba * SECTOR + 1024 + 56)
    if f.read(2) != b"\x53\xef" or rw.first_lba * SECTOR < volume:
        problems.append(f"the {RW_PARTITION_NAME!r} partition holds no ext4 after the ISO volume")
    size = (rw.last_lba - rw.first_lba + 1) * SECTOR
    return problems, f"; persistence: {size >> 20} MiB ext4 after the ISO volume, root partition = squashfs"


def _missing_modules(media: Media, initrd: str, wanted: list[str]) -> list[str]:
    """The dracut modules of ``wanted`` the initrd shows no file of (reading it to the end)."""
    seen: set[str] = set()
    listed: set[str] | None = None
    evidence = {name: module for module, names in MODULE_FILES.items() for name in names}
    with media.open(initrd) as f:
        for member in iter_entries(f):
            base = posixpath.basename(member.name)
            for name, module in evidence.items():
                if base == name or base.endswith("-" + name):
                    seen.add(module)
            if member.name.lstrip("./") in MODULES_TXT and member.size <= MAX_CONFIG_BYTES:
                listed = set(member.read().decode("utf-8", "replace").split())
    return [m for m in wanted if m not in seen or (listed is not None and m not in listed)]


def _read_cpio(media: Media, path: str) -> str:
    """Read a full-os initrd to its end (every segment decompressed, every member's data)."""
    count = total = 0
    has_init = False
    with media.open(path) as f:
        for member in iter_entries(f):
            count += 1
            total += member.size
            has_init = has_init or member.name.lstrip("./") == "init"
    if not has_init:
        raise _Failed([f"{path} has no /init: the kernel would not start it"])
    return f"{path}: {count} entries, {total} bytes of data, read to the end"


def _read_squashfs(media: Media, path: str) -> str:
    """Decompress every block of the squashfs at ``path`` (``unsquashfs -pf /dev/null``)."""
    host, offset, size = media.locate(path)
    with host.open("rb") as f:
        f.seek(offset)
        superblock = f.read(96)
    if superblock[:4] != _SQUASHFS_MAGIC:
        raise _Failed([f"{path} is not a squashfs (no magic)"])
    (used,) = struct.unpack_from("<Q", superblock, 40)
    if used > size:
        raise _Failed([f"{path} is {size} bytes but its squashfs needs {used}: truncated"])
    _read_through(["unsquashfs", "-n", "-no-xattrs", "-o", str(offset), "-pf", "/dev/null", host], path)
    return f"{path}: {used} bytes of squashfs, every block decompressed"


def _read_through(argv: list[str | Path], path: str) -> None:
    """Run a tool that reads the root image at ``path`` end to end; its complaint is the failure."""
    try:
        run(argv, step=f"reading {path} end to end", stdout=subprocess.DEVNULL)
    except CommandError as exc:
        lines = [line for line in exc.stderr.splitlines() if line.strip()][-3:]
        raise _Failed([f"{path} is not readable end to end: " + " / ".join(lines)]) from exc


def _read_erofs(media: Media, path: str) -> str:
    """Decompress every file of the erofs at ``path`` (``fsck.erofs --extract`` without a target).

    fsck.erofs 1.5 takes no offset, so the image's bytes are copied to a scratch file first
    (``copy_file_range``: a reflink or an in-kernel copy)."""
    host, offset, size = media.locate(path)
    with host.open("rb") as f:
        f.seek(offset)
        superblock = f.read(EROFS_SUPERBLOCK_OFFSET + 64)
    sb = superblock[EROFS_SUPERBLOCK_OFFSET:]
    block_size = 1 << sb[12]
    (blocks,) = struct.unpack_from("<I", sb, 36)
    used = blocks * block_size
    if used > size:
        raise _Failed([f"{path} is {size} bytes but its erofs needs {used}: truncated"])
    with tempfile.TemporaryDirectory(prefix="liveos-verify-") as scratch:
        copy = Path(scratch) / "rootfs.img"
        with host.open("rb") as src, copy.open("wb") as dst:
            done = 0
            while done < size:
                sent = os.copy_file_range(src.fileno(), dst.fileno(), size - done, offset + done)
                if sent == 0:
                    raise _Failed([f"{path} ends early in {host}"])
                done += sent
        _read_through(["fsck.erofs", "--extract", copy], path)
    return f"{path}: {used} bytes of erofs, every file decompressed"
