"""Craft small, real disk images for tests: GPT or MBR, FAT/ext4/xfs/btrfs partitions filled from trees.

FAT and ext4 are written straight into the image file at an offset (mkfs.vfat --offset + mtools,
``mke2fs -E offset= -d``: no root needed); xfs and btrfs have no offset option, so they are made
on a loop device and filled through a temporary mount (root only).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import struct
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liveos.rootfs import RootFs

MIB = 1 << 20
SECTOR = 512
ESP_GUID = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX_GUID = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
ROOT_X64_GUID = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"


def sh(*argv: str | Path, input: bytes | None = None) -> str:
    """Run a tool, fail the test with its stderr if it fails."""
    proc = subprocess.run([str(a) for a in argv], input=input, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode(errors="replace")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def pe_stub(machine: int = 0x8664) -> bytes:
    """The smallest file whose PE header names a machine (enough for architecture detection)."""
    head = bytearray(0x80)
    head[:2] = b"MZ"
    struct.pack_into("<I", head, 0x3C, 0x40)
    head[0x40:0x44] = b"PE\0\0"
    struct.pack_into("<H", head, 0x44, machine)
    return bytes(head)


def write_tree(root: Path, files: Mapping[str, str | bytes]) -> Path:
    """Create ``files`` (image path -> content; content ``"->target"`` makes a symlink) under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = root / name.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            path.symlink_to(content[2:])
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


@dataclass(frozen=True)
class PartSpec:
    """One partition to create: filesystem, size and identity."""

    size_mib: int
    fstype: str | None  #: vfat, ext4, xfs, btrfs or None (left empty)
    tree: Path | None = None
    label: str | None = None
    fs_uuid: str | None = None  #: ext4/xfs/btrfs UUID, or FAT volume id as ``ABCD1234``
    name: str = ""  #: GPT partition name
    esp: bool = False
    subvol: str | None = None  #: btrfs: put the tree in this subvolume instead of the top level


@dataclass(frozen=True)
class BuiltPart:
    number: int
    start: int
    size: int
    spec: PartSpec


@dataclass(frozen=True)
class Disk:
    path: Path
    parts: tuple[BuiltPart, ...]
    disk_id: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def make_disk(path: Path, specs: Sequence[PartSpec], *, table: str = "gpt") -> Disk:
    """Partition and fill a sparse raw disk. Partitions start at 1 MiB, MiB-aligned, in order."""
    total = 2 + sum(s.size_mib for s in specs)
    path.unlink(missing_ok=True)
    sh("truncate", "-s", f"{total}M", path)
    parts: list[BuiltPart] = []
    start = MIB
    for number, spec in enumerate(specs, start=1):
        parts.append(BuiltPart(number, start, spec.size_mib * MIB, spec))
        start += spec.size_mib * MIB
    if table == "gpt":
        argv: list[str | Path] = ["sgdisk", "-U", "R"]
        for p in parts:
            first, last = p.start // SECTOR, (p.start + p.size) // SECTOR - 1
            kind = ESP_GUID if p.spec.esp else LINUX_GUID
            argv += ["-n", f"{p.number}:{first}:{last}", "-t", f"{p.number}:{kind}"]
            if p.spec.name:
                argv += ["-c", f"{p.number}:{p.spec.name}"]
        sh(*argv, path)
    else:
        script = "label: dos\nlabel-id: 0x1234abcd\n" + "".join(
            f"start={p.start // SECTOR}, size={p.size // SECTOR}, type={'ef' if p.spec.esp else '83'}\n"
            for p in parts
        )
        sh("sfdisk", "--quiet", path, input=script.encode())
    for p in parts:
        _make_fs(path, p)
    return Disk(path, tuple(parts), "1234abcd" if table == "mbr" else "")


def _make_fs(image: Path, part: BuiltPart) -> None:
    spec = part.spec
    if spec.fstype == "vfat":
        argv: list[str | Path] = ["mkfs.vfat", "-F", "16" if part.size < 64 * MIB else "32", "-s", "1"]
        argv += ["--offset", str(part.start // SECTOR), "-h", str(part.start // SECTOR)]
        if spec.fs_uuid:
            argv += ["-i", spec.fs_uuid]
        if spec.label:
            argv += ["-n", spec.label]
        sh(*argv, image, str(part.size // 1024))
        if spec.tree:
            drive = f"{image}@@{part.start}"
            for entry in sorted(spec.tree.iterdir()):
                sh("mcopy", "-s", "-p", "-m", "-i", drive, entry, "::/")
    elif spec.fstype == "ext4":
        argv = ["mke2fs", "-q", "-F", "-t", "ext4", "-E", f"offset={part.start}"]
        if spec.fs_uuid:
            argv += ["-U", spec.fs_uuid]
        if spec.label:
            argv += ["-L", spec.label]
        if spec.tree:
            argv += ["-d", spec.tree]
        sh(*argv, image, f"{part.size // 1024}k")
    elif spec.fstype in ("xfs", "btrfs"):
        _make_fs_on_loop(image, part)
    elif spec.fstype is not None:
        raise ValueError(f"unsupported fstype {spec.fstype}")


@contextlib.contextmanager
def _loop(image: Path, part: BuiltPart) -> Iterator[str]:
    dev = sh(
        "losetup", "--find", "--show", "-o", str(part.start), "--sizelimit", str(part.size), image
    ).strip()
    try:
        yield dev
    finally:
        sh("losetup", "-d", dev)


def _make_fs_on_loop(image: Path, part: BuiltPart) -> None:
    spec = part.spec
    with _loop(image, part) as dev:
        if spec.fstype == "xfs":
            argv: list[str | Path] = ["mkfs.xfs", "-q", "-f"]
            if spec.fs_uuid:
                argv += ["-m", f"uuid={spec.fs_uuid}"]
        else:
            argv = ["mkfs.btrfs", "-q", "-f"]
            if spec.fs_uuid:
                argv += ["-U", spec.fs_uuid]
        if spec.label:
            argv += ["-L", spec.label]
        sh(*argv, dev)
        if spec.tree is None:
            return
        mnt = image.parent / f"mnt-{image.name}-{part.number}"
        mnt.mkdir(exist_ok=True)
        sh("mount", dev, mnt)
        try:
            dest = mnt
            if spec.subvol:
                sh("btrfs", "subvolume", "create", mnt / spec.subvol)
                dest = mnt / spec.subvol
            sh("cp", "-a", f"{spec.tree}/.", dest)
        finally:
            sh("umount", mnt)
            mnt.rmdir()


def convert(raw: Path, fmt: str) -> Path:
    """Copy of ``raw`` in ``fmt``: qcow2, vhd (dynamic), vhd-fixed or vhdx."""
    suffix = {"qcow2": "qcow2", "vhd": "vhd", "vhd-fixed": "fixed.vhd", "vhdx": "vhdx"}[fmt]
    out = raw.with_suffix("." + suffix)
    opts = {
        "qcow2": ["-O", "qcow2"],
        "vhd": ["-O", "vpc", "-o", "subformat=dynamic,force_size=on"],
        "vhd-fixed": ["-O", "vpc", "-o", "subformat=fixed,force_size=on"],
        "vhdx": ["-O", "vhdx", "-o", "subformat=dynamic"],
    }[fmt]
    sh("qemu-img", "convert", "-f", "raw", *opts, raw, out)
    return out


def os_tree(root: Path, fstab: str, extra: Mapping[str, str | bytes] | None = None) -> Path:
    """A minimal OS root: fstab, os-release, a marker file, the mount point dirs."""
    files: dict[str, str | bytes] = {
        "/etc/fstab": fstab,
        "/etc/os-release": 'ID=testos\nVERSION_ID="1"\n',
        "/usr/share/marker": "root filesystem\n",
    }
    files.update(extra or {})
    write_tree(root, files)
    for d in ("boot/efi", "proc", "sys", "dev", "run", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    return root


def esp_tree(root: Path, machine: int = 0x8664) -> Path:
    name = "BOOTX64.EFI" if machine == 0x8664 else "BOOTAA64.EFI"
    return write_tree(root, {f"/EFI/BOOT/{name}": pe_stub(machine), "/EFI/BOOT/grub.cfg": "set timeout=1\n"})


def new_uuid() -> str:
    return str(uuid.uuid4())


def our_mounts(marker: str) -> list[str]:
    """Lines of this thread's mountinfo that mention ``marker`` (a work dir path)."""
    with open("/proc/thread-self/mountinfo") as f:
        return [line for line in f if marker in line]


def our_loops(*files: Path) -> list[str]:
    """``losetup -a`` lines that name any of ``files``."""
    out = sh("losetup", "-a")
    return [line for line in out.splitlines() if any(str(f) in line for f in files)]


def parents() -> dict[int, int]:
    """pid -> ppid of every process, from /proc/*/stat."""
    found: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            found[int(entry)] = int(stat_line.rsplit(")", 1)[1].split()[1])
    return found


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...)."""
    table = parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in table.items() if parent in frontier} - found
        found |= frontier
    return found


def comm(pid: int) -> str:
    """/proc/PID/comm ("" once the process is gone)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


#: The fixture images' marker script (what their marker service runs in the booted system;
#: written by tests/fixtures/builder.py).
MARKER_SCRIPT = "/usr/local/sbin/liveos-boot-ok"


def stamp_marker(rootfs: RootFs, token: str) -> None:
    """Make the booted system print ``updated=<token>`` in its marker line: proof that a change
    made after a cached product was built reached the live system."""
    script = rootfs.read_text(MARKER_SCRIPT, limit=64 * 1024)
    assert " uptime=" in script, script
    new = script.replace(" uptime=", f" updated={token} uptime=", 1)
    rootfs.write_text(MARKER_SCRIPT, new, mode=0o755)
