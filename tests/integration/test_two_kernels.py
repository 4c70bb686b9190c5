"""An image with two kernels: one boot entry and one initrd per kernel on the media, and each
entry boots.

The second kernel is a real one: the newest ``linux-image-<abi>-amd64`` of the fixture's own
repositories (Debian 12 and its security archive, which carries the 6.12 kernels of Debian 13)
with another version than the installed one, installed by :meth:`RootFs.install_packages` --
so the kernel package's maintainer scripts (depmod, the image's dracut hook) run in the sandbox
too. The image's grub.cfg gets the entry its distribution's grub-mkconfig would write (the
fixture's grub.cfg is written by the fixture builder, whose kernel hooks do not edit it).

Booting the second entry: the built ISO is copied and, in the copy only, the media grub.cfg's
``set default=0`` becomes ``set default=1`` -- a byte edit of the file's extent, same length, so
nothing else of the ISO moves. liveos has no setting for the default entry: the media keep the
image's.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, boot
from liveos.grub import GrubConfig
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from liveos.rootfs import RootFs
from liveos.versions import Version
from tests.conftest import FixtureImageFactory
from tests.imagekit import sha256

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and namespaces need root"),
    pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap"),
]
LABEL = "LIVEOS_2KERNELS"
MARKER_SCRIPT = "/usr/local/sbin/liveos-boot-ok"
MEDIA_GRUB_CFG = "/boot/grub2/grub.cfg"
#: a kernel image package of one ABI: linux-image-6.1.0-57-amd64, linux-image-6.12.117+deb12-amd64
KERNEL_PACKAGE = re.compile(r"linux-image-(\d+\.\d+\.\d+(?:-\d+|\+deb\d+)-amd64)")
LIST_KERNELS = """apt-get -qq update >&2
apt-cache pkgnames linux-image-
find /var/lib/apt/lists -maxdepth 1 -type f ! -name lock -delete
"""


@dataclass(frozen=True)
class TwoKernels:
    iso: Path
    versions: tuple[str, str]  #: the image's kernel, then the installed one
    grub_cfg: str  #: the media's


def newest_other_kernel(rootfs: RootFs, installed: str) -> str:
    """The newest kernel (``uname -r``) the image's repositories offer, other than ``installed``."""
    names = rootfs.run_script(content=LIST_KERNELS, network=True).stdout.decode().split()
    versions = {m.group(1) for name in names if (m := KERNEL_PACKAGE.fullmatch(name))} - {installed}
    assert versions, f"no other kernel in the image's repositories: {sorted(names)}"
    return max(versions, key=Version)


def add_menu_entry(rootfs: RootFs, model: str, version: str) -> None:
    """A copy of the entry booting ``model`` for kernel ``version``, after it."""
    path = "/boot/grub2/grub.cfg"
    text = rootfs.read_text(path)
    (entry,) = [e for e in GrubConfig.parse(text).menu_entries if model in text[e.start : e.end]]
    block = text[entry.start : entry.end].replace(model, version)
    block = block.replace("(liveos fixture, azl layout)", f"(second kernel {version})")
    rootfs.write_text(path, text[: entry.end] + "\n" + block + text[entry.end :])


@pytest.fixture(scope="module")
def two_kernels(fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory) -> TwoKernels:
    image = fixture_image("azl", "qcow2")
    before = sha256(image.path)
    out = tmp_path_factory.mktemp("two-kernels")
    with LiveOS.open(image.path, workdir=out) as live:
        rootfs = live.rootfs
        first = image.kernel_version
        second = newest_other_kernel(rootfs, first)
        rootfs.install_packages([f"linux-image-{second}"])
        assert sorted(k.version for k in rootfs.kernels()) == sorted([first, second])
        add_menu_entry(rootfs, first, second)
        script = rootfs.read_text(MARKER_SCRIPT)
        rootfs.write_text(
            MARKER_SCRIPT, script.replace(" uptime=", " kernel=$(uname -r) uptime=", 1), mode=0o755
        )
        result = live.with_label(LABEL).bootstrap().write_iso(out / "two-kernels.iso")
    assert sha256(image.path) == before, "the input image changed"
    with IsoReader(result.output) as iso:
        grub_cfg = iso.read_bytes(MEDIA_GRUB_CFG).decode()
    return TwoKernels(result.output, (first, second), grub_cfg)


def test_one_entry_and_one_initrd_per_kernel(two_kernels: TwoKernels) -> None:
    text = two_kernels.grub_cfg
    config = GrubConfig.parse(text)
    prefix = config.variables().get("bootprefix", "")
    entries = [text[e.start : e.end] for e in config.menu_entries if e.kind == "menuentry"]
    assert len(entries) == 2, text
    with IsoReader(two_kernels.iso) as iso:
        for entry, version in zip(entries, two_kernels.versions, strict=True):
            kernels = re.findall(r"(?m)^\s*linux(?:efi)?\s+(\S+)", entry)
            initrds = re.findall(r"(?m)^\s*initrd(?:efi)?\s+(\S+)", entry)
            assert len(kernels) == 1 and len(initrds) == 1, entry
            for path in (kernels[0], initrds[0]):
                path = path.replace("$bootprefix", prefix)
                assert version in path and iso.exists(path), (path, entry)
    assert "set default=0" in text


@pytest.mark.boot
@pytest.mark.parametrize("entry", [0, 1])
def test_each_entry_boots(two_kernels: TwoKernels, entry: int, tmp_path: Path) -> None:
    iso = two_kernels.iso
    if entry != 0:  # a copy whose grub.cfg boots that entry by default (see the module docstring)
        iso = tmp_path / f"entry-{entry}.iso"
        shutil.copyfile(two_kernels.iso, iso)
        with IsoReader(two_kernels.iso) as reader:
            offset, size = reader.extent(MEDIA_GRUB_CFG)
        text = two_kernels.grub_cfg.encode()
        assert len(text) == size and text.count(b"set default=0") == 1
        with open(iso, "r+b") as f:
            f.seek(offset)
            f.write(text.replace(b"set default=0", f"set default={entry}".encode()))
    result = boot(BootConfig(CdRom(iso), log_path=tmp_path / "serial.log", timeout=600))
    assert result.ok, result.describe()
    line = result.marker_line
    assert line is not None and f"kernel={two_kernels.versions[entry]} " in line, line
    assert "fstype=overlay" in line, line
