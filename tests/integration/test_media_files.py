"""The caller's files and kdump's boot files on real media built from a crafted disk image.

Each build runs the whole pipeline on tests/liveimagekit.py's image in seconds (real mounts, the
image's tiny dracut, mksquashfs, the CPIO writer, pycdlib); no boot: what the media hold is read
back with liveos's own readers, ``tarfile`` and ``unsquashfs``.
"""

from __future__ import annotations

import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.cpio import iter_entries
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from liveos.mediafiles import MediaFile
from liveos.state import MediaState
from tests.liveimagekit import KVER, leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]
KDUMP_INITRD = f"/boot/initramfs-{KVER}kdump.img"
#: The crafted image's dracut knows a network module (bootstrap PXE needs one).
NETWORK = {"/usr/lib/dracut/modules.d/35network-legacy/module-setup.sh": "", "/usr/sbin/dhclient": ""}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return live_image(tmp_path_factory.mktemp("crafted"), root={**NETWORK, KDUMP_INITRD: b"KDUMP-INITRD\n"})


@pytest.fixture
def live(image: Path, tmp_path: Path) -> Iterator[LiveOS]:
    work = tmp_path / "work"
    work.mkdir()
    with LiveOS.open(image, workdir=work) as opened:
        yield opened.with_label("FILES").with_cache(False)
    assert leftovers(image, work) == []


@pytest.fixture
def files(tmp_path: Path) -> tuple[MediaFile, ...]:
    script = tmp_path / "run.sh"
    script.write_bytes(b"#!/bin/sh\necho hi\n")
    script.chmod(0o600)  # the media get the mode asked for, not the source's
    return (
        MediaFile("/cidata/user-data", content=b"#cloud-config\n"),
        MediaFile("/tools/run.sh", source=script, mode=0o755),
        MediaFile("/boot/notes.txt", content=b"notes\n", mode=0o600),
    )


EXPECTED = {
    "/cidata/user-data": (b"#cloud-config\n", 0o644),
    "/tools/run.sh": (b"#!/bin/sh\necho hi\n", 0o755),
    "/boot/notes.txt": (b"notes\n", 0o600),
}


def iso_user_files(iso: Path) -> dict[str, tuple[bytes, int]]:
    with IsoReader(iso) as reader:
        return {
            p: (reader.read_bytes(p), stat.S_IMODE(reader.entry(p).mode))
            for p in EXPECTED
            if reader.exists(p)
        }


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_iso_holds_the_files_with_their_modes(
    live: LiveOS, files: tuple[MediaFile, ...], tmp_path: Path, mode: str
) -> None:
    result = live.with_mode(mode).with_files(*files).write_iso(tmp_path / "live.iso")
    assert iso_user_files(result.output) == EXPECTED
    with IsoReader(result.output) as reader:
        state = MediaState.parse(reader.read_bytes("/liveos/state.json"))
    assert {f.path: f.mode for f in state.media_files} == {p: m for p, (_, m) in EXPECTED.items()}


def test_pxe_folder_and_archive_hold_the_files_with_their_modes(
    live: LiveOS, files: tuple[MediaFile, ...], tmp_path: Path
) -> None:
    media = live.full_os().with_files(*files)
    folder = media.write_pxe(tmp_path / "tftp").output
    found = {
        p: ((folder / p[1:]).read_bytes(), stat.S_IMODE((folder / p[1:]).stat().st_mode)) for p in EXPECTED
    }
    assert found == EXPECTED
    assert stat.S_IMODE((folder / "boot/grub2/grub.cfg").stat().st_mode) == 0o644  # boot files as before
    archive = media.write_pxe(tmp_path / "pxe.tar.gz").output
    with tarfile.open(archive) as tar:
        members = {"/" + m.name: m for m in tar.getmembers()}
        in_tar = {p: (tar.extractfile(members[p]).read(), members[p].mode) for p in EXPECTED}  # type: ignore[union-attr]
    assert in_tar == EXPECTED


def test_bootstrap_pxe_puts_them_in_the_bundle_and_its_iso(
    live: LiveOS, files: tuple[MediaFile, ...], tmp_path: Path
) -> None:
    folder = (
        live.bootstrap().with_files(*files).write_pxe(tmp_path / "tftp", base_url="http://10.0.2.2/").output
    )
    assert (folder / "tools/run.sh").read_bytes() == EXPECTED["/tools/run.sh"][0]
    assert iso_user_files(folder / "live.iso") == EXPECTED


def test_a_rebuild_from_the_iso_carries_them_over_once(
    live: LiveOS, files: tuple[MediaFile, ...], tmp_path: Path
) -> None:
    first = live.full_os().with_files(*files).write_iso(tmp_path / "first.iso").output
    work = tmp_path / "work2"
    work.mkdir()
    with LiveOS.open(first, workdir=work) as reopened:
        again = reopened.with_cache(False)
        plan = again.plan()
        assert sorted(str(f.path) for f in plan.files if f.origin.value == "user") == sorted(EXPECTED)
        second = again.build(plan, tmp_path / "second.iso").output
        assert iso_user_files(second) == EXPECTED
        replaced = again.with_files(MediaFile("/tools/run.sh", content=b"new\n")).write_iso(
            tmp_path / "third.iso"
        )
    assert iso_user_files(replaced.output) == {**EXPECTED, "/tools/run.sh": (b"new\n", 0o644)}
    assert leftovers(first, work) == []


def squashfs_paths(iso: Path, tmp_path: Path) -> set[str]:
    with IsoReader(iso) as reader:
        reader.extract("/liveos/rootfs.img", tmp_path / "rootfs.img")
    out = subprocess.run(
        ["unsquashfs", "-lc", "-d", "", str(tmp_path / "rootfs.img")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.strip() for line in out.splitlines() if line.startswith("/")}


def cpio_paths(iso: Path, tmp_path: Path) -> set[str]:
    with IsoReader(iso) as reader:
        reader.extract("/boot/initrd.img", tmp_path / "initrd.img")
    return {"/" + m.name.lstrip("./") for m in iter_entries(tmp_path / "initrd.img")}


@pytest.mark.parametrize("policy", ["none", "keep"])
@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_kdump_boot_files_in_the_live_root(live: LiveOS, tmp_path: Path, mode: str, policy: str) -> None:
    media = live.with_mode(mode).with_kdump_boot_files(policy)
    plan = media.plan()
    result = media.build(plan, tmp_path / "live.iso")
    paths = (squashfs_paths if mode == "bootstrap" else cpio_paths)(result.output, tmp_path)
    boot = {p for p in paths if p.startswith("/boot/")}
    assert "/usr/share/marker" in paths and "/etc/fstab" not in paths
    if policy == "keep":
        assert boot == {KDUMP_INITRD, f"/boot/vmlinuz-{KVER}"}
        assert not any("kdump" in w for w in plan.warnings)
    else:
        assert boot == set()
        assert any(KDUMP_INITRD in w for w in plan.warnings)
    with IsoReader(result.output) as reader:
        assert not reader.exists(KDUMP_INITRD)  # never a boot file of the media
