"""The erofs root image: mkfs.erofs with the media's exclusions, its magic, and which dracut mounts it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from liveos.erofs import dracut_boots_erofs, exclude_regex, is_erofs, make_erofs
from liveos.errors import UsageError
from liveos.image.base import SourceImage
from liveos.image.formats import DiskFormat
from liveos.iso.output import plan_iso
from liveos.layout import ROOT_IMAGE_EXCLUDED
from liveos.plan import StepKind
from liveos.rootfs import RootFs
from liveos.settings import LiveSettings, Preset, RootFsFormat
from tests.liveimagekit import build_tree, esp_files, root_files

needs_erofs_utils = pytest.mark.skipif(
    shutil.which("mkfs.erofs") is None or shutil.which("fsck.erofs") is None,
    reason="erofs-utils is not installed (tools/setup-host.sh installs it)",
)


@pytest.mark.parametrize(
    ("pattern", "excluded", "kept"),
    [
        ("boot/*", ["boot/vmlinuz", "boot/grub"], ["boot", "xboot/a", "boot/grub/grub.cfg"]),
        ("etc/fstab", ["etc/fstab"], ["etc/fstab2", "xetc/fstab", "etc/fstab/x", "etcXfstab"]),
        ("var/tmp/*", ["var/tmp/y"], ["var/tmp", "var/tmpy", "var/tmp/y/z"]),
        ("boot/vmlinuz-6.1[*]", ["boot/vmlinuz-6.1*"], ["boot/vmlinuz-6.1x", "boot/vmlinuz-6x1*"]),
        ("boot/a.b?c", ["boot/a.bxc"], ["boot/aXbxc", "boot/a.b/c"]),
        ("boot/[!x]y", ["boot/ay"], ["boot/xy"]),
        ("boot/(x)+{y}|z^$", ["boot/(x)+{y}|z^$"], ["boot/xx{y}", "z"]),
    ],
)
def test_exclude_regex_matches_like_mksquashfs_wildcards(
    pattern: str, excluded: list[str], kept: list[str]
) -> None:
    """``*`` and ``?`` stop at ``/`` (an excluded directory's contents go with it, mkfs.erofs does
    not descend), the rest is literal; the ERE subset used reads the same in Python's re."""
    regex = re.compile(exclude_regex(pattern))
    assert [p for p in excluded if not regex.search(p)] == []
    assert [p for p in kept if regex.search(p)] == []
    assert [exclude_regex(p) for p in ROOT_IMAGE_EXCLUDED][:2] == ["^boot/[^/]*$", "^tmp/[^/]*$"]


def test_is_erofs_reads_the_superblock_magic() -> None:
    header = bytearray(4096)
    assert not is_erofs(bytes(header))
    header[1024:1028] = (0xE0F5E1E2).to_bytes(4, "little")
    assert is_erofs(bytes(header))
    assert not is_erofs(bytes(header[:1026]))
    assert not is_erofs(b"hsqs" + bytes(4092))


@needs_erofs_utils
def test_make_erofs_leaves_out_the_excluded_contents_but_keeps_their_directories(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    for rel, text in {
        "etc/fstab": "UUID=x / ext4 defaults 0 1\n",
        "etc/hostname": "live\n",
        "boot/vmlinuz-6.1": "kernel",
        "boot/grub/grub.cfg": "menuentry",
        "usr/bin/tool": "#!/bin/sh\n" * 1000,
        "tmp/scratch": "x",
    }.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "proc").mkdir()
    image = make_erofs(tree, tmp_path / "rootfs.img", preset=Preset.FAST)
    assert is_erofs(image.read_bytes()[:4096])
    out = tmp_path / "out"
    subprocess.run(
        ["fsck.erofs", f"--extract={out}", "--no-preserve", str(image)], check=True, capture_output=True
    )
    found = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert found == ["boot", "etc", "etc/hostname", "proc", "tmp", "usr", "usr/bin", "usr/bin/tool"]
    assert (out / "usr/bin/tool").read_text() == "#!/bin/sh\n" * 1000


def test_dracut_059_does_not_mount_erofs_and_dracut_ng_does(tmp_path: Path) -> None:
    """Decided from dmsquash-live-root.sh: 059 mounts ``-t squashfs``, dracut-ng names erofs."""
    script = tmp_path / "usr/lib/dracut/modules.d/90dmsquash-live/dmsquash-live-root.sh"
    script.parent.mkdir(parents=True)
    rootfs = RootFs(tmp_path)
    assert not dracut_boots_erofs(rootfs)  # no script at all
    script.write_text('load_fstype squashfs\nmount -n -t squashfs -o ro "$SQUASHED_LOOPDEV" /run/x\n')
    assert not dracut_boots_erofs(rootfs)
    script.write_text("case $fstype in\n    squashfs | erofs) SQUASHED=$livedev ;;\nesac\n")
    assert dracut_boots_erofs(rootfs)


@pytest.fixture
def crafted(tmp_path: Path) -> SourceImage:
    """The crafted OS tree of tests/liveimagekit.py, opened without mounts (planning only)."""
    files = {**root_files(), **{f"/boot/efi{k}": v for k, v in esp_files().items()}}
    root = build_tree(tmp_path / "root", files)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"a disk image")
    return SourceImage(path=disk, format=DiskFormat.RAW, root=root, scratch=tmp_path)


def test_plan_builds_the_erofs_only_where_the_image_dracut_mounts_it(crafted: SourceImage) -> None:
    settings = LiveSettings(label="PLANNED", rootfs_format=RootFsFormat.EROFS)
    with pytest.raises(UsageError, match=r"dracut \(unknown version\) cannot boot an erofs root image"):
        plan_iso(crafted, settings, "PLANNED")
    script = crafted.rootfs.path("/usr/lib/dracut/modules.d/90dmsquash-live/dmsquash-live-root.sh")
    script.write_text("case $fstype in squashfs | erofs) SQUASHED=$livedev ;; esac\n")
    plan = plan_iso(crafted, settings, "PLANNED")
    step = plan.step("rootfs.img")
    assert (step.kind, step.detail) == (StepKind.EROFS, "mkfs.erofs, preset fast")
    assert plan.file("/liveos/rootfs.img").source == "rootfs.img"
    with pytest.raises(UsageError, match="bootstrap-mode setting"):
        plan_iso(crafted, settings.replace(mode="full-os"), "PLANNED")
    squashfs = plan_iso(crafted, settings.replace(rootfs_format="squashfs"), "PLANNED")
    assert squashfs.step("rootfs.img").kind is StepKind.SQUASHFS
