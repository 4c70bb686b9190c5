"""Boot an artifact headless under QEMU + OVMF (or SeaBIOS) and wait for a marker line on the
serial console.

Used by liveos's own tests and offered to library users who want to prove that a converted
image really boots. Success is the marker ONLY: a live boot prints ``[FAILED] Failed to mount
sysroot.mount`` and still succeeds, and a hung boot prints no FAILED line at all.

QEMU always runs under TCG by default (``-accel tcg,thread=multi -cpu max``): KVM on nested
hosts often cannot run OVMF. Boots take 30-90 s, so allow 300 s (500 s for network boots).
Networking is QEMU user-net with ``restrict=on``: the guest reaches only slirp's DHCP/TFTP and,
when :attr:`BootConfig.http_root` is set, ``http://10.0.2.100/`` which is forwarded (through
``socat``) to a Python HTTP server bound to 127.0.0.1 on an ephemeral port.

QEMU and the HTTP server are context-managed: they are stopped on success, failure, timeout and
KeyboardInterrupt alike (QEMU through :func:`liveos.run.spawn`).

Example::

    result = boot(BootConfig(Disk(Path("disk.qcow2")), timeout=300))
    assert result.ok, result.describe()
"""

from __future__ import annotations

import contextlib
import enum
import functools
import http.server
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from liveos.errors import HostError, UsageError
from liveos.run import output, spawn, which

log = logging.getLogger("liveos.boottest")

#: What the liveos test images print once multi-user.target is reached.
DEFAULT_MARKER = "LIVEOS-BOOT-OK"
#: Guest-visible address of the host HTTP server (slirp guestfwd; restrict=on allows it).
GUEST_HTTP_ADDR = "10.0.2.100"
QEMU = "qemu-system-x86_64"
OVMF_DIR = Path("/usr/share/OVMF")


class Firmware(enum.StrEnum):
    """OVMF build: plain UEFI, or Secure Boot enforcing with the Microsoft keys enrolled; or
    SeaBIOS, QEMU's default firmware (BIOS boot: no flash drives)."""

    UEFI = "uefi"
    UEFI_SECURE_BOOT = "uefi-sb"
    BIOS = "bios"

    @property
    def is_uefi(self) -> bool:
        """OVMF (code and variable flash), not SeaBIOS."""
        return self is not Firmware.BIOS

    @property
    def code(self) -> Path:
        """The OVMF code image (read-only flash) of this firmware."""
        name = "OVMF_CODE_4M.secboot.fd" if self is Firmware.UEFI_SECURE_BOOT else "OVMF_CODE_4M.fd"
        return OVMF_DIR / name

    @property
    def vars_template(self) -> Path:
        """The OVMF variable store each boot starts from (copied: the guest may write it)."""
        name = "OVMF_VARS_4M.ms.fd" if self is Firmware.UEFI_SECURE_BOOT else "OVMF_VARS_4M.fd"
        return OVMF_DIR / name


class Accel(enum.StrEnum):
    """QEMU accelerator. TCG works everywhere; KVM only where the host can run OVMF under it."""

    TCG = "tcg"
    KVM = "kvm"


class DiskBus(enum.StrEnum):
    """Controller a disk image is attached to."""

    VIRTIO = "virtio"
    AHCI = "ahci"
    NVME = "nvme"
    SCSI = "scsi"


class CdBus(enum.StrEnum):
    """Controller a CD-ROM is attached to (ahci = ide-cd on q35's ICH9)."""

    AHCI = "ahci"
    SCSI = "scsi"
    USB = "usb"


@dataclass(frozen=True)
class Disk:
    """A disk image (raw/qcow2/vpc/vhdx, auto-detected), opened ``snapshot=on`` so it stays pristine
    (``writable=True``: written through, so a second boot sees the first one's changes).

    A hybrid ISO attached as a disk is how a USB stick boots.
    """

    path: Path
    bus: DiskBus = DiskBus.VIRTIO
    format: str | None = None  # qemu format name; None = ask qemu-img
    writable: bool = False  #: the guest's writes reach the file (a persistent USB), no snapshot


@dataclass(frozen=True)
class CdRom:
    """An ISO 9660 image in a read-only CD drive (El Torito boot)."""

    path: Path
    bus: CdBus = CdBus.AHCI


@dataclass(frozen=True)
class DirectKernel:
    """QEMU loads kernel+initrd itself (no firmware boot manager, no grub): PXE-like."""

    kernel: Path
    initrd: Path | None
    append: str


@dataclass(frozen=True)
class PxeBoot:
    """Real UEFI PXE: OVMF fetches ``bootfile`` from slirp's TFTP server rooted at ``tftp_root``."""

    tftp_root: Path
    bootfile: str


Media = Disk | CdRom | DirectKernel | PxeBoot


@dataclass(frozen=True)
class BootConfig:
    """Everything one boot check needs. ``network`` adds a restricted NIC even without HTTP/PXE."""

    media: Media
    marker: str = DEFAULT_MARKER
    timeout: float = 300.0
    memory_mib: int = 2048
    smp: int = 2
    firmware: Firmware = Firmware.UEFI
    accel: Accel = Accel.TCG
    network: bool = False
    http_root: Path | None = None
    extra_disks: tuple[Disk, ...] = ()  # attached after the boot media, not bootable
    log_path: Path | None = None  # serial log; default: a temp file that is kept
    extra_qemu_args: tuple[str, ...] = ()

    @property
    def needs_network(self) -> bool:
        """Whether the guest gets a NIC: asked for, an HTTP root to serve, or a PXE boot."""
        return self.network or self.http_root is not None or isinstance(self.media, PxeBoot)


@dataclass(frozen=True)
class BootResult:
    """Outcome of one boot: ``ok`` only when the marker line was seen."""

    ok: bool
    seconds: float
    marker_line: str | None  # serial text from the marker to the end of its line
    log_path: Path
    reason: str  # "marker seen", "timeout after N s", "qemu exited with code N"
    log_tail: str = ""  # last serial output (and qemu stderr) when not ok
    qemu_argv: tuple[str, ...] = field(default=(), repr=False)

    def describe(self) -> str:
        """One human-readable paragraph for assertion messages and logs."""
        head = f"boot {'OK' if self.ok else 'FAILED'} after {self.seconds:.1f} s: {self.reason}"
        if self.ok:
            return f"{head}\n  {self.marker_line}"
        return f"{head}\n  serial log: {self.log_path}\n---- tail ----\n{self.log_tail}"


# ------------------------------------------------------------------------------ command line


def check_host(config: BootConfig) -> None:
    """Raise :class:`HostError` naming what is missing (QEMU, OVMF, socat) before starting."""
    which(QEMU)
    for path in (config.firmware.code, config.firmware.vars_template) if config.firmware.is_uefi else ():
        if not path.is_file():
            raise HostError(f"OVMF firmware file {path} is missing", path=path, hint="apt-get install ovmf")
    if config.http_root is not None:
        which("socat")
        if not config.http_root.is_dir():
            raise UsageError(f"HTTP root {config.http_root} is not a directory", path=config.http_root)
    media = config.media
    paths = [disk.path for disk in config.extra_disks]
    if isinstance(media, Disk | CdRom):
        paths += [media.path]
    elif isinstance(media, DirectKernel):
        paths += [media.kernel, *([media.initrd] if media.initrd else [])]
    else:
        paths += [media.tftp_root / media.bootfile]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"boot media file {path} does not exist", path=path)


def _image_format(path: Path) -> str:
    info: dict[str, Any] = json.loads(
        output(["qemu-img", "info", "--output=json", str(path)], step=f"probe format of {path}")
    )
    return str(info["format"])


def _disk_args(disk: Disk, index: int, bootindex: int | None) -> list[str]:
    fmt = disk.format or _image_format(disk.path)
    drive_id = f"d{index}"
    boot = "" if bootindex is None else f",bootindex={bootindex}"
    snapshot = "" if disk.writable else ",snapshot=on"
    drive = ["-drive", f"file={disk.path},format={fmt},if=none,id={drive_id}{snapshot}"]
    device = {
        DiskBus.VIRTIO: ["-device", f"virtio-blk-pci,drive={drive_id}{boot}"],
        DiskBus.AHCI: ["-device", f"ide-hd,drive={drive_id}{boot}"],
        DiskBus.NVME: ["-device", f"nvme,drive={drive_id},serial=liveos{index}{boot}"],
        DiskBus.SCSI: [
            "-device", f"virtio-scsi-pci,id=scsi{index}",
            "-device", f"scsi-hd,drive={drive_id},bus=scsi{index}.0{boot}",
        ],
    }[disk.bus]  # fmt: skip
    return drive + device


def _media_args(media: Media) -> list[str]:
    if isinstance(media, Disk):
        return _disk_args(media, 0, bootindex=1)
    if isinstance(media, CdRom):
        drive = ["-drive", f"file={media.path},format=raw,if=none,id=cd0,media=cdrom,readonly=on"]
        device = {
            CdBus.AHCI: ["-device", "ide-cd,drive=cd0,bootindex=0"],
            CdBus.SCSI: [
                "-device",
                "virtio-scsi-pci,id=scsicd",
                "-device",
                "scsi-cd,drive=cd0,bus=scsicd.0,bootindex=0",
            ],
            CdBus.USB: ["-device", "qemu-xhci", "-device", "usb-storage,drive=cd0,bootindex=0"],
        }[media.bus]
        return drive + device
    if isinstance(media, DirectKernel):
        args = ["-kernel", str(media.kernel)]
        if media.initrd is not None:
            args += ["-initrd", str(media.initrd)]
        return [*args, "-append", media.append]
    return []  # PXE: the NIC is the boot device (see _net_args)


def _net_args(config: BootConfig, http_port: int | None) -> list[str]:
    if not config.needs_network:
        return ["-nic", "none"]  # otherwise QEMU adds a default user-net NIC
    netdev = "user,id=n0,restrict=on"
    if isinstance(config.media, PxeBoot):
        netdev += f",tftp={config.media.tftp_root},bootfile={config.media.bootfile}"
    if http_port is not None:
        # cmd: form spawns one socat per connection; the chardev form serves only one
        netdev += f",guestfwd=tcp:{GUEST_HTTP_ADDR}:80-cmd:socat - TCP:127.0.0.1:{http_port}"
    # romfile= drops iPXE so OVMF's own PXE/HTTP stack is used
    nic = "virtio-net-pci,netdev=n0,romfile="
    if isinstance(config.media, PxeBoot):
        nic += ",bootindex=0"
    return ["-netdev", netdev, "-device", nic]


def qemu_argv(
    config: BootConfig, vars_copy: Path, log_path: Path, http_port: int | None = None
) -> list[str]:
    """The full QEMU command line (pure apart from probing a disk's format)."""
    machine = "q35,smm=on" if config.firmware is Firmware.UEFI_SECURE_BOOT else "q35"
    accel = (
        ["-accel", "kvm", "-cpu", "host"]
        if config.accel is Accel.KVM
        else ["-accel", "tcg,thread=multi", "-cpu", "max"]
    )
    argv = [
        QEMU, "-machine", machine, "-m", str(config.memory_mib), "-smp", str(config.smp), *accel,
        "-display", "none", "-monitor", "none", "-no-user-config", "-serial", f"file:{log_path}",
        "-device", "virtio-rng-pci",
    ]  # fmt: skip
    if config.firmware.is_uefi:
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={config.firmware.code}",
            "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
        ]  # fmt: skip
    else:  # SeaBIOS, QEMU's default; no VGA: under TCG the guest's bochs-drm stalls boots ~100 s
        argv += ["-vga", "none"]
    if config.firmware is Firmware.UEFI_SECURE_BOOT:
        argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    argv += _net_args(config, http_port) + _media_args(config.media)
    for index, disk in enumerate(config.extra_disks, start=1):
        argv += _disk_args(disk, index, bootindex=None)
    return argv + list(config.extra_qemu_args)


# ------------------------------------------------------------------------------ resources


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


@contextlib.contextmanager
def http_server(root: Path) -> Iterator[int]:
    """Serve ``root`` read-only on 127.0.0.1 (ephemeral port, yielded) from a daemon thread."""
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="liveos-boottest-http", daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# ------------------------------------------------------------------------------ the wait loop


class _SerialWatcher:
    """Reads the growing serial log incrementally and finds the first complete marker line."""

    def __init__(self, path: Path, marker: str) -> None:
        self.path = path
        self.marker = marker.encode()
        self._buffer = b""
        self._offset = 0

    def poll(self, final: bool = False) -> str | None:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
            self._offset += len(chunk)
            self._buffer += chunk
        start = self._buffer.find(self.marker)
        if start < 0:
            # keep a marker-length tail so a marker split across reads is still found
            self._buffer = self._buffer[-len(self.marker) :]
            return None
        end = self._buffer.find(b"\n", start)
        if end < 0 and not final:
            return None  # wait for the rest of the line
        line = self._buffer[start:] if end < 0 else self._buffer[start:end]
        return line.decode(errors="replace").strip()


def _tail(path: Path, limit: int = 3000) -> str:
    try:
        data = path.read_bytes()[-limit:]
    except FileNotFoundError:
        return ""
    return data.decode(errors="replace").replace("\r", "")


def boot(config: BootConfig, poll_interval: float = 0.5) -> BootResult:
    """Boot ``config.media`` and wait until the marker appears, QEMU exits, or the timeout passes."""
    check_host(config)
    with contextlib.ExitStack() as stack:
        run_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="liveos-boottest-")))
        if config.log_path is None:
            handle, name = tempfile.mkstemp(prefix="liveos-boot-", suffix=".log")
            os.close(handle)
            log_path = Path(name)
        else:
            log_path = config.log_path
            log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_bytes(b"")
        vars_copy = run_dir / "OVMF_VARS.fd"
        if config.firmware.is_uefi:
            shutil.copyfile(config.firmware.vars_template, vars_copy)
        port = stack.enter_context(http_server(config.http_root)) if config.http_root else None
        argv = qemu_argv(config, vars_copy, log_path, port)
        stderr_path = run_dir / "qemu.stderr"
        started = time.monotonic()
        proc = stack.enter_context(spawn(argv, log_to=stderr_path))
        watcher = _SerialWatcher(log_path, config.marker)
        reason = f"timeout after {config.timeout:.0f} s"
        line: str | None = None
        while True:
            line = watcher.poll()
            if line is not None:
                reason = "marker seen"
                break
            if proc.poll() is not None:
                line = watcher.poll(final=True)
                reason = "marker seen" if line else f"qemu exited with code {proc.returncode}"
                break
            if time.monotonic() - started > config.timeout:
                line = watcher.poll(final=True)
                reason = "marker seen" if line else reason
                break
            time.sleep(poll_interval)
        seconds = time.monotonic() - started
        tail = ""
        if line is None:
            qemu_err = _tail(stderr_path, 1500).strip()
            tail = _tail(log_path) + (f"\n---- qemu stderr ----\n{qemu_err}" if qemu_err else "")
        result = BootResult(
            ok=line is not None,
            seconds=seconds,
            marker_line=line,
            log_path=log_path,
            reason=reason,
            log_tail=tail,
            qemu_argv=tuple(argv),
        )
    log.info("%s", result.describe().splitlines()[0])
    return result
