"""The ISO writer's El Torito entry and hybrid GPT, proven by booting OVMF in QEMU: a tiny
hand-made EFI application as ``bootx64.efi`` shows both work without grub. Also: a full disk
mid-write leaves no file (needs root for the small tmpfs).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest

from liveos.errors import HostError
from liveos.iso import EfiBootFiles, IsoWriter, build_efiboot_image
from liveos.run import run

MARKER = "LIVEOS-EFI-APP-OK"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
#: OVMF built with Secure Boot, its variable store with the Microsoft keys enrolled (enforcing).
OVMF_SB_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_SB_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


def tiny_efi_app(message: str) -> bytes:
    """A minimal x86-64 PE32+ EFI application: ConOut->OutputString(message), then spin.

    Position independent (RIP-relative), no relocations, one RX section. OVMF mirrors ConOut to
    the serial port, so the message shows up in QEMU's serial log.
    """
    msg = (message + "\r\n").encode("utf-16-le") + b"\0\0"
    # sub rsp,0x28; mov rcx,[rdx+0x40] (SystemTable->ConOut); lea rdx,[rip+5]; call [rcx+8]; jmp $
    code = bytes.fromhex("4883EC28488B4A40488D1505000000FF5108EBFE") + msg
    dos = b"MZ".ljust(0x3C, b"\0") + struct.pack("<I", 0x40)
    coff = struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 240, 0x0022)
    opt = struct.pack("<HBBIIIII", 0x20B, 0, 0, 0x200, 0, 0, 0x1000, 0x1000)
    opt += struct.pack(
        "<QIIHHHHHHIIIIHHQQQQII", 0, 0x1000, 0x200, 0, 0, 0, 0, 0, 0, 0, 0x2000, 0x200, 0, 10, 0,
        0, 0, 0, 0, 0, 16,
    )  # fmt: skip
    opt += b"\0" * 128  # 16 empty data directories
    section = struct.pack("<8sIIIIIIHHI", b".text", 0x1000, 0x1000, 0x200, 0x200, 0, 0, 0, 0, 0x60000020)
    headers = (dos + b"PE\0\0" + coff + opt + section).ljust(0x200, b"\0")
    return headers + code.ljust(0x200, b"\0")


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs")
def test_disk_full_mid_write_leaves_no_file(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    small = tmp_path / "small"
    small.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=1m", "liveos-test", small])
    try:
        writer = IsoWriter("FULL")
        writer.add_file("/src.bin", src)
        with pytest.raises(HostError, match="No space left"):
            writer.write(small / "full.iso", hybrid=False)
        assert list(small.iterdir()) == []
    finally:
        run(["umount", small])


# -- real UEFI boots (OVMF + TCG) -------------------------------------------------------------
def boot(
    image: Path, *, as_cd: bool, tmp_path: Path, timeout: float = 240, secure_boot: bool = False
) -> str:
    """Boot ``image`` in QEMU/OVMF; return "ok" (marker seen), "denied" (Secure Boot refused the
    loader) or "shell" (firmware found nothing)."""
    vars_fd = tmp_path / "vars.fd"
    shutil.copyfile(OVMF_SB_VARS if secure_boot else OVMF_VARS, vars_fd)
    code = OVMF_SB_CODE if secure_boot else OVMF_CODE
    log = tmp_path / "serial.log"
    log.write_bytes(b"")
    media = (
        [f"file={image},format=raw,if=none,id=d0,media=cdrom,readonly=on", "ide-cd,drive=d0,bootindex=0"]
        if as_cd
        else [f"file={image},format=raw,if=none,id=d0,snapshot=on", "virtio-blk-pci,drive=d0,bootindex=0"]
    )
    argv = [
        "qemu-system-x86_64", "-machine", "q35,smm=on" if secure_boot else "q35", "-m", "512",
        "-smp", "1", "-display", "none",
        "-monitor", "none", "-no-user-config", "-serial", f"file:{log}", "-accel", "tcg", "-cpu", "max",
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
        "-drive", f"if=pflash,format=raw,unit=1,file={vars_fd}", "-nic", "none",
        "-drive", media[0], "-device", media[1],
    ]  # fmt: skip
    if secure_boot:  # the variable store is only writable from SMM, as on real Secure Boot hardware
        argv += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            text = log.read_bytes().decode(errors="replace")
            if MARKER in text:
                return "ok"
            if "Access Denied" in text:
                return "denied"
            if "Shell>" in text:
                return "shell"
            time.sleep(0.5)
        raise AssertionError(f"no verdict; qemu rc={proc.poll()}; serial tail: {log.read_bytes()[-800:]!r}")
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def app_efi_files(tmp_path: Path) -> EfiBootFiles:
    app = tmp_path / "hello.efi"
    app.write_bytes(tiny_efi_app(MARKER))
    return EfiBootFiles(loader=app)


def app_iso(tmp_path: Path, files: EfiBootFiles, *, hybrid: bool, strip_el_torito: bool) -> Path:
    efiboot = tmp_path / "efiboot.img"
    build_efiboot_image(efiboot, files)
    writer = IsoWriter("LIVEOS")
    writer.add_bytes("/hello.txt", b"hello\n")
    writer.set_efi_boot("/EFI/BOOT/efiboot.img", efiboot)
    iso = tmp_path / "app.iso"
    writer.write(iso, hybrid=hybrid)
    if strip_el_torito:  # zero the boot record (sector 17): only the partition table is left
        with open(iso, "r+b") as fp:
            fp.seek(17 * 2048)
            assert fp.read(32)[1:6] == b"CD001"
            fp.seek(17 * 2048)
            fp.write(b"\0" * 2048)
    return iso


needs_ovmf = pytest.mark.skipif(
    not (OVMF_CODE.exists() and shutil.which("qemu-system-x86_64")), reason="needs qemu-system-x86 + ovmf"
)


@pytest.mark.boot
@needs_ovmf
def test_boots_from_cd_via_el_torito(tmp_path: Path, app_efi_files: EfiBootFiles) -> None:
    iso = app_iso(tmp_path, app_efi_files, hybrid=True, strip_el_torito=False)
    assert boot(iso, as_cd=True, tmp_path=tmp_path) == "ok"


@pytest.mark.boot
@needs_ovmf
def test_boots_as_disk_via_the_hybrid_gpt_alone(tmp_path: Path, app_efi_files: EfiBootFiles) -> None:
    # OVMF also finds El Torito on disks, so El Torito is removed to prove the GPT path.
    iso = app_iso(tmp_path, app_efi_files, hybrid=True, strip_el_torito=True)
    assert boot(iso, as_cd=False, tmp_path=tmp_path) == "ok"


@pytest.mark.boot
@needs_ovmf
def test_negative_control_plain_iso_without_el_torito_does_not_boot(
    tmp_path: Path, app_efi_files: EfiBootFiles
) -> None:
    iso = app_iso(tmp_path, app_efi_files, hybrid=False, strip_el_torito=True)
    assert boot(iso, as_cd=False, tmp_path=tmp_path) == "shell"


@pytest.mark.boot
@needs_ovmf
def test_negative_control_secure_boot_refuses_an_unsigned_loader(
    tmp_path: Path, app_efi_files: EfiBootFiles
) -> None:
    """The Secure Boot firmware the ISO and PXE boot tests use really enforces: the same unsigned
    application that boots above is refused, so those tests prove a signed chain."""
    iso = app_iso(tmp_path, app_efi_files, hybrid=True, strip_el_torito=False)
    assert boot(iso, as_cd=True, tmp_path=tmp_path, secure_boot=True) == "denied"
