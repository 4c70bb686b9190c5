"""An image with two kernels gives media with one boot entry and one initrd per kernel.

Built from a crafted two-kernel disk image (tests/liveimagekit.py: real mounts, the image's tiny
dracut run once per kernel in its chroot, mksquashfs, the CPIO writer, pycdlib), as an ISO and
as PXE bundles, bootstrap and full-os; read back, not booted (a real two-kernel image is booted
by the fixture tests).
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.grub import GrubConfig
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from liveos.plan import StepKind
from tests.liveimagekit import GRUB_CFG, KERNEL, KVER, leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]
KVER2 = "6.9.0-second"
KERNEL2 = b"SECOND-KERNEL\n"
SECOND_ENTRY = (
    "menuentry 'second kernel' {\n"
    f"\tlinux /boot/vmlinuz-{KVER2} root=UUID=x ro\n"
    f"\tinitrd /boot/initramfs-{KVER2}.img\n"
    "}\n"
)
NETWORK = {"/usr/lib/dracut/modules.d/35network-legacy/module-setup.sh": "", "/usr/sbin/dhclient": ""}
#: A dracut that says which kernel it built for (liveos may append its own CPIO segment).
DRACUT = (
    '#!/bin/sh\nfor a in "$@"; do [ "$prev" = --kver ] && k=$a; prev=$a; out=$a; done\n'
    'echo "initrd for $k" > "$out"\n'
)
KERNELS = {f"/boot/vmlinuz-{KVER}": KERNEL, f"/boot/vmlinuz-{KVER2}": KERNEL2}
INITRDS = {
    f"/boot/vmlinuz-{KVER}": f"/boot/initramfs-{KVER}.img",
    f"/boot/vmlinuz-{KVER2}": f"/boot/initramfs-{KVER2}.img",
}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root: dict[str, str | bytes] = {
        **NETWORK,
        "/usr/bin/dracut": DRACUT,
        "/boot/grub2/grub.cfg": GRUB_CFG + SECOND_ENTRY,
        f"/boot/vmlinuz-{KVER2}": KERNEL2,
        f"/boot/initramfs-{KVER2}.img": b"second original initrd\n",
        f"/lib/modules/{KVER2}/modules.dep": "",
    }
    return live_image(tmp_path_factory.mktemp("two-kernels"), root=root)


@pytest.fixture
def live(image: Path, tmp_path: Path) -> Iterator[LiveOS]:
    work = tmp_path / "work"
    work.mkdir()
    with LiveOS.open(image, workdir=work) as opened:
        yield opened.with_label("TWOKERNELS").with_cache(False)
    assert leftovers(image, work) == []


def check(read: dict[str, bytes], cfg_text: str, mode: str) -> None:
    """Both kernels on the media, each entry booting its own kernel with its own initrd."""
    for path, content in KERNELS.items():
        assert read[path] == content
    lines = {line.kernel: line.initrds for line in GrubConfig.parse(cfg_text).kernel_lines()}
    assert set(lines) == set(KERNELS)
    if mode == "bootstrap":
        assert lines == {k: (i,) for k, i in INITRDS.items()}
        for version in (KVER, KVER2):
            assert read[f"/boot/initramfs-{version}.img"].startswith(f"initrd for {version}\n".encode())
    else:
        assert set(lines.values()) == {("/boot/initrd.img",)}
        assert not set(INITRDS.values()) & set(read)


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_iso_has_an_entry_and_an_initrd_per_kernel(live: LiveOS, tmp_path: Path, mode: str) -> None:
    media = live.with_mode(mode)
    plan = media.plan()
    assert len(plan.entries) == 2
    dracut = [s.kernel or "" for s in plan.steps if s.kind is StepKind.DRACUT]
    assert sorted(dracut) == ([KVER, KVER2] if mode == "bootstrap" else [])
    result = media.build(plan, tmp_path / "live.iso")
    assert result.entries == plan.entries
    with IsoReader(result.output) as reader:
        wanted = [*KERNELS, *INITRDS.values()]
        read = {p: reader.read_bytes(p) for p in wanted if reader.exists(p)}
        check(read, reader.read_bytes("/boot/grub2/grub.cfg").decode(), mode)


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_pxe_has_an_entry_and_an_initrd_per_kernel(live: LiveOS, tmp_path: Path, mode: str) -> None:
    media = live.with_mode(mode)
    url = "http://10.0.2.2/" if mode == "bootstrap" else None
    folder = media.write_pxe(tmp_path / "tftp", base_url=url).output
    read = {"/" + p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    check(read, read["/boot/grub2/grub.cfg"].decode(), mode)
    if mode == "bootstrap":
        for line in GrubConfig.parse(read["/boot/grub2/grub.cfg"].decode()).kernel_lines():
            assert "root=live:http://10.0.2.2/live.iso" in line.args.texts()
    archive = media.write_pxe(tmp_path / "pxe.tar.gz", base_url=url).output
    with tarfile.open(archive) as tar:
        members = {"/" + m.name: m for m in tar.getmembers() if m.isfile()}
        in_tar = {p: tar.extractfile(m).read() for p, m in members.items() if p.startswith("/boot/")}  # type: ignore[union-attr]
    check(in_tar, in_tar["/boot/grub2/grub.cfg"].decode(), mode)
