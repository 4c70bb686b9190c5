"""Images crafted to attack the host: every read and write stays inside the image root.

Each hostile image points symlinks (absolute, ``..``-laden, relative) or grub paths at a *canary*
directory on the host. The image carries its own, harmless files at the same absolute path, so a
confined resolution finds the image's file and the build goes on. The tests prove the host was
untouched three ways: inotify saw no open/read/write of any canary file, the canary bytes are
unchanged, and the ISO holds the image's data and not one byte of the canary secrets. Every
command liveos ran is recorded too: each mount, loop device and chroot must be inside the work dir.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import liveos.run
from liveos.cpio import read_entries
from liveos.errors import ImageError
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from tests.imagekit import pe_stub
from tests.liveimagekit import (
    FSTAB,
    GRUB,
    GRUB_CFG,
    KERNEL,
    KVER,
    SHIM,
    AccessWatch,
    leftovers,
    live_image,
)

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]

SECRET = b"HOST-SECRET-7f3a"


@dataclass
class Host:
    """The canary tree on the host and what the test expects of it."""

    dir: Path
    before: dict[str, bytes]

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.dir)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(self.dir.rglob("*"))
        }


@pytest.fixture
def host() -> Iterator[Host]:
    """Canary files on the host: each holds the secret, in the shape liveos would parse.

    Not under /tmp: bootstrap mode mounts a tmpfs on the image's /tmp, which would hide the
    image's copy of a /tmp path from dracut (the image would look broken, not hostile).
    """
    top = Path(tempfile.mkdtemp(prefix="liveos-canary-", dir="/var/lib"))
    files = {
        "etc/fstab": SECRET + b" / ext4 defaults 0 1\n",
        "etc/motd": SECRET + b"\n",
        "fstab": SECRET + b" / ext4 defaults 0 1\n",
        "grub.cfg": b"menuentry '" + SECRET + b"' {\n\tlinux /boot/vmlinuz-" + KVER.encode() + b"\n}\n",
        "grub2/grub.cfg": b"menuentry '"
        + SECRET
        + b"' {\n\tlinux /boot/vmlinuz-"
        + KVER.encode()
        + b"\n}\n",
        "grub2/grubenv": SECRET + b"\n",
        "grub2/fonts/unicode.pf2": SECRET + b"\n",
        "vmlinuz": SECRET + b"\n",
        "shim.efi": pe_stub() + SECRET,
        "grub.efi": pe_stub() + SECRET,
    }
    for name, data in files.items():
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(data)
    for name in ("proc", "dev", "run", "vartmp"):
        (top / name).mkdir()
    canary = Host(top, {})
    canary.before = canary.snapshot()
    yield canary
    shutil.rmtree(top)


@dataclass
class Commands:
    """Every external command liveos ran (recorded, then run for real)."""

    argvs: list[list[str]]

    def outside(self, workdir: Path, image: Path) -> list[str]:
        """Mounts and sandbox roots that are not inside the work dir."""
        bad = []
        inside = str(workdir.resolve()) + "/"
        for argv in self.argvs:
            tool = Path(argv[0]).name
            if tool == "mount" and not argv[-1].startswith(inside):
                bad.append(" ".join(argv))
            elif tool == "unshare" and "--bind" in argv:
                root = argv[argv.index("--bind") + 1]
                if not root.startswith(inside):
                    bad.append(" ".join(argv))
        return bad


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Commands:
    """Record the argv of every command liveos runs (they still run, unchanged)."""
    seen = Commands([])

    class RecordingPopen(subprocess.Popen[bytes]):
        def __init__(self, args: Sequence[str], *rest: Any, **kwargs: Any) -> None:
            seen.argvs.append([str(a) for a in args])
            super().__init__(args, *rest, **kwargs)

    shim = SimpleNamespace(**{k: getattr(subprocess, k) for k in dir(subprocess) if not k.startswith("__")})
    shim.Popen = RecordingPopen
    monkeypatch.setattr(liveos.run, "subprocess", shim)
    return seen


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    work = tmp_path / "work"
    work.mkdir()
    yield work


def build(image: Path, workdir: Path, out: Path, *, bootstrap: bool = False) -> Path:
    """A full-os ISO with an uncompressed initrd (so the ISO bytes show every file), or bootstrap."""
    with LiveOS.open(image, workdir=workdir) as live:
        live.rootfs.write_text("/etc/motd", "CUSTOMISED-MOTD\n")
        configured = live.bootstrap() if bootstrap else live.full_os("none")
        return configured.write_iso(out).output


def assert_host_untouched(host: Host, watch: AccessWatch) -> None:
    events = watch.events()
    assert events == [], f"host canary files were accessed: {events}"
    assert host.snapshot() == host.before, "a host canary file changed"


def assert_clean(image: Path, workdir: Path, commands: Commands) -> None:
    assert commands.argvs, "no command was recorded: the recorder is not in place"
    assert commands.outside(workdir, image) == []
    assert leftovers(image, workdir) == []


def iso_files(iso: Path) -> dict[str, bytes]:
    with IsoReader(iso) as reader:
        return {e.path: reader.read_bytes(e.path) for e in reader.walk() if e.kind == "file"}


# -- symlinks out of the root -----------------------------------------------------------------
def test_etc_is_an_absolute_symlink_to_a_host_dir(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    canary = host.dir
    image = live_image(
        tmp_path,
        root={"/etc": f"->{canary}/etc", f"{canary}/etc/fstab": FSTAB, f"{canary}/etc/motd": "IMAGE-MOTD\n"},
        remove=["/etc/fstab", "/etc/os-release", "/etc/motd"],
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso")
    assert_host_untouched(host, watch)
    data = iso.read_bytes()
    assert b"CUSTOMISED-MOTD" in data, "the customisation did not reach the image's /etc"
    assert SECRET not in data
    assert_clean(image, workdir, commands)


@pytest.mark.parametrize(
    "link",
    [
        "/../../..{canary}/fstab",  # absolute, climbing above the root
        "../../../../../../../../../../..{canary}/fstab",  # relative, climbing above the root
    ],
)
def test_fstab_symlink_climbing_out_of_the_root(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands, link: str
) -> None:
    canary = host.dir
    image = live_image(
        tmp_path, root={"/etc/fstab": "->" + link.format(canary=canary), f"{canary}/fstab": FSTAB}
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso")  # removes /etc/fstab: the link, not the host file
    assert_host_untouched(host, watch)
    assert SECRET not in iso.read_bytes()
    assert_clean(image, workdir, commands)


def test_grub_dir_is_a_symlink_to_a_host_dir(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    canary = host.dir
    image = live_image(
        tmp_path,
        root={"/boot/grub2": f"->{canary}/grub2", f"{canary}/grub2/grub.cfg": GRUB_CFG},
        remove=["/boot/grub2/grub.cfg"],
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso")
    assert_host_untouched(host, watch)
    files = iso_files(iso)
    assert b"crafted image" in files["/boot/grub2/grub.cfg"]
    assert "/boot/grub2/grubenv" not in files and "/boot/grub2/fonts/unicode.pf2" not in files
    assert SECRET not in iso.read_bytes()
    assert_clean(image, workdir, commands)


def test_grub_cfg_is_a_symlink_to_a_host_file(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    canary = host.dir
    image = live_image(
        tmp_path, root={"/boot/grub2/grub.cfg": f"->{canary}/grub.cfg", f"{canary}/grub.cfg": GRUB_CFG}
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso")
    assert_host_untouched(host, watch)
    assert b"crafted image" in iso_files(iso)["/boot/grub2/grub.cfg"]
    assert SECRET not in iso.read_bytes()
    assert_clean(image, workdir, commands)


@pytest.mark.parametrize("in_image", [False, True], ids=["absent-in-image", "present-in-image"])
def test_kernel_path_climbing_out_of_the_root(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands, in_image: bool
) -> None:
    canary = host.dir
    grub_cfg = GRUB_CFG.replace(f"/boot/vmlinuz-{KVER}", f"/../../..{canary}/vmlinuz")
    root: dict[str, str | bytes] = {"/boot/grub2/grub.cfg": grub_cfg}
    if in_image:
        root[f"{canary}/vmlinuz"] = KERNEL
    image = live_image(tmp_path, root=root)
    watch = AccessWatch(canary)
    out = tmp_path / "live.iso"
    with pytest.raises(ImageError, match="vmlinuz") as exc:
        build(image, workdir, out)
    assert "escapes the media root" in str(exc.value) or "not a file in the image" in str(exc.value)
    assert_host_untouched(host, watch)
    assert not out.exists()
    assert_clean(image, workdir, commands)


def test_efi_binaries_are_symlinks_to_host_files(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    """No ESP partition: the boot chain comes from /boot/efi of the root fs, links point anywhere."""
    canary = host.dir
    image = live_image(
        tmp_path,
        with_esp=False,
        root={
            "/etc/fstab": FSTAB.splitlines()[0] + "\n",
            "/boot/efi/EFI/BOOT/BOOTX64.EFI": f"->{canary}/shim.efi",
            "/boot/efi/EFI/BOOT/grubx64.efi": f"->../../../../../../../../..{canary}/grub.efi",
            f"{canary}/shim.efi": SHIM,
            f"{canary}/grub.efi": GRUB,
        },
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso")
    assert_host_untouched(host, watch)
    files = iso_files(iso)
    assert files["/EFI/BOOT/bootx64.efi"] == SHIM
    assert files["/EFI/BOOT/grubx64.efi"] == GRUB
    assert SECRET not in iso.read_bytes()
    assert_clean(image, workdir, commands)


@pytest.mark.parametrize("mountpoint", ["/proc", "/run", "/tmp", "/dev"])
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_sandbox_mount_points_that_are_symlinks_out_of_the_root_are_refused(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands, mountpoint: str, relative: bool
) -> None:
    """The sandbox mounts /proc, /dev, /tmp, /run over the image tree: a link there is refused."""
    canary = host.dir
    target = f"../../../../../../../../..{canary}/x" if relative else f"{canary}/x"
    image = live_image(tmp_path, root={mountpoint: f"->{target}"}, remove=[mountpoint])
    watch = AccessWatch(canary)
    out = tmp_path / "live.iso"
    with pytest.raises(ImageError, match=rf"the image's {mountpoint} is a symlink"):
        build(image, workdir, out, bootstrap=True)
    assert_host_untouched(host, watch)
    assert not out.exists()
    assert_clean(image, workdir, commands)


def test_sandbox_mount_point_linking_to_the_root_is_refused(
    tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    image = live_image(tmp_path, root={"/dev": "->/"}, remove=["/dev"])
    with pytest.raises(ImageError, match="the image's /dev is a symlink"):
        build(image, workdir, tmp_path / "live.iso", bootstrap=True)
    assert_clean(image, workdir, commands)


# -- loops and oversized configs -----------------------------------------------------------------
@pytest.mark.parametrize(
    "root",
    [
        {"/etc/fstab": "->/etc/fstab.d/../fstab2", "/etc/fstab2": "->fstab"},
        {"/boot/grub2": "->/boot/grub3", "/boot/grub3": "->../boot/./grub2"},
        {"/boot/grub2/grub.cfg": "->/boot/grub2/grub.cfg"},
    ],
    ids=["fstab", "grub-dir", "grub-cfg-self"],
)
def test_symlink_loops(tmp_path: Path, workdir: Path, commands: Commands, root: dict[str, str]) -> None:
    image = live_image(tmp_path, root=root, remove=["/boot/grub2/grub.cfg"] if "/boot/grub2" in root else [])
    out = tmp_path / "live.iso"
    with pytest.raises(ImageError, match="too many levels of symbolic links") as exc:
        build(image, workdir, out)
    assert exc.value.hint and "symlink loop" in exc.value.hint
    assert not out.exists()
    assert_clean(image, workdir, commands)


@pytest.mark.parametrize(
    ("grub_cfg", "problem"),
    [
        ("# padding\n" * 300_000 + GRUB_CFG, "too large"),
        ("if true; then\n" * 5000 + GRUB_CFG + "fi\n" * 5000, "nested"),
        ("submenu x {\n" * 5000 + GRUB_CFG + "}\n" * 5000, "nested"),
    ],
    ids=["huge", "deep-if", "deep-submenu"],
)
def test_oversized_grub_cfg_is_refused_quickly(
    tmp_path: Path, workdir: Path, grub_cfg: str, problem: str
) -> None:
    image = live_image(tmp_path, root={"/boot/grub2/grub.cfg": grub_cfg})
    out = tmp_path / "live.iso"
    with pytest.raises(ImageError, match=problem) as exc:
        build(image, workdir, out)
    assert "grub.cfg" in str(exc.value) and exc.value.hint
    assert not out.exists()
    assert leftovers(image, workdir, out) == []


# -- device nodes and huge sparse files --------------------------------------------------------
def sparse(path: str, size: int = 10 * 1024**3) -> Callable[[Path], None]:
    def make(tree: Path) -> None:
        target = tree / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as f:
            f.truncate(size)

    return make


@pytest.mark.parametrize("path", ["/etc/fstab", "/etc/selinux/config"])
def test_huge_sparse_config_files_are_refused_quickly(
    tmp_path: Path, workdir: Path, commands: Commands, path: str
) -> None:
    """A 10 GiB (sparse) config file costs a read of 1 MiB, then an ImageError naming it."""
    image = live_image(tmp_path, prepare=sparse(path))
    started = time.monotonic()
    with (
        pytest.raises(ImageError, match=rf"{path} in the image is too large"),
        LiveOS.open(image, workdir=workdir) as live,
    ):
        live.plan()
    assert time.monotonic() - started < 60
    assert_clean(image, workdir, commands)


def host_disk(tmp_path: Path) -> tuple[int, int]:
    device = os.stat(tmp_path).st_dev
    return os.major(device), os.minor(device)


def test_device_nodes_in_the_image_stay_nodes(tmp_path: Path, workdir: Path, commands: Commands) -> None:
    """An image holding a node of the host's disk: archived as a node, never opened; the image's
    own program (its dracut, sandboxed) cannot open it either (image mounts are nodev)."""
    major, minor = host_disk(tmp_path)

    def nodes(tree: Path) -> None:
        os.mknod(tree / "etc" / "hostdisk", 0o600 | stat.S_IFBLK, os.makedev(major, minor))
        os.mknod(tree / "etc" / "hostnull", 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    probe = (
        'for a in "$@"; do out=$a; done\n'
        "if read -r x < /etc/hostdisk 2>/dev/null; then r=OPENED; else r=refused; fi\n"
        'echo $r > "$out"\n'
    )
    image = live_image(tmp_path, root={"/usr/bin/dracut": "#!/bin/sh\n" + probe}, prepare=nodes)
    iso = build(image, workdir, tmp_path / "full.iso")
    with IsoReader(iso) as reader:
        initrd = reader.read_bytes("/boot/initrd.img")
    entries = {e.name: e for e in read_entries(io.BytesIO(initrd))}
    disk = entries["etc/hostdisk"]
    assert stat.S_ISBLK(disk.mode) and (disk.rdevmajor, disk.rdevminor) == (major, minor) and not disk.data
    assert stat.S_ISCHR(entries["etc/hostnull"].mode)
    boot_iso = build(image, workdir, tmp_path / "boot.iso", bootstrap=True)
    assert iso_files(boot_iso)[f"/boot/initramfs-{KVER}.img"].startswith(b"refused\n")
    assert_clean(image, workdir, commands)
