"""Images crafted to attack the host: every read and write stays inside the image root.

Each hostile image points symlinks (absolute, ``..``-laden, relative) or grub paths at a *canary*
directory on the host. The image carries its own, harmless files at the same absolute path, so a
confined resolution finds the image's file and the build goes on. The tests prove the host was
untouched three ways: inotify saw no open/read/write of any canary file, the canary bytes are
unchanged, and the ISO holds the image's data and not one byte of the canary secrets. Every
command liveos ran is recorded too: each mount, loop device and chroot must be inside the work dir.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import liveos.run
from liveos.errors import ImageError
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from tests.imagekit import pe_stub
from tests.liveimagekit import (
    FAKE_DRACUT,
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
        """Mounts, loop devices and chroots that are not inside the work dir (or on the input)."""
        bad = []
        inside = str(workdir.resolve()) + "/"
        for argv in self.argvs:
            tool = Path(argv[0]).name
            if tool == "mount":
                target = argv[-1]
                if not target.startswith(inside):
                    bad.append(" ".join(argv))
            elif tool == "losetup" and "--find" in argv:
                if argv[-1] not in (str(image.resolve()),) and not argv[-1].startswith(inside):
                    bad.append(" ".join(argv))
            elif tool == "chroot" and not argv[1].startswith(inside):
                bad.append(" ".join(argv))
        return bad


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Commands:
    """Record the argv of every command liveos runs (they still run, unchanged)."""
    seen = Commands([])

    def recording_run(args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        seen.argvs.append([str(a) for a in args])
        return subprocess.run(args, **kwargs)

    shim = SimpleNamespace(**{k: getattr(subprocess, k) for k in dir(subprocess) if not k.startswith("__")})
    shim.run = recording_run
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


def test_chroot_mount_points_are_symlinks_out_of_the_root(
    host: Host, tmp_path: Path, workdir: Path, commands: Commands
) -> None:
    """Bootstrap mode mounts proc, devtmpfs and tmpfs into the image for dracut: never on the host."""
    canary = host.dir
    check = "[ -e /proc/self/mountinfo ] || { echo 'proc is not where the image says' >&2; exit 1; }\n"
    image = live_image(
        tmp_path,
        root={
            "/proc": f"->{canary}/proc",
            "/run": f"->../../../../../../../../..{canary}/run",
            "/var/tmp": f"->{canary}/vartmp",
            f"{canary}/vartmp/.keep": "",
            "/usr/bin/dracut": FAKE_DRACUT.replace("for a", check + "for a"),
        },
        remove=["/proc", "/run", "/var/tmp"],
    )
    watch = AccessWatch(canary)
    iso = build(image, workdir, tmp_path / "live.iso", bootstrap=True)
    assert_host_untouched(host, watch)
    assert iso_files(iso)[f"/boot/initramfs-{KVER}.img"] == b"initrd built inside the image\n"
    assert_clean(image, workdir, commands)
    chroot_mounts = [argv[-1] for argv in commands.argvs if Path(argv[0]).name == "mount" and "-t" in argv]
    assert any(target.endswith(f"{canary}/proc") for target in chroot_mounts), chroot_mounts


@pytest.mark.parametrize("mountpoint", ["/tmp", "/dev"])
def test_chroot_mount_point_linking_to_the_root_is_refused(
    tmp_path: Path, workdir: Path, commands: Commands, mountpoint: str
) -> None:
    image = live_image(tmp_path, root={mountpoint: "->/"}, remove=[mountpoint])
    out = tmp_path / "live.iso"
    with pytest.raises(ImageError, match="refusing to mount over it"):
        build(image, workdir, out, bootstrap=True)
    assert not out.exists()
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
