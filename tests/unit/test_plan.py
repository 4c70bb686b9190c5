"""Plans without building: every entry's final command line, every file, every step -- as plain,
JSON-serialisable data, made without running any external program.

The image is the crafted OS tree of tests/liveimagekit.py in a plain directory, opened as a
:class:`SourceImage` directly (planning needs no mounts; the real builds that must match their
plans are in tests/integration/test_plan_matches_media.py).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.image.base import SourceImage
from liveos.image.formats import DiskFormat
from liveos.initramfs import Initramfs
from liveos.iso.output import plan_iso
from liveos.live import LiveOS
from liveos.plan import Origin, StepKind
from liveos.pxe.output import plan_pxe
from liveos.settings import Compression, InitramfsMode, LiveSettings, OutputKind, SELinux
from tests.liveimagekit import KVER, build_tree, esp_files, root_files

#: UEFI-only ISOs: the BIOS files and step are in tests/unit/test_biosboot.py
BOOTSTRAP = LiveSettings(label="PLANNED", bios=False)
FULL_OS = LiveSettings(label="PLANNED", mode=InitramfsMode.FULL_OS, bios=False)


def tree_image(tmp_path: Path, extra: dict[str, str | bytes] | None = None) -> SourceImage:
    files = {**root_files(), **{f"/boot/efi{k}": v for k, v in esp_files().items()}, **(extra or {})}
    root = build_tree(tmp_path / "root", files)
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"a disk image")
    return SourceImage(path=disk, format=DiskFormat.RAW, root=root, scratch=tmp_path)


@pytest.fixture
def image(tmp_path: Path) -> SourceImage:
    return tree_image(tmp_path)


@pytest.fixture
def no_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planning must not start any program (no dracut, mksquashfs, compressor, not even blkid)."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"a plan started a process: {args[1] if len(args) > 1 else kwargs}")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


def test_bootstrap_iso_plan(image: SourceImage, no_processes: None) -> None:
    plan = plan_iso(image, BOOTSTRAP.replace(kernel_args=("quiet",)), "PLANNED")
    assert (plan.output, plan.mode, plan.label) == (OutputKind.ISO, InitramfsMode.BOOTSTRAP, "PLANNED")
    (entry,) = plan.entries
    assert entry.title == "crafted image" and entry.kernel == f"/boot/vmlinuz-{KVER}"
    assert entry.initrds == (f"/boot/initramfs-{KVER}.img",)
    assert entry.cmdline[0] == "root=live:CDLABEL=PLANNED" and entry.cmdline[-1] == "quiet"
    assert "rd.live.image" in entry.cmdline and "ro" in entry.cmdline
    assert [(s.kind, s.product) for s in plan.steps] == [
        (StepKind.DRACUT, f"initrd-{KVER}"),
        (StepKind.SQUASHFS, "rootfs.img"),
        (StepKind.EFIBOOT, "efiboot.img"),
        (StepKind.ISO, "iso"),
    ]
    assert plan.step(f"initrd-{KVER}").kernel == KVER
    origins = {str(f.path): (f.origin, f.source) for f in plan.files}
    assert origins == {
        "/liveos/state.json": (Origin.GENERATED, "liveos state"),
        "/boot/grub2/grub.cfg": (Origin.GENERATED, "the image's grub.cfg, edited"),
        f"/boot/vmlinuz-{KVER}": (Origin.IMAGE, f"/boot/vmlinuz-{KVER}"),
        f"/boot/initramfs-{KVER}.img": (Origin.BUILT, f"initrd-{KVER}"),
        "/liveos/rootfs.img": (Origin.BUILT, "rootfs.img"),
        "/EFI/BOOT/bootx64.efi": (Origin.IMAGE, "/boot/efi/EFI/BOOT/BOOTX64.EFI"),
        "/EFI/BOOT/grubx64.efi": (Origin.IMAGE, "/boot/efi/EFI/BOOT/grubx64.efi"),
        "/EFI/BOOT/grub.cfg": (Origin.GENERATED, "grub.cfg redirector"),
        "/boot/grub/grub.cfg": (Origin.GENERATED, "grub.cfg redirector"),
        "/.disk/info": (Origin.GENERATED, "disk info for Debian's grub"),
        "/boot/efiboot.img": (Origin.BUILT, "efiboot.img"),
    }
    main = GrubConfig.parse((plan.file("/boot/grub2/grub.cfg").data or b"").decode())
    assert [line.args.texts() for line in main.kernel_lines()] == [list(entry.cmdline)]
    assert main.known_label() == "PLANNED"
    for planned in plan.files:
        assert planned.size is not None and planned.size >= 0
        assert planned.estimated == (planned.origin is Origin.BUILT and planned.source != "efiboot.img")


def test_full_os_iso_plan(image: SourceImage, no_processes: None) -> None:
    plan = plan_iso(image, FULL_OS.replace(compression="xz", compression_level=2), "PLANNED")
    assert [s.kind for s in plan.steps] == [StepKind.CPIO, StepKind.EFIBOOT, StepKind.ISO]
    assert "xz level 2" in plan.step("initrd.img").detail
    assert plan.file("/boot/initrd.img").origin is Origin.BUILT
    with pytest.raises(KeyError):
        plan.file("/liveos/rootfs.img")
    (entry,) = plan.entries
    assert entry.initrds == ("/boot/initrd.img",)
    assert not any(arg.startswith(("root=", "rd.live")) for arg in entry.cmdline)


def test_pxe_plans(image: SourceImage, no_processes: None, tmp_path: Path) -> None:
    full = plan_pxe(image, FULL_OS, "PLANNED")
    assert full.iso is None and full.bootstrap_url is None
    assert [s.kind for s in full.steps] == [StepKind.CPIO, StepKind.PXE]
    assert {"/bootx64.efi", "/grubx64.efi", "/boot/initrd.img"} <= {str(f.path) for f in full.files}
    with pytest.raises(ImageError, match="no usable network module"):
        plan_pxe(image, BOOTSTRAP, "PLANNED", base_url="http://10.0.0.1/pxe/")
    networked = tree_image(
        tmp_path / "net",
        {"/usr/lib/dracut/modules.d/35network-legacy/module-setup.sh": "", "/usr/sbin/dhclient": ""},
    )
    boot = plan_pxe(networked, BOOTSTRAP, "PLANNED", base_url="http://10.0.0.1/pxe/", iso_name="os.iso")
    assert boot.bootstrap_url == "http://10.0.0.1/pxe/os.iso" and boot.iso is not None
    assert boot.file("/os.iso").origin is Origin.BUILT and boot.file("/os.iso").source == "iso"
    assert [s.product for s in boot.steps] == [f"initrd-{KVER}", "rootfs.img", "efiboot.img", "iso", "pxe"]
    (entry,) = boot.entries
    assert {"root=live:http://10.0.0.1/pxe/os.iso", "ip=dhcp", "rd.neednet=1"} <= set(entry.cmdline)
    (iso_entry,) = boot.iso.entries
    assert "root=live:CDLABEL=PLANNED" in iso_entry.cmdline
    with pytest.raises(KeyError):
        boot.file("/liveos/rootfs.img")  # it is inside the ISO, not in the TFTP tree


def test_plan_is_json_and_stable(
    image: SourceImage, no_processes: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = plan_iso(image, BOOTSTRAP, "PLANNED").to_dict()
    again = plan_iso(image, BOOTSTRAP, "PLANNED").to_dict()
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    decoded = json.loads(json.dumps(first))
    assert decoded["label"] == "PLANNED" and decoded["settings"]["mode"] == "bootstrap"
    assert [f["path"] for f in decoded["files"]] == sorted(
        (f["path"] for f in decoded["files"]), key=lambda p: PurePosixPath(p).parts
    )
    assert str(image.root) not in json.dumps(decoded), "a plan must not leak host paths"


def test_liveos_plan_uses_its_settings(image: SourceImage, no_processes: None) -> None:
    live = LiveOS(image).with_label("VIA_FACADE").with_kernel_args("a=1")
    plan = live.plan()
    assert plan.label == "VIA_FACADE" and plan.settings == live.settings
    assert plan.entries[0].cmdline[-1] == "a=1"
    with pytest.raises(UsageError, match="PXE"):
        live.plan("iso", base_url="http://h/")
    unlabelled = LiveOS(image).plan()
    assert unlabelled.label.startswith("LIVEOS_")
    risky = LiveOS(image).with_kernel_args("rd.shell", "liveimg").plan()
    assert any("root shell" in w for w in risky.warnings)
    assert any("'liveimg' is deprecated; use 'rd.live.image'" in w for w in risky.warnings)


def test_selinux_decisions(tmp_path: Path) -> None:
    image = tree_image(tmp_path, {"/etc/selinux/config": "SELINUX=enforcing\n"})
    kept = plan_iso(image, BOOTSTRAP, "PLANNED")
    assert "selinux=0" not in kept.entries[0].cmdline and not kept.warnings
    full = plan_iso(image, FULL_OS, "PLANNED")
    assert "selinux=0" in full.entries[0].cmdline and "selinux=0" in full.warnings[0]
    off = plan_iso(image, BOOTSTRAP.replace(selinux=SELinux.DISABLE), "PLANNED")
    assert "selinux=0" in off.entries[0].cmdline
    with pytest.raises(UsageError, match="full-os"):
        plan_iso(image, FULL_OS.replace(selinux=SELinux.REQUIRE), "PLANNED")
    plain = tree_image(tmp_path / "plain")
    with pytest.raises(UsageError, match="disabled in the image"):
        plan_iso(plain, BOOTSTRAP.replace(selinux=SELinux.REQUIRE), "PLANNED")


def test_set_root_live_takes_the_label_from_the_config() -> None:
    config = GrubConfig.parse("search --no-floppy --fs-uuid --set=root 1234\nmenuentry x {\n\tlinux /v\n}\n")
    with pytest.raises(UsageError, match="set_search_label"):
        config.set_root_live("/liveos/rootfs.img")
    text = config.set_search_label("MYLIVE").set_root_live("/liveos/rootfs.img").remove_args("x").render()
    assert (
        "linux /v root=live:CDLABEL=MYLIVE rd.live.image rd.live.dir=liveos rd.live.squashimg=rootfs.img"
        in text
    )
    assert GrubConfig.parse("search.fs_label OTHER root\n").known_label() == "OTHER"
    assert GrubConfig.parse("search -l L2 -s\n").known_label() == "L2"


def test_initramfs_is_a_value(tmp_path: Path) -> None:
    tree = build_tree(tmp_path / "tree", {"/usr/lib/systemd/systemd": "#!/bin/sh\n", "/etc/motd": "hi\n"})
    from liveos.rootfs import RootFs

    initrd = Initramfs.full_os(RootFs(tree), tmp_path / "initrd.img", compression=Compression.GZIP, level=1)
    assert initrd.mode is InitramfsMode.FULL_OS and initrd.kernel_version is None
    assert (initrd.compression, initrd.level, initrd.builder) == ("gzip", 1, "liveos cpio")
    assert initrd.size == initrd.path.stat().st_size and initrd.entries is not None and initrd.entries > 3
