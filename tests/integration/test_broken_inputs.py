"""A corpus of broken inputs and hosts: each gives the typed error that says whose fault it is, a
message naming the problem, a hint with the fix -- and leaves no mount, loop device or file behind."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.errors import HostError, ImageError, LiveOSError, MissingToolError
from liveos.live import LiveOS
from tests.imagekit import PartSpec, convert, make_disk, os_tree, pe_stub, sh, sha256, write_tree
from tests.liveimagekit import FSTAB, leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]
REPO = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    yield work


def build_fails(
    image: Path, workdir: Path, kind: type[LiveOSError], pattern: str, *, bootstrap: bool = False
) -> LiveOSError:
    """Building an ISO from ``image`` raises ``kind`` matching ``pattern``, with a hint, cleanly."""
    before = sha256(image) if image.is_file() else None
    out = workdir.parent / "live.iso"
    with pytest.raises(kind, match=pattern) as exc, LiveOS.open(image, workdir=workdir) as live:
        (live.bootstrap() if bootstrap else live.full_os("none")).write_iso(out)
    assert type(exc.value) is kind, f"{type(exc.value).__name__} is not {kind.__name__}: {exc.value}"
    assert exc.value.hint, f"no fix offered: {exc.value}"
    assert leftovers(image, workdir, out) == []
    if before is not None:
        assert sha256(image) == before, "the input changed"
    return exc.value


# -- broken containers and tables --------------------------------------------------------------
def test_empty_file(tmp_path: Path, workdir: Path) -> None:
    empty = tmp_path / "empty.qcow2"
    empty.touch()
    error = build_fails(empty, workdir, ImageError, "empty")
    assert str(empty) in str(error)


def test_truncated_qcow2(tmp_path: Path, workdir: Path) -> None:
    qcow2 = convert(live_image(tmp_path), "qcow2")
    with qcow2.open("r+b") as f:
        f.truncate(qcow2.stat().st_size // 2)
    build_fails(qcow2, workdir, ImageError, r"(damaged|truncated|could not be read|not a readable)")


def test_zeroed_partition_table(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(tmp_path)
    size = raw.stat().st_size
    with raw.open("r+b") as f:
        f.write(bytes(34 * 512))  # protective MBR + primary GPT
        f.seek(size - 33 * 512)
        f.write(bytes(33 * 512))  # backup GPT
    build_fails(raw, workdir, ImageError, "no readable partition table")


def test_no_root_filesystem(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(tmp_path, remove=["/etc/fstab"])
    build_fails(raw, workdir, ImageError, r"failed to find rootfs partition.*partition 2 \(ext4\)")


def test_two_root_filesystems(tmp_path: Path, workdir: Path) -> None:
    one = os_tree(tmp_path / "one", "LABEL=one / ext4 defaults 0 1\n")
    two = os_tree(tmp_path / "two", "LABEL=two / ext4 defaults 0 1\n")
    disk = make_disk(
        tmp_path / "two.raw", [PartSpec(16, "ext4", one, label="one"), PartSpec(16, "ext4", two)]
    )
    error = build_fails(disk.path, workdir, ImageError, r"too many rootfs partition candidates \(2\)")
    assert "partition 1 (ext4)" in str(error) and "partition 2 (ext4)" in str(error)


# -- broken boot chains ----------------------------------------------------------------------------
def test_missing_grub_cfg(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(tmp_path, remove=["/boot/grub2/grub.cfg"])
    build_fails(raw, workdir, ImageError, "no grub config found")


def test_missing_shim(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(tmp_path, esp={"/EFI/BOOT/grubx64.efi": pe_stub()})
    build_fails(raw, workdir, ImageError, "no shim found")


def test_missing_grub_efi_binary(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(tmp_path, esp={"/EFI/BOOT/BOOTX64.EFI": pe_stub()})
    build_fails(raw, workdir, ImageError, r"no grub EFI binary \(grubx64.efi\)")


def test_uki_only_image(tmp_path: Path, workdir: Path) -> None:
    """systemd-boot + a Unified Kernel Image, no grub: say so, not just 'grub missing'."""
    esp: dict[str, str | bytes] = {
        "/EFI/BOOT/BOOTX64.EFI": pe_stub(),  # systemd-boot as the removable-media loader
        "/EFI/systemd/systemd-bootx64.efi": pe_stub(),
        "/EFI/Linux/crafted-6.1.0.efi": pe_stub(),
        "/loader/loader.conf": "timeout 3\n",
    }
    raw = live_image(tmp_path, esp=esp, remove=["/boot/grub2/grub.cfg"])
    error = build_fails(raw, workdir, ImageError, r"Unified Kernel Image")
    assert "EFI/Linux/crafted-6.1.0.efi" in str(error)


def test_bootstrap_without_dracut(tmp_path: Path, workdir: Path) -> None:
    raw = live_image(
        tmp_path,
        remove=["/usr/lib/dracut/modules.d/90dmsquash-live/module-setup.sh",
                "/usr/lib/dracut/modules.d/90livenet/module-setup.sh"],
    )  # fmt: skip
    error = build_fails(raw, workdir, ImageError, "dracut is not installed", bootstrap=True)
    assert error.hint is not None and "full-os" in error.hint


# -- broken hosts ------------------------------------------------------------------------------------
@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory an unprivileged user can read and write (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="liveos-broken-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path)


def cli(*args: str | Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, "python3", "-m", "liveos", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
        check=False,
    )


def test_not_running_as_root(shared_dir: Path, tmp_path: Path) -> None:
    """The process runs with the effective uid of ``nobody`` (the kernel then refuses mounts too)."""
    image = Path(shutil.copy(live_image(tmp_path), shared_dir / "disk.raw"))
    image.chmod(0o644)
    work = shared_dir / "work"
    work.mkdir()
    work.chmod(0o777)
    before = sha256(image)
    nobody = pwd.getpwnam("nobody")
    os.setegid(nobody.pw_gid)
    os.seteuid(nobody.pw_uid)
    try:
        with pytest.raises(HostError, match="needs root") as exc, LiveOS.open(image, workdir=work):
            pass
    finally:
        os.seteuid(0)
        os.setegid(0)
    assert type(exc.value) is HostError
    assert exc.value.hint == "run liveos as root (sudo)"
    assert leftovers(image, work, shared_dir / "live.iso") == []
    assert sha256(image) == before


@pytest.mark.parametrize(
    ("tool", "package", "fmt"),
    [
        ("qemu-img", "qemu-utils", "qcow2"),
        ("mdir", "mtools", "raw"),
        ("mksquashfs", "squashfs-tools", "raw"),
    ],
)
def test_missing_host_tool(tmp_path: Path, workdir: Path, tool: str, package: str, fmt: str) -> None:
    """The tool is hidden in a private mount namespace (a non-executable file bound over it)."""
    raw = live_image(tmp_path)
    image = raw if fmt == "raw" else convert(raw, fmt)
    binary = shutil.which(tool)
    assert binary is not None
    out = tmp_path / "live.iso"
    hide = f'mount --bind /dev/null {Path(binary).resolve()} && exec "$@"'
    unshare = ("unshare", "--mount", "--propagation", "private", "sh", "-c", hide, "sh")
    proc = cli("iso", image, "-o", out, "--workdir", workdir, prefix=unshare)
    assert proc.returncode == 3, proc.stderr  # MissingToolError is a HostError
    assert f"required tool '{tool}' was not found" in proc.stderr, proc.stderr
    assert f"fix: apt-get install {package}" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert leftovers(image, workdir, out) == []
    assert issubclass(MissingToolError, HostError)


def test_unsupported_container_format(tmp_path: Path, workdir: Path) -> None:
    vdi = tmp_path / "disk.vdi"
    sh("qemu-img", "convert", "-f", "raw", "-O", "vdi", live_image(tmp_path), vdi)
    build_fails(vdi, workdir, ImageError, "'vdi' image; supported are")


def test_esp_only_disk(tmp_path: Path, workdir: Path) -> None:
    esp = write_tree(tmp_path / "esp", {"/EFI/BOOT/BOOTX64.EFI": pe_stub(), "/fstab": FSTAB})
    disk = make_disk(tmp_path / "esp.raw", [PartSpec(32, "vfat", esp, esp=True)])
    build_fails(disk.path, workdir, ImageError, "no ext2/3/4, xfs or btrfs partition")
