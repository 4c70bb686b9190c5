"""ImageSummary: what an opened image is, gathered cheaply -- for its rich views and for ``inspect``.

A summary reads only what opening the image already laid out or what costs a few small reads:
the partition table and mounts the opener recorded, ``os-release``, the names in ``/boot``, the
grub and EFI directories and whether BLS entries exist. It never parses a grub config, runs a
program or walks the tree, so a notebook can show an image at once. A fact that cannot be read
becomes a line in :attr:`ImageSummary.problems` instead of an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from liveos import views
from liveos.errors import LiveOSError
from liveos.rootfs import CONFIG_LIMIT, Kernel, RootFs

T = TypeVar("T")

#: Main grub configs, most specific first (the order :mod:`liveos.bootfiles` looks in).
GRUB_CONFIGS = ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
#: Where an ESP sits in the tree (the order :mod:`liveos.bootfiles` looks in).
ESP_PLACES = ("/boot/efi", "/efi", "/boot")
BLS_ENTRIES = "/boot/loader/entries"
#: More EFI directories than this are not listed (a hostile image may hold thousands).
MAX_LISTED = 64


#: Names of the partition types OS images use (GPT type GUID, MBR type byte); others show as is.
GPT_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "ESP",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "b921b045-1df0-41c3-af44-4c6f280d3fae": "Linux root (ARM64)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux /boot (XBOOTLDR)",
    "933ac7e1-2eb4-4f13-b844-0e14e2aef915": "Linux /home",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
}
MBR_TYPES = {
    0x83: "Linux",
    0x82: "Linux swap",
    0x8E: "Linux LVM",
    0xEF: "ESP",
    0x05: "extended",
    0x0F: "extended",
}


def partition_type(guid: str | None, byte: int | None, *, esp: bool = False) -> str:
    """A partition's type as a view shows it: its name if well known, else the GUID or ``0xNN``."""
    if esp:
        return "ESP"
    if guid is not None:
        return GPT_TYPES.get(guid.lower(), guid)
    if byte is not None:
        return MBR_TYPES.get(byte, f"0x{byte:02x}")
    return "?"


@dataclass(frozen=True)
class PartitionRow:
    """One partition as a view shows it."""

    number: int
    start: int  #: bytes
    size: int  #: bytes
    type: str  #: see :func:`partition_type`
    name: str  #: GPT partition name ('' if none)
    fstype: str  #: what blkid found ('' if nothing)
    fs_label: str
    mountpoints: tuple[str, ...]  #: where the opened tree mounts it (empty: not mounted)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {
            "number": self.number,
            "start": self.start,
            "size": self.size,
            "type": self.type,
            "name": self.name,
            "fstype": self.fstype,
            "fs_label": self.fs_label,
            "mountpoints": list(self.mountpoints),
        }


@dataclass(frozen=True)
class MountRow:
    """One filesystem of the merged tree."""

    mountpoint: str
    fstype: str
    source: str  #: ``partition 2``, ``partition 3 subvolume @``, ``squashfs``...

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {"mountpoint": self.mountpoint, "fstype": self.fstype, "source": self.source}


@dataclass(frozen=True)
class BootLayout:
    """Where the image keeps its boot chain, as far as names tell (nothing parsed)."""

    grub_cfg: str | None  #: the first main grub config present
    efi_dirs: tuple[str, ...]  #: the vendor directories under the ESP's ``EFI/``
    bls_entries: int  #: ``*.conf`` files in ``/boot/loader/entries``
    blscfg: bool  #: the grub config mentions ``blscfg``

    @property
    def grub_dir(self) -> str | None:
        """The directory of the main grub config."""
        return None if self.grub_cfg is None else self.grub_cfg.rsplit("/", 1)[0]

    @property
    def bls(self) -> bool:
        """Kernel entries live in BLS files, not in grub.cfg."""
        return self.blscfg or self.bls_entries > 0

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {
            "grub_cfg": self.grub_cfg,
            "grub_dir": self.grub_dir,
            "efi_dirs": list(self.efi_dirs),
            "bls": self.bls,
            "bls_entries": self.bls_entries,
        }


@dataclass(frozen=True)
class ImageSummary:
    """The facts of an opened image that its views show (see the module docstring)."""

    kind: str  #: the class: ``DiskImage``, ``LiveIsoImage``
    path: Path
    format: str
    table: str | None = None  #: ``gpt``/``mbr`` (disks)
    disk_id: str | None = None
    partitions: tuple[PartitionRow, ...] = ()
    mounts: tuple[MountRow, ...] = ()
    os_name: str | None = None  #: os-release ``PRETTY_NAME`` (else ``NAME``)
    os_version: str | None = None  #: os-release ``VERSION_ID`` (else ``VERSION``)
    os_id: str | None = None
    kernels: tuple[Kernel, ...] = ()
    arch: str | None = None
    boot: BootLayout | None = None
    media: tuple[tuple[str, str], ...] = ()  #: a liveos ISO: what built it (mode, label, ...)
    problems: tuple[str, ...] = ()  #: facts that could not be read, and why
    closed: bool = False  #: the ``with`` block that opened the image has ended

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view (what ``liveos inspect --json`` can print)."""
        return {
            "kind": self.kind,
            "path": str(self.path),
            "format": self.format,
            "table": self.table,
            "disk_id": self.disk_id,
            "partitions": [p.to_dict() for p in self.partitions],
            "mounts": [m.to_dict() for m in self.mounts],
            "os": {"name": self.os_name, "version": self.os_version, "id": self.os_id},
            "kernels": [
                {"version": k.version, "image": str(k.image), "initrd": _opt(k.initrd)} for k in self.kernels
            ],
            "arch": self.arch,
            "boot": self.boot.to_dict() if self.boot is not None else None,
            "media": dict(self.media),
            "problems": list(self.problems),
            "closed": self.closed,
        }

    def line(self) -> str:
        """One line: ``<DiskImage qcow2 /x.qcow2 gpt 3 partitions, Debian GNU/Linux 12, 1 kernel>``."""
        parts = [self.kind, self.format, str(self.path)]
        if self.closed:
            return f"<{' '.join(parts)} (closed)>"
        if self.table is not None:
            parts.append(f"{self.table} {_count(len(self.partitions), 'partition')},")
        facts = [self.os_name or "unknown OS", _count(len(self.kernels), "kernel")]
        facts += [f"{k} {v}" for k, v in self.media if k in ("mode", "label")]
        return f"<{' '.join(parts)} {', '.join(facts)}>"

    def describe(self) -> str:
        """Several readable lines (what ``_repr_pretty_`` prints)."""
        lines = [self.line()]
        if self.closed:
            return lines[0]
        lines.append(
            f"  OS: {self.os_name or 'unknown'}"
            + (f" (version {self.os_version})" if self.os_version else "")
        )
        if self.arch:
            lines.append(f"  arch: {self.arch}")
        if self.table is not None:
            lines.append(f"  partition table: {self.table} {self.disk_id or ''}".rstrip())
        for p in self.partitions:
            where = " at " + ", ".join(p.mountpoints) if p.mountpoints else ""
            fs = f" {p.fstype}" if p.fstype else ""
            label = f" label {p.fs_label!r}" if p.fs_label else ""
            lines.append(f"    {p.number}: {views.human_size(p.size)} {p.type}{fs}{label}{where}")
        if self.mounts:
            lines.append("  mounts:")
            lines += [f"    {m.mountpoint}: {m.fstype} ({m.source})" for m in self.mounts]
        lines.append(f"  kernels: {', '.join(k.version for k in self.kernels) or 'none in /boot'}")
        if self.boot is not None:
            lines.append("  boot: " + ", ".join(f"{k} {v}" for k, v in _boot_pairs(self.boot)))
        lines += [f"  {k}: {v}" for k, v in self.media]
        lines += [f"  unreadable: {p}" for p in self.problems]
        return "\n".join(lines)

    def html(self) -> str:
        """The HTML a notebook shows (every value escaped)."""
        title = self.line()
        if self.closed:
            return views.html_block(title)
        facts: list[tuple[str, object]] = [
            ("format", self.format),
            ("OS", self.os_name or "unknown"),
            ("version", self.os_version or "?"),
            ("arch", self.arch or "?"),
        ]
        if self.table is not None:
            facts.append(("partition table", f"{self.table} {self.disk_id or ''}".rstrip()))
        if self.boot is not None:
            facts += _boot_pairs(self.boot)
        facts += list(self.media)
        parts = [views.html_kv(facts)]
        if self.partitions:
            rows = [
                (
                    p.number,
                    views.human_size(p.start),
                    views.human_size(p.size),
                    p.type,
                    p.name,
                    p.fstype,
                    p.fs_label,
                    ", ".join(p.mountpoints),
                )
                for p in self.partitions
            ]
            headers = ("#", "start", "size", "type", "name", "filesystem", "label", "mounted at")
            parts.append(views.html_table(headers, rows, caption="partitions"))
        if self.mounts:
            mounts = [(m.mountpoint, m.fstype, m.source) for m in self.mounts]
            parts.append(views.html_table(("mount point", "filesystem", "from"), mounts, caption="mounts"))
        kernels = [(k.version, str(k.image), _opt(k.initrd) or "") for k in self.kernels]
        parts.append(views.html_table(("kernel", "image", "initrd"), kernels, caption="kernels"))
        if self.problems:
            parts.append(views.html_kv([("unreadable", p) for p in self.problems]))
        return views.html_block(title, *parts)


def _opt(path: object) -> str | None:
    return None if path is None else str(path)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _boot_pairs(boot: BootLayout) -> list[tuple[str, object]]:
    return [
        ("grub dir", boot.grub_dir or "none"),
        ("EFI dirs", ", ".join(boot.efi_dirs) or "none"),
        ("BLS", f"yes ({boot.bls_entries} entries)" if boot.bls else "no"),
    ]


def attempt(problems: list[str], what: str, read: Callable[[], T], default: T) -> T:
    """``read()``, or ``default`` with a line in ``problems`` when it fails with a liveos or OS error."""
    try:
        return read()
    except (LiveOSError, OSError) as error:
        problems.append(f"{what}: {str(error).splitlines()[0] if str(error) else type(error).__name__}")
        return default


def boot_layout(rootfs: RootFs) -> BootLayout:
    """The boot chain's places in the tree, from names (and one substring test of grub.cfg)."""
    grub_cfg = next((c for c in GRUB_CONFIGS if rootfs.is_file(c)), None)
    blscfg = grub_cfg is not None and "blscfg" in rootfs.read_text(grub_cfg, limit=CONFIG_LIMIT)
    efi_dirs: list[str] = []
    for place in ESP_PLACES:
        for entry in rootfs.iterdir(place):
            if entry.name.lower() == "efi" and rootfs.is_dir(entry):
                efi_dirs += [str(sub) for sub in rootfs.iterdir(entry) if rootfs.is_dir(sub)]
        if efi_dirs:
            break
    entries = sum(1 for e in rootfs.iterdir(BLS_ENTRIES) if e.suffix == ".conf")
    return BootLayout(grub_cfg, tuple(efi_dirs[:MAX_LISTED]), entries, blscfg)


def summarize(
    rootfs: RootFs,
    *,
    kind: str,
    path: Path,
    format: str,
    arch: Callable[[], object],
    table: str | None = None,
    disk_id: str | None = None,
    partitions: Sequence[PartitionRow] = (),
    mounts: Sequence[MountRow] = (),
    media: Sequence[tuple[str, str]] = (),
) -> ImageSummary:
    """The summary of an opened image whose tree is ``rootfs`` (the caller gives what it recorded)."""
    if not rootfs.root.is_dir():
        return ImageSummary(kind=kind, path=path, format=format, closed=True)
    problems: list[str] = []
    release: Mapping[str, str] = attempt(problems, "os-release", rootfs.os_release, {})
    return ImageSummary(
        kind=kind,
        path=path,
        format=format,
        table=table,
        disk_id=disk_id,
        partitions=tuple(partitions),
        mounts=tuple(mounts),
        os_name=release.get("PRETTY_NAME") or release.get("NAME"),
        os_version=release.get("VERSION_ID") or release.get("VERSION"),
        os_id=release.get("ID"),
        kernels=tuple(attempt(problems, "kernels", rootfs.kernels, [])),
        arch=_opt(attempt(problems, "architecture", arch, None)),
        boot=attempt(problems, "boot layout", lambda: boot_layout(rootfs), None),
        media=tuple(media),
        problems=tuple(problems),
    )
