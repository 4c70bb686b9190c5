"""The caller's files on the media, kdump's boot files and several kernels -- at plan level.

Plans are made from the crafted OS tree of tests/liveimagekit.py in a plain directory (no mounts,
no processes); the builds that must hold what these plans say are in
tests/integration/test_media_files.py and tests/integration/test_kernels.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.image.base import SourceImage
from liveos.image.formats import DiskFormat
from liveos.iso.output import plan_iso
from liveos.layout import FULL_OS_EXCLUDED, ROOT_IMAGE_EXCLUDED, is_excluded
from liveos.live import LiveOS
from liveos.media.kdump import find_kdump_files, root_excludes
from liveos.mediafiles import MediaFile
from liveos.plan import Origin, StepKind
from liveos.pxe.output import plan_pxe
from liveos.settings import InitramfsMode, KdumpBootFiles, LiveSettings
from liveos.state import MediaState, StateFile
from tests.liveimagekit import KVER, build_tree, esp_files, root_files

BOOTSTRAP = LiveSettings(label="PLANNED")
FULL_OS = LiveSettings(label="PLANNED", mode=InitramfsMode.FULL_OS)
NETWORK = {"/usr/lib/dracut/modules.d/35network-legacy/module-setup.sh": "", "/usr/sbin/dhclient": ""}
KDUMP_INITRD = f"/boot/initramfs-{KVER}kdump.img"


def tree_image(tmp_path: Path, extra: dict[str, str | bytes] | None = None) -> SourceImage:
    files = {**root_files(), **{f"/boot/efi{k}": v for k, v in esp_files().items()}, **NETWORK}
    root = build_tree(tmp_path / "root", {**files, **(extra or {})})
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"a disk image")
    return SourceImage(path=disk, format=DiskFormat.RAW, root=root, scratch=tmp_path)


# ------------------------------------------------------------------------------ MediaFile values


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("", "non-empty"),
        ("seed/user-data", "not absolute"),
        ("/a/../b", "escapes the media root"),
        ("/..", "escapes the media root"),
        ("//a", "not normalised"),
        ("/a/", "not normalised"),
        ("/a/./b", "not normalised"),
        ("/", "media root"),
        ("/a\nb", "control character"),
        ("/EFI/BOOT/bootx64.efi", "is in /efi"),
        ("/efi/boot/grub.cfg", "is in /efi"),
        ("/boot/grub2/custom.cfg", "is in /boot/grub2"),
        ("/boot/grub/x86_64-efi/normal.mod", "is in /boot/grub"),
        ("/boot/grub2", "is in /boot/grub2"),
        ("/boot/loader/entries/x.conf", "is in /boot/loader"),
        ("/liveos/rootfs.img", "is in /liveos"),
        ("/LiveOS/other", "is in /liveos"),
        ("/updates/etc/passwd", "is in /updates"),
        ("/.disk/info", "is in /.disk"),
        (f"/boot/vmlinuz-{KVER}", "named like a kernel or initrd"),
        ("/boot/initrd.img", "named like a kernel or initrd"),
        ("/boot/efiboot.img", "named like a kernel or initrd"),
    ],
)
def test_bad_destinations_are_refused_when_set(destination: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        MediaFile(destination, content=b"x")
    if destination:
        assert repr(destination)[1:-1] in caught.value.message or destination in caught.value.message


def test_media_file_values() -> None:
    with pytest.raises(UsageError, match="not both"):
        MediaFile("/a", source=Path("/etc/hostname"), content=b"x")
    with pytest.raises(UsageError, match="neither"):
        MediaFile("/a")
    with pytest.raises(UsageError, match="not a mode"):
        MediaFile("/a", content=b"x", mode=0o10000)
    with pytest.raises(UsageError, match="not a mode"):
        MediaFile("/a", content=b"x", mode=True)
    relative = MediaFile("/a", source=Path("rel/file"))
    assert relative.source == Path.cwd() / "rel/file" and relative.file_mode == 0o644
    assert MediaFile("/boot/notes.txt", content=b"x").path == PurePosixPath("/boot/notes.txt")
    assert MediaFile.parse("/src/a:/dst/a") == MediaFile("/dst/a", source=Path("/src/a"))
    assert MediaFile.parse("/src/a:/dst/a:755") == MediaFile("/dst/a", source=Path("/src/a"), mode=0o755)
    assert MediaFile.parse("/x:y/a:/dst/a:0600").source == Path("/x:y/a")
    for bad in ("/src", ":/dst", "/src:", "/src:/dst:"):
        with pytest.raises(UsageError, match="SRC:DEST"):
            MediaFile.parse(bad)


def test_with_files_adds_and_refuses_a_destination_twice() -> None:
    live = LiveOS(None)  # type: ignore[arg-type]  # settings only
    one = live.with_files(MediaFile("/a", content=b"1"))
    two = one.with_files(MediaFile("/b", content=b"2"), MediaFile("/c", content=b"3"))
    assert [f.destination for f in two.settings.media_files] == ["/a", "/b", "/c"]
    assert one.settings.media_files == (MediaFile("/a", content=b"1"),)
    with pytest.raises(UsageError, match="given twice"):
        two.with_files(MediaFile("/A", content=b"x"))


# ------------------------------------------------------------------------------ in plans


def user_files(files: tuple[object, ...]) -> dict[str, tuple[str, int]]:
    return {str(f.path): (f.source, f.mode) for f in files if f.origin is Origin.USER}  # type: ignore[attr-defined]


def test_iso_and_pxe_plans_hold_the_files_with_their_modes(tmp_path: Path) -> None:
    image = tree_image(tmp_path)
    script = tmp_path / "run.sh"
    script.write_text("#!/bin/sh\n")
    files = (
        MediaFile("/cidata/user-data", content=b"#cloud-config\n"),
        MediaFile("/tools/run.sh", source=script, mode=0o755),
    )
    settings = BOOTSTRAP.replace(media_files=files)
    expected = {"/cidata/user-data": ("content", 0o644), "/tools/run.sh": (str(script), 0o755)}
    iso = plan_iso(image, settings, "PLANNED")
    assert user_files(iso.files) == expected
    assert (
        iso.file("/cidata/user-data").data == b"#cloud-config\n" and iso.file("/tools/run.sh").host == script
    )
    full = plan_pxe(image, FULL_OS.replace(media_files=files), "PLANNED")
    assert user_files(full.files) == expected
    boot = plan_pxe(image, settings, "PLANNED", base_url="http://10.0.0.1/")
    assert user_files(boot.files) == expected and boot.iso is not None
    assert user_files(boot.iso.files) == expected  # the live system sees them in /run/initramfs/live
    listing = iso.describe()
    assert "/tools/run.sh" in listing and "user:" in listing
    assert json.loads(json.dumps(iso.to_dict()))["settings"]["media_files"][1]["mode"] == "0755"
    state = MediaState.parse(iso.file("/liveos/state.json").data or b"")
    assert state.media_files == (
        StateFile("/cidata/user-data", 0o644, 14),
        StateFile("/tools/run.sh", 0o755, 10),
    )


def test_plans_refuse_files_over_or_around_their_own(tmp_path: Path) -> None:
    image = tree_image(tmp_path)

    def plan(output: str, *files: MediaFile) -> object:
        settings = FULL_OS.replace(media_files=files)
        return plan_iso(image, settings, "L") if output == "iso" else plan_pxe(image, settings, "L")

    plan("iso", MediaFile("/grub.cfg", content=b"x"))  # only a PXE bundle has a redirector there
    with pytest.raises(UsageError, match=r"/grub.cfg would replace /grub.cfg: already a boot file"):
        plan("pxe", MediaFile("/grub.cfg", content=b"x"))
    with pytest.raises(UsageError, match=r"would replace /bootx64\.efi"):
        plan("pxe", MediaFile("/BOOTX64.EFI", content=b"x"))
    with pytest.raises(UsageError, match=r"/boot is a directory of the media \(it holds"):
        plan("iso", MediaFile("/boot", content=b"x"))
    with pytest.raises(UsageError, match=r"inside the file /grubx64.efi"):
        plan("pxe", MediaFile("/grubx64.efi/x", content=b"x"))
    with pytest.raises(UsageError, match="does not exist"):
        plan("iso", MediaFile("/a", source=tmp_path / "missing"))
    with pytest.raises(UsageError, match="not a regular file"):
        plan("iso", MediaFile("/a", source=tmp_path))
    with pytest.raises(UsageError, match="already a boot file"):  # the PXE bundle's ISO
        plan_pxe(image, BOOTSTRAP.replace(media_files=(MediaFile("/live.iso", content=b"x"),)), "L",
                 file_url="http://h/live.iso")  # fmt: skip


def test_extra_files_are_shorthand_for_with_files(tmp_path: Path) -> None:
    image = tree_image(tmp_path)
    note = tmp_path / "note"
    note.write_text("n")
    live = LiveOS(image).with_label("L").full_os().with_cache(False)
    short = live.plan("pxe", extra_files={"notes.txt": b"mine", "/n": note})
    long = live.with_files(MediaFile("/n", source=note), MediaFile("/notes.txt", content=b"mine")).plan(
        "pxe"
    )
    assert short.files == long.files and short.settings == long.settings
    iso = live.plan("iso", extra_files={"notes.txt": b"mine"})
    assert iso.file("/notes.txt").origin is Origin.USER


# ------------------------------------------------------------------------------ kdump


def test_kdump_files_are_found_on_both_layouts(tmp_path: Path) -> None:
    image = tree_image(tmp_path, {KDUMP_INITRD: b"kdump", "/var/lib/kdump/initrd.img-9.9": b"k"})
    pairs = find_kdump_files(image.rootfs)
    assert [(k.version, str(k.initrd), k.kernel) for k in pairs] == [
        (KVER, KDUMP_INITRD, PurePosixPath(f"/boot/vmlinuz-{KVER}")),
        ("9.9", "/var/lib/kdump/initrd.img-9.9", None),
    ]


def test_kdump_none_leaves_them_out_and_says_so(tmp_path: Path) -> None:
    image = tree_image(tmp_path, {KDUMP_INITRD: b"kdump"})
    for settings in (BOOTSTRAP, FULL_OS):
        plan = plan_iso(image, settings, "L")
        (warning,) = [w for w in plan.warnings if "kdump" in w]
        assert KDUMP_INITRD in warning and f"/boot/vmlinuz-{KVER}" in warning and "keep" in warning
        assert KDUMP_INITRD not in {str(f.path) for f in plan.files}
        assert KDUMP_INITRD in plan.describe()
    assert root_excludes(image.rootfs, KdumpBootFiles.NONE, ROOT_IMAGE_EXCLUDED) == ROOT_IMAGE_EXCLUDED


def test_kdump_keep_keeps_exactly_the_pair_in_the_live_root(tmp_path: Path) -> None:
    image = tree_image(tmp_path, {KDUMP_INITRD: b"kdump", "/boot/weird[1]*name": b"x"})
    for base in (ROOT_IMAGE_EXCLUDED, FULL_OS_EXCLUDED):
        excludes = root_excludes(image.rootfs, KdumpBootFiles.KEEP, base)
        assert "boot/*" not in excludes and "etc/fstab" in excludes
        kept = {p for p in image.rootfs.iterdir("/boot") if not is_excluded(p, excludes)}
        assert kept == {PurePosixPath(KDUMP_INITRD), PurePosixPath(f"/boot/vmlinuz-{KVER}")}
        assert is_excluded(PurePosixPath("/boot/grub2/grub.cfg"), excludes)
        assert not is_excluded(PurePosixPath("/usr/share/marker"), excludes)
    for settings, kind in ((BOOTSTRAP, StepKind.SQUASHFS), (FULL_OS, StepKind.CPIO)):
        plan = plan_iso(image, settings.replace(kdump_boot_files="keep"), "L")
        assert not [w for w in plan.warnings if "kdump" in w]
        (step,) = [s for s in plan.steps if s.kind is kind]
        assert f"keeps /boot/vmlinuz-{KVER}, {KDUMP_INITRD} for kdump" in step.detail
    bare = tree_image(tmp_path / "bare")
    plan = plan_iso(bare, BOOTSTRAP.replace(kdump_boot_files="keep"), "L")
    assert any("no kdump initrd" in w for w in plan.warnings)


def test_kdump_keep_on_debian_keeps_the_kernel_of_kdump_tools(tmp_path: Path) -> None:
    image = tree_image(
        tmp_path,
        {f"/var/lib/kdump/initrd.img-{KVER}": b"k", "/var/lib/kdump/vmlinuz": f"->/boot/vmlinuz-{KVER}"},
    )
    assert any(f"/boot/vmlinuz-{KVER}" in w for w in plan_iso(image, FULL_OS, "L").warnings)
    excludes = root_excludes(image.rootfs, KdumpBootFiles.KEEP, FULL_OS_EXCLUDED)
    assert {p.name for p in image.rootfs.iterdir("/boot") if not is_excluded(p, excludes)} == {
        f"vmlinuz-{KVER}"
    }


# ------------------------------------------------------------------------------ several kernels

KVER2 = "6.9.0-second"
TWO_KERNELS_CFG = (
    "search --no-floppy --fs-uuid --set=root 1234\n"
    f"menuentry 'first' {{\n\tlinux /boot/vmlinuz-{KVER} root=UUID=1234 ro\n"
    f"\tinitrd /boot/initramfs-{KVER}.img\n}}\n"
    f"menuentry 'second' {{\n\tlinux /boot/vmlinuz-{KVER2} root=UUID=1234 ro\n"
    f"\tinitrd /boot/initrd.img-{KVER2}\n}}\n"
)
SECOND: dict[str, str | bytes] = {
    f"/boot/vmlinuz-{KVER2}": b"SECOND-KERNEL\n",
    f"/boot/initrd.img-{KVER2}": b"second initrd\n",
    f"/lib/modules/{KVER2}/modules.dep": "",
}


def bls_entry(version: str, initrd: str) -> str:
    return (
        f"title Crafted {version}\nversion {version}\nlinux /boot/vmlinuz-{version}\n"
        f"initrd {initrd}\noptions root=UUID=1234 ro\n"
    )


@pytest.mark.parametrize("layout", ["inline", "bls"])
def test_two_kernels_give_an_entry_and_an_initrd_each(tmp_path: Path, layout: str) -> None:
    extra: dict[str, str | bytes] = {**SECOND, "/boot/grub2/grub.cfg": TWO_KERNELS_CFG}
    if layout == "bls":
        extra["/boot/grub2/grub.cfg"] = "search --no-floppy --fs-uuid --set=root 1234\nblscfg\n"
        extra[f"/boot/loader/entries/a-{KVER}.conf"] = bls_entry(KVER, f"/boot/initramfs-{KVER}.img")
        extra[f"/boot/loader/entries/a-{KVER2}.conf"] = bls_entry(KVER2, f"/boot/initrd.img-{KVER2}")
    image = tree_image(tmp_path, extra)
    kernels = {f"/boot/vmlinuz-{KVER}", f"/boot/vmlinuz-{KVER2}"}
    initrds = {f"/boot/initramfs-{KVER}.img": KVER, f"/boot/initrd.img-{KVER2}": KVER2}
    for plan in (plan_iso(image, BOOTSTRAP, "L"), plan_pxe(image, BOOTSTRAP, "L", base_url="http://h/")):
        assert {e.kernel for e in plan.entries} == kernels
        assert {e.initrds for e in plan.entries} == {(p,) for p in initrds}
        dracut = {s.kernel for s in plan.steps if s.kind is StepKind.DRACUT}
        assert dracut == {KVER, KVER2}
        for path, version in initrds.items():
            planned = plan.file(path)
            assert (planned.origin, planned.source) == (Origin.BUILT, f"initrd-{version}")
        assert kernels <= {str(f.path) for f in plan.files if f.origin is Origin.IMAGE}
        for entry in plan.entries:
            assert any(a.startswith("root=live:") for a in entry.cmdline)
    for plan in (plan_iso(image, FULL_OS, "L"), plan_pxe(image, FULL_OS, "L")):
        assert {e.kernel for e in plan.entries} == kernels
        assert {e.initrds for e in plan.entries} == {("/boot/initrd.img",)}
        assert [s.kind for s in plan.steps].count(StepKind.CPIO) == 1
        assert not set(initrds) & {str(f.path) for f in plan.files}
        cfg = GrubConfig.parse((plan.file(plan.grub_cfg).data or b"").decode())
        assert sorted(cfg.kernel_paths()) == sorted(kernels)


def test_an_initrd_of_no_kernel_is_an_image_error(tmp_path: Path) -> None:
    cfg = TWO_KERNELS_CFG.replace(f"initrd /boot/initrd.img-{KVER2}", "initrd /boot/initrd.img-7.7")
    image = tree_image(tmp_path, {**SECOND, "/boot/grub2/grub.cfg": cfg, "/boot/initrd.img-7.7": b"x"})
    with pytest.raises(ImageError, match=r"cannot tell which kernel the initrd /boot/initrd\.img-7\.7"):
        plan_iso(image, BOOTSTRAP, "L")


def test_state_records_media_files_and_refuses_bad_ones() -> None:
    from liveos.state import SourceDigest

    state = MediaState(
        "1", InitramfsMode.FULL_OS, "L", (), (), SourceDigest("a", 1, "0" * 64), 0,
        media_files=(StateFile("/a/b", 0o755, 3),),
    )  # fmt: skip
    assert MediaState.parse(state.render()) == state
    assert "media_files" not in json.loads(dataclasses.replace(state, media_files=()).render())
    for bad, message in [
        ({"path": "a", "mode": 420, "size": 1}, "not a normalised absolute"),
        ({"path": "/a/../b", "mode": 420, "size": 1}, "not a normalised absolute"),
        ({"path": "/a", "mode": 0o20000, "size": 1}, "invalid mode"),
        ({"path": "/a", "mode": 420}, "missing key"),
        ({"path": "/a", "mode": 420, "size": 1, "x": 1}, "unknown key"),
    ]:
        doc = json.loads(state.render())
        doc["media_files"] = [bad]
        with pytest.raises(ImageError, match=message):
            MediaState.parse(json.dumps(doc))
    doc = json.loads(state.render())
    doc["media_files"] *= 2
    with pytest.raises(ImageError, match="listed twice"):
        MediaState.parse(json.dumps(doc))
