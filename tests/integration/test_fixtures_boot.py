"""The test images are what they claim to be, and the QEMU boot harness can both pass and fail."""

from __future__ import annotations

import json
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, BootResult, DirectKernel, Disk, PxeBoot, boot, http_server
from liveos.run import output
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import MARKER, DiskFormat, FixtureImage, Layout

# ------------------------------------------------------------------------ helpers (real tools)

ESP_OFFSET = 2048 * 512


def esp_listing(image: Path) -> set[str]:
    """Every path in the ESP, read with mtools (the host kernel has no vfat)."""
    text = output(["mdir", "-/", "-b", "-i", f"{image}@@{ESP_OFFSET}", "::/"])
    return {line.removeprefix("::").rstrip("/") for line in text.splitlines() if line.startswith("::")}


def partition(image: Path, number: int) -> tuple[int, str]:
    """(byte offset, lower-case PARTUUID) of a GPT partition, from sgdisk."""
    text = output(["sgdisk", "-i", str(number), str(image)])
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    first = int(fields["First sector"].split()[0])
    return first * 512, fields["Partition unique GUID"].strip().lower()


def ext4_cat(image: Path, offset: int, path: str) -> str:
    """A file from an ext4 filesystem at ``offset`` inside ``image`` (debugfs, no mount)."""
    proc = subprocess.run(
        ["debugfs", "-R", f"cat {path}", f"{image}?offset={offset}"], capture_output=True, check=True
    )
    return proc.stdout.decode()


def ext4_dump(image: Path, offset: int, path: str, dest: Path) -> Path:
    """Copy a file out of the ext4 filesystem at ``offset`` (debugfs ``dump``)."""
    subprocess.run(
        ["debugfs", "-R", f"dump {path} {dest}", f"{image}?offset={offset}"], capture_output=True, check=True
    )
    assert dest.stat().st_size > 0, f"debugfs could not dump {path}"
    return dest


def probe(image: Path, offset: int) -> dict[str, str]:
    """blkid's low-level probe of the filesystem at ``offset``."""
    text = output(["blkid", "-p", "-O", str(offset), "-o", "export", str(image)])
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def assert_booted(result: BootResult, fstype: str) -> None:
    assert result.ok, result.describe()
    assert result.marker_line is not None
    assert result.marker_line.startswith(MARKER)
    assert f"fstype={fstype} " in result.marker_line, result.marker_line


# ------------------------------------------------------------------------ image structure


def test_manifest_round_trips() -> None:
    image = FixtureImage(
        path=Path("/x/disk.qcow2"),
        layout=Layout.AZL,
        format=DiskFormat.QCOW2,
        kernel_version="6.1.0-56-amd64",
        root_uuid="u",
        root_partuuid="p",
        root_fstype="ext4",
        esp_uuid="ABCD-0123",
        grub_cfg="/boot/grub2/grub.cfg",
        kernel_cmdline="root=PARTUUID=p ro",
    )
    assert FixtureImage.from_json(image.to_json()) == image


@pytest.mark.root
def test_azl_layout(fixture_image: FixtureImageFactory) -> None:
    image = fixture_image("azl", "raw")
    esp = esp_listing(image.path)
    assert {
        "/EFI/BOOT/bootx64.efi",
        "/EFI/BOOT/grubx64.efi",
        "/EFI/BOOT/grub.cfg",
        "/boot/grub2/grub.cfg",
    } <= esp
    assert not any(p.startswith("/EFI/debian") for p in esp)
    root_offset, partuuid = partition(image.path, 2)
    assert partuuid == image.root_partuuid
    assert probe(image.path, root_offset)["UUID"] == image.root_uuid
    grub_cfg = ext4_cat(image.path, root_offset, image.grub_cfg)
    assert image.grub_cfg == "/boot/grub2/grub.cfg"
    assert f"root=PARTUUID={image.root_partuuid}" in grub_cfg
    assert f"initrd $bootprefix/initramfs-{image.kernel_version}.img" in grub_cfg
    fstab = ext4_cat(image.path, root_offset, "/etc/fstab")
    assert f"UUID={image.root_uuid}  /  ext4" in fstab
    assert f"UUID={image.esp_uuid}  /boot/efi  vfat" in fstab
    redirect = output(["mtype", "-i", f"{image.path}@@{ESP_OFFSET}", "::/EFI/BOOT/grub.cfg"])
    assert f"search -n -u {image.root_uuid} -s" in redirect


@pytest.mark.root
def test_debian_layout(fixture_image: FixtureImageFactory) -> None:
    image = fixture_image("debian", "raw")
    esp = esp_listing(image.path)
    for name in ("shimx64.efi", "grubx64.efi", "mmx64.efi", "grub.cfg", "BOOTX64.CSV"):
        assert f"/EFI/debian/{name}" in esp
    assert {"/EFI/BOOT/BOOTX64.EFI", "/EFI/BOOT/grubx64.efi", "/EFI/BOOT/mmx64.efi"} <= esp
    root_offset, _ = partition(image.path, 2)
    grub_cfg = ext4_cat(image.path, root_offset, "/boot/grub/grub.cfg")
    assert f"root=UUID={image.root_uuid}" in grub_cfg
    assert f"initrd $bootprefix/initrd.img-{image.kernel_version}" in grub_cfg


@pytest.mark.root
def test_split_layout(fixture_image: FixtureImageFactory) -> None:
    image = fixture_image("split", "raw")
    boot_offset, _ = partition(image.path, 2)
    root_offset, partuuid = partition(image.path, 3)
    assert partuuid == image.root_partuuid
    root = probe(image.path, root_offset)
    assert (root["TYPE"], root["UUID"]) == ("xfs", image.root_uuid)
    assert probe(image.path, boot_offset)["TYPE"] == "ext4"
    grub_cfg = ext4_cat(image.path, boot_offset, "/grub/grub.cfg")  # paths relative to the /boot fs
    assert f"linux $bootprefix/vmlinuz-{image.kernel_version}" in grub_cfg
    assert "set bootprefix=\n" in grub_cfg
    assert f"UUID={image.root_uuid}" in grub_cfg


@pytest.mark.root
def test_bls_layout(fixture_image: FixtureImageFactory) -> None:
    image = fixture_image("bls", "raw")
    assert not image.bootable  # Debian's signed grub 2.06 has no blscfg
    root_offset, _ = partition(image.path, 2)
    assert "blscfg" in ext4_cat(image.path, root_offset, "/boot/grub2/grub.cfg")
    entry = ext4_cat(
        image.path, root_offset, f"/boot/loader/entries/liveosfixture-{image.kernel_version}.conf"
    )
    assert f"linux /boot/vmlinuz-{image.kernel_version}\n" in entry
    assert f"options root=UUID={image.root_uuid} " in entry
    assert "/EFI/fedora/grub.cfg" in esp_listing(image.path)


@pytest.mark.root
@pytest.mark.parametrize(("fmt", "qemu_name"), [("qcow2", "qcow2"), ("vhd", "vpc"), ("vhdx", "vhdx")])
def test_formats_convert(fixture_image: FixtureImageFactory, fmt: str, qemu_name: str) -> None:
    image = fixture_image("azl", fmt)
    info = json.loads(output(["qemu-img", "info", "--output=json", str(image.path)]))
    assert info["format"] == qemu_name
    assert info["virtual-size"] >= 2 * 1024**3
    assert image.root_uuid == fixture_image("azl", "raw").root_uuid  # converted, not rebuilt


@pytest.mark.root
def test_cached_image_is_reused(fixture_image: FixtureImageFactory) -> None:
    from tests.fixtures.builder import build_image

    first = fixture_image("azl", "raw")
    mtime = first.path.stat().st_mtime_ns
    again = build_image("azl", "raw")  # bypasses the session memo: goes to the disk cache
    assert again == first
    assert first.path.stat().st_mtime_ns == mtime


# ------------------------------------------------------------------------ harness: can fail


def _qemu_pids_using(path: Path) -> list[int]:
    """PIDs of QEMU processes whose command line mentions ``path``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"qemu-system" in argv[0] and any(str(path).encode() in arg for arg in argv):
            pids.append(int(cmdline.parent.name))
    return pids


@pytest.mark.boot
def test_blank_disk_never_shows_marker(tmp_path: Path) -> None:
    """Negative control: firmware runs but nothing prints the marker -> timeout, not success."""
    blank = tmp_path / "blank.raw"
    with blank.open("wb") as handle:
        handle.truncate(64 * 1024**2)
    log_path = tmp_path / "serial.log"
    result = boot(BootConfig(Disk(blank), timeout=25, log_path=log_path))
    assert not result.ok
    assert result.marker_line is None
    assert result.reason.startswith("timeout")
    assert result.log_tail  # OVMF did write to the serial port: we watched a live guest
    assert _qemu_pids_using(log_path) == []  # QEMU was killed


@pytest.mark.boot
def test_qemu_failure_is_reported(tmp_path: Path) -> None:
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * 1024**2)
    result = boot(BootConfig(Disk(blank), timeout=60, extra_qemu_args=("-device", "no-such-device")))
    assert not result.ok
    assert result.reason.startswith("qemu exited with code")
    assert "no-such-device" in result.log_tail


@pytest.mark.boot
def test_ctrl_c_kills_qemu(tmp_path: Path) -> None:
    """KeyboardInterrupt in the waiting process (SIGINT to it alone) still stops QEMU."""
    blank = tmp_path / "blank.raw"
    blank.write_bytes(b"\0" * 1024**2)
    log_path = tmp_path / "serial.log"
    script = (
        "from pathlib import Path; from liveos.boottest import BootConfig, Disk, boot; "
        f"boot(BootConfig(Disk(Path('{blank}')), timeout=300, log_path=Path('{log_path}')))"
    )
    waiter = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parent.parent.parent)
    try:
        deadline = time.monotonic() + 60
        # wait until the firmware writes to the serial log: QEMU runs and boot() is polling
        while not (log_path.exists() and log_path.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _qemu_pids_using(log_path), "QEMU never started"
        waiter.send_signal(signal.SIGINT)
        assert waiter.wait(timeout=30) != 0  # died of KeyboardInterrupt
    finally:
        waiter.kill()
    assert _qemu_pids_using(log_path) == []


def test_http_server_serves_and_stops(tmp_path: Path) -> None:
    (tmp_path / "rootfs.img").write_bytes(b"squashfs-bytes")
    with (
        http_server(tmp_path) as port,
        urllib.request.urlopen(f"http://127.0.0.1:{port}/rootfs.img", timeout=10) as response,
    ):
        assert response.read() == b"squashfs-bytes"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/rootfs.img", timeout=5)


# ------------------------------------------------------------------------ real boots


@pytest.mark.root
@pytest.mark.boot
def test_azl_raw_boots(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    image = fixture_image("azl", "raw")
    assert_booted(boot(BootConfig(Disk(image.path), log_path=tmp_path / "serial.log")), "ext4")


@pytest.mark.root
@pytest.mark.boot
def test_debian_qcow2_boots(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    image = fixture_image("debian", "qcow2")
    assert_booted(boot(BootConfig(Disk(image.path), log_path=tmp_path / "serial.log")), "ext4")


@pytest.mark.root
@pytest.mark.boot
def test_split_raw_boots_xfs_root(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    image = fixture_image("split", "raw")
    assert_booted(boot(BootConfig(Disk(image.path), log_path=tmp_path / "serial.log")), "xfs")


@pytest.mark.root
@pytest.mark.boot
def test_direct_kernel_with_restricted_http(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """Direct kernel boot + data disk + restricted user-net: the guest fetches a file from
    http://10.0.2.100/ (the host server via guestfwd) and copies it to the serial port."""
    image = fixture_image("azl", "raw")
    root_offset, _ = partition(image.path, 2)
    kver = image.kernel_version
    kernel = ext4_dump(image.path, root_offset, f"/boot/vmlinuz-{kver}", tmp_path / "vmlinuz")
    initrd = ext4_dump(image.path, root_offset, f"/boot/initramfs-{kver}.img", tmp_path / "initrd")
    www = tmp_path / "www"
    www.mkdir()
    token = f"LIVEOS-HTTP-OK-{secrets.token_hex(8)}"  # only in the served file, not on the cmdline
    (www / "hello.txt").write_text(token + "\n")
    append = (
        f"{image.kernel_cmdline} ip=dhcp rd.neednet=1"
        # TCG under load: udev can take longer than systemd's 90 s default to show the ESP that
        # fstab mounts at /boot/efi, which drops the guest into emergency mode (seen in CI)
        " systemd.default_timeout_start_sec=400"
        # retries: under load the guest's DHCP lease can come after systemd.run starts
        ' systemd.run="/usr/bin/curl -sf --retry 20 --retry-delay 3 --retry-all-errors'
        ' -o /dev/ttyS0 http://10.0.2.100/hello.txt"'
    )
    config = BootConfig(
        DirectKernel(kernel, initrd, append),
        marker=token,
        http_root=www,
        extra_disks=(Disk(image.path),),
        timeout=500,
        log_path=tmp_path / "serial.log",
    )
    result = boot(config)
    assert result.ok, result.describe()
    assert result.marker_line == token


@pytest.mark.root
@pytest.mark.boot
def test_uefi_pxe_boot(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """Real UEFI PXE: OVMF -> shim -> grubnetx64 over slirp TFTP -> kernel; root on a data disk."""
    image = fixture_image("azl", "raw")
    root_offset, _ = partition(image.path, 2)
    kver = image.kernel_version
    tftp = tmp_path / "tftp"
    (tftp / "grub").mkdir(parents=True)
    ext4_dump(image.path, root_offset, f"/boot/vmlinuz-{kver}", tftp / "vmlinuz")
    ext4_dump(image.path, root_offset, f"/boot/initramfs-{kver}.img", tftp / "initrd.img")
    ext4_dump(image.path, root_offset, "/usr/lib/shim/shimx64.efi.signed", tftp / "bootx64.efi")
    # the disk grubx64.efi has no working TFTP; the network build (prefix /grub) does
    signed = "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    ext4_dump(image.path, root_offset, signed, tftp / "grubx64.efi")
    (tftp / "grub/grub.cfg").write_text(
        "set timeout=0\nserial --unit=0 --speed=115200\nterminal_output console serial\n"
        f"menuentry pxe {{\n\tlinux /vmlinuz {image.kernel_cmdline} liveos.via=tftp\n"
        "\tinitrd /initrd.img\n}\n"
    )
    config = BootConfig(
        PxeBoot(tftp, "bootx64.efi"),
        extra_disks=(Disk(image.path),),
        timeout=500,
        log_path=tmp_path / "serial.log",
    )
    result = boot(config)
    assert_booted(result, "ext4")
    # the data disk is bootable too: prove the kernel came over TFTP, not from the disk's ESP
    serial = result.log_path.read_text(errors="replace")
    assert "NBP filename is bootx64.efi" in serial
    assert re.search(r"Command line: .*liveos\.via=tftp", serial)
