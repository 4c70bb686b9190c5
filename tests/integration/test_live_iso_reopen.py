"""Re-opening a liveos ISO as input, and the media state file that makes rebuilds idempotent.

The state file and the argument bookkeeping are unit-tested (tests/unit/test_state.py). These
build a bootstrap ISO from the azl fixture,
re-open it, customise it and write it again: the kernel command lines must equal the first
build's (no duplicated arguments), the state must be right, bootstrap -> full-os conversion must
work, the input must not change and nothing may stay mounted. One QEMU boot proves the re-emitted
ISO still boots to the live overlay.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, boot
from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.image import open_image
from liveos.image.isofs import IsoReader
from liveos.image.live_iso import LiveIsoImage
from liveos.iso import IsoWriter
from liveos.layout import STATE_PATH
from liveos.live import LiveOS
from liveos.settings import InitramfsMode
from liveos.state import DIGEST_ALGORITHM, MediaState, SourceDigest
from tests.conftest import FixtureImageFactory
from tests.imagekit import our_loops, our_mounts, sha256


# -- ISOs that liveos did not write ---------------------------------------------------------------
@pytest.mark.root
def test_foreign_iso_is_refused_with_a_fix(tmp_path: Path) -> None:
    writer = IsoWriter("FOREIGN")
    writer.add_bytes("/boot/grub/grub.cfg", b"menuentry x { true }\n")
    iso = tmp_path / "foreign.iso"
    writer.write(iso, hybrid=False)
    with (
        pytest.raises(UsageError, match="not written by liveos") as caught,
        open_image(iso, workdir=tmp_path),
    ):
        pass
    assert "fix:" in str(caught.value)
    assert [p for p in tmp_path.iterdir() if p.name.startswith("liveos-image-")] == []


@pytest.mark.root
def test_broken_state_on_an_iso_names_the_iso(tmp_path: Path) -> None:
    writer = IsoWriter("BROKEN")
    writer.add_bytes(str(STATE_PATH), b'{"schema": 1, "mode": "bootstrap"}')
    iso = tmp_path / "broken.iso"
    writer.write(iso, hybrid=False)
    with pytest.raises(ImageError, match=r"broken\.iso") as caught, open_image(iso, workdir=tmp_path):
        pass
    assert "missing key" in str(caught.value)


@pytest.mark.root
@pytest.mark.parametrize("link", ["/boot/efi", "/boot/efi/EFI"])
def test_boot_files_never_follow_a_link_the_iso_carries(tmp_path: Path, link: str) -> None:
    """A "liveos" ISO whose /boot/efi (or /boot/efi/EFI) is a link to a host directory: re-opening
    it must not write the boot chain there."""
    canary = tmp_path / "canary"
    canary.mkdir()
    state = MediaState(
        liveos_version="0.1.0",
        mode=InitramfsMode.BOOTSTRAP,
        label="HOSTILE",
        live_args=(),
        user_args=(),
        source=SourceDigest(DIGEST_ALGORITHM, 1, "ab" * 32),
        build_time=1_700_000_000,
    )
    writer = IsoWriter("HOSTILE")
    writer.add_bytes(str(STATE_PATH), state.render().encode())
    writer.add_bytes("/boot/vmlinuz-6.1", b"kernel")
    writer.add_symlink(link, str(canary))
    writer.add_bytes("/EFI/BOOT/bootx64.efi", b"shim")
    writer.add_bytes("/EFI/BOOT/grubx64.efi", b"grub")
    writer.add_bytes("/liveos/rootfs.img", b"not a squashfs")
    iso = tmp_path / "hostile.iso"
    writer.write(iso, hybrid=False)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ImageError, match=r"hostile\.iso"), open_image(iso, workdir=work):
        pass
    assert list(canary.iterdir()) == []
    assert list(work.iterdir()) == []


# -- real builds ----------------------------------------------------------------------------------

LABEL = "LIVEOS_REOPEN"
USER_ARGS = ("liveos.test=1", "console=ttyS0,115200")
GRUB = "/boot/grub2/grub.cfg"  # the azl layout


def _lines(text: str) -> list[list[str]]:
    return [line.texts() for line in GrubConfig.parse(text).kernel_args()]


def read_media(iso: Path) -> tuple[str, MediaState, set[str]]:
    with IsoReader(iso) as reader:
        config = reader.read_bytes(GRUB).decode()
        state = MediaState.parse(reader.read_bytes(str(STATE_PATH)))
        names = {entry.path for entry in reader.walk()}
    return config, state, names


@dataclass(frozen=True)
class Generations:
    first: Path
    second: Path
    full_os: Path
    work: Path


@pytest.fixture(scope="module")
def generations(
    fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generations]:
    """disk -> bootstrap ISO -> (re-opened, customised) bootstrap ISO -> full-os ISO."""
    out = tmp_path_factory.mktemp("reopen")
    work = out / "work"
    work.mkdir()
    image = fixture_image("azl", "qcow2").path
    with LiveOS.open(image, workdir=work) as live:
        live.rootfs.write_text("/etc/liveos-generation", "1\n")
        first = (
            live.with_label(LABEL)
            .with_cache(False)  # other modules' cached products would add /updates to one generation
            .with_kernel_args(*USER_ARGS)
            .bootstrap()
            .write_iso(out / "gen1.iso")
            .output
        )
    before = sha256(first)
    with LiveOS.open(first, workdir=work) as live:
        assert isinstance(live.image, LiveIsoImage)
        assert live.rootfs.read_text("/etc/liveos-generation") == "1\n"
        live.rootfs.write_text("/etc/liveos-generation", "2\n")
        second = (
            live.with_label(LABEL)
            .with_cache(False)
            .with_kernel_args(*USER_ARGS)
            .bootstrap()
            .write_iso(out / "gen2.iso")
            .output
        )
        assert our_mounts(str(work)) != [], "the re-opened tree should be mounted inside the block"
    assert sha256(first) == before, "re-opening changed the input ISO"
    with LiveOS.open(second, workdir=work) as live:
        full_os = (
            live.with_label(LABEL).with_kernel_args(*USER_ARGS).full_os().write_iso(out / "full.iso").output
        )
    yield Generations(first, second, full_os, work)


@pytest.mark.root
def test_rebuilt_iso_has_the_same_command_lines(generations: Generations) -> None:
    config1, state1, names1 = read_media(generations.first)
    config2, state2, names2 = read_media(generations.second)
    lines1 = _lines(config1)
    assert lines1 and lines1 == _lines(config2)
    for line in lines1:
        assert len(line) == len(set(line)), f"duplicated argument: {line}"
        assert f"root=live:CDLABEL={LABEL}" in line and "liveos.test=1" in line
    assert config1 == config2
    assert state2.label == LABEL and state2.mode is InitramfsMode.BOOTSTRAP
    assert (state2.live_args, state2.user_args) == (state1.live_args, state1.user_args)
    assert "liveos.test=1" in state1.user_args
    assert "rd.live.image" in state1.live_args and f"root=live:CDLABEL={LABEL}" in state1.live_args
    assert state2.source == state1.source, "the original disk's digest must carry over"
    assert names1 == names2, names1 ^ names2


@pytest.mark.root
def test_customisation_survives_into_the_rebuilt_squashfs(generations: Generations, tmp_path: Path) -> None:
    with open_image(generations.second, workdir=tmp_path) as image:
        assert image.rootfs.read_text("/etc/liveos-generation") == "2\n"
        assert not image.rootfs.exists("/etc/fstab")
        assert image.rootfs.path("/boot/efi/EFI/BOOT/bootx64.efi").is_file()
    assert our_mounts(str(tmp_path)) == []
    assert our_loops(generations.second) == []
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
def test_converted_to_full_os(generations: Generations, tmp_path: Path) -> None:
    config, state, names = read_media(generations.full_os)
    assert state.mode is InitramfsMode.FULL_OS
    assert "/liveos/rootfs.img" not in names and "/boot/initrd.img" in names
    for line in _lines(config):
        assert not any(a.startswith(("rd.live", "root=")) for a in line), line
        assert line.count("liveos.test=1") == 1
    assert "initrd /boot/initrd.img" in config or "initrd $bootprefix/initrd.img" in config
    # and back: the full-os ISO re-opens (CPIO extracted) with the customisation inside
    with open_image(generations.full_os, workdir=tmp_path) as image:
        assert isinstance(image, LiveIsoImage) and image.state.mode is InitramfsMode.FULL_OS
        assert image.rootfs.read_text("/etc/liveos-generation") == "2\n"
        assert not image.rootfs.is_symlink("/init")
        versions = [k.version for k in image.rootfs.kernels()]
        reopened = image.rootfs.read_text(GRUB)
        assert versions and f"initrd.img-{versions[0]}" in reopened
    assert our_mounts(str(tmp_path)) == []


@pytest.mark.root
def test_nothing_left_behind(generations: Generations) -> None:
    assert our_mounts(str(generations.work)) == []
    for iso in (generations.first, generations.second, generations.full_os):
        assert our_loops(iso) == []
    assert list(generations.work.iterdir()) == []


@pytest.mark.root
@pytest.mark.boot
def test_rebuilt_iso_boots(generations: Generations, tmp_path: Path) -> None:
    result = boot(BootConfig(CdRom(generations.second), log_path=tmp_path / "serial.log", timeout=400))
    assert result.ok, result.describe()
    assert result.marker_line is not None and "fstype=overlay" in result.marker_line, result.marker_line
