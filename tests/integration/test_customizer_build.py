"""Image Customizer configs shaped like the reference tool's testdata/iso-*.yaml and pxe-*.yaml,
built from the azl fixture image: ISO bootstrap, ISO full-os, PXE bootstrap with a base URL (a
folder), PXE full-os (a .tar.gz, through the CLI). Each config's ``os:`` part installs ``hello``
from the distribution's repository with the image's apt, sets the hostname, adds a file and runs
scripts; the media must show the config's kernel arguments, mode and media files, and booting
them (``pytest -m boot``) must reach the marker with ``hello`` installed.

Builds run with SOURCE_DATE_EPOCH set, so the volume label -- and with it grub.cfg -- is the same
for the same config (without it every build gets a unique label, by design).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.boottest import GUEST_HTTP_ADDR, BootConfig, CdRom, PxeBoot, boot
from liveos.cli import main
from liveos.customizer import build_from_config
from liveos.errors import UsageError
from liveos.image.isofs import IsoReader
from liveos.inspection import MediaInfo, inspect, open_media
from liveos.live import LiveOS
from liveos.settings import InitramfsMode, KdumpBootFiles
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage
from tests.imagekit import MARKER_SCRIPT

pytestmark = [pytest.mark.root]

SEED = "instance-id: live-from-config\n"
NETWORK = "[Match]\nName=e*\n\n[Network]\nDHCP=yes\n"

#: The os: part every config shares (as the reference's VM-test configs share theirs): a package
#: from the repository, the hostname, a file, and scripts that leave their mark -- the last one
#: makes the booted marker line show where ``hello`` is and the hostname.
OS_PART = """\
os:
  hostname: {hostname}
  packages:
    install:
    - hello
  additionalFiles:
  - source: files/89-ethernet.network
    destination: /etc/systemd/network/89-ethernet.network
  - content: |
      built from {name}
    destination: /etc/liveos-config
    permissions: "600"
  services:
    enable:
    - liveos-boot-ok
{selinux}
scripts:
  postCustomization:
  - path: scripts/record.sh
    arguments: [post]
    environmentVariables:
      GREETING: hello
  finalizeCustomization:
  - name: marker shows hello and the hostname
    content: |
      set -e
      grep -q ' uptime=' {marker}
      sed -i 's| uptime=| hello=$(command -v hello) host=$(hostname) uptime=|' {marker}
"""

CONFIGS = {
    "iso-bootstrap": """\
iso:
  initramfsType: bootstrap
  kernelCommandLine:
    extraCommandLine:
    - liveos.config=iso-bootstrap
  additionalFiles:
  - content: |
      {seed}
    destination: /cloud-init-data/meta-data
  - source: files/89-ethernet.network
    destination: /cloud-init-data/network-config
    permissions: "640"
output:
  image:
    format: iso
    path: out/live.iso
""",
    "iso-full-os": """\
iso:
  initramfsType: full-os
  kernelCommandLine:
    extraCommandLine:
    - liveos.config=iso-full-os
  additionalFiles:
  - content: |
      {seed}
    destination: /cloud-init-data/meta-data
output:
  image:
    format: iso
    path: out/live.iso
""",
    "pxe-bootstrap": f"""\
pxe:
  initramfsType: bootstrap
  bootstrapBaseUrl: http://{GUEST_HTTP_ADDR}/
  kernelCommandLine:
    extraCommandLine:
    - liveos.config=pxe-bootstrap
  additionalFiles:
  - content: |
      {{seed}}
    destination: /cloud-init-data/meta-data
output:
  image:
    format: pxe-dir
    path: out/pxe
""",
    "pxe-full-os": """\
pxe:
  initramfsType: full-os
  kernelCommandLine:
    extraCommandLine:
    - liveos.config=pxe-full-os
  additionalFiles:
  - content: |
      {seed}
    destination: /cloud-init-data/meta-data
output:
  image:
    format: pxe-tar
    path: out/pxe.tar.gz
""",
}
#: The full-os configs say what the reference's full-os configs say about SELinux.
SELINUX = "  selinux:\n    mode: disabled\n  kernelCommandLine:\n    extraCommandLine:\n    - selinux=0\n"


def config_text(name: str) -> str:
    selinux = SELINUX if "full-os" in name else ""
    os_part = OS_PART.format(hostname=name, name=name, selinux=selinux, marker=MARKER_SCRIPT)
    return CONFIGS[name].format(seed=SEED.strip()) + os_part


def write_config(folder: Path, name: str) -> Path:
    (folder / "files").mkdir(parents=True)
    (folder / "files/89-ethernet.network").write_text(NETWORK)
    (folder / "scripts").mkdir()
    (folder / "scripts/record.sh").write_text('#!/bin/sh\necho "$1 $GREETING" > /etc/liveos-script\n')
    path = folder / f"{name}.yaml"
    path.write_text(config_text(name))
    return path


@dataclass(frozen=True)
class Built:
    """One config built: where, the result's summary, and what the customised tree held after
    the build (None for the CLI build, whose session is gone: its boot shows the tree)."""

    config: Path
    output: Path
    result: dict[str, object]  #: BuildResult.to_dict(), as ``--json`` prints it
    tree: dict[str, object] | None


def build(image: FixtureImage, folder: Path, name: str) -> Built:
    config = write_config(folder, name)
    if name == "pxe-full-os":  # through the command line, as a user would
        return build_with_cli(image, config)
    with LiveOS.open(image.path) as live:
        result = build_from_config(live, config)
        rootfs = live.rootfs
        tree = {
            "hello": rootfs.is_file("/usr/bin/hello"),
            "hostname": rootfs.read_text("/etc/hostname"),
            "script": rootfs.read_text("/etc/liveos-script"),
            "config": rootfs.read_text("/etc/liveos-config"),
            "config_mode": rootfs.path("/etc/liveos-config").stat().st_mode & 0o777,
            "network": rootfs.read_text("/etc/systemd/network/89-ethernet.network"),
            "marker": rootfs.read_text(MARKER_SCRIPT),
        }
    return Built(config, result.output, result.to_dict(), tree)


def build_with_cli(image: FixtureImage, config: Path) -> Built:
    """``liveos build --config FILE IMAGE --json`` (the output from the config's output:)."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["build", "--config", str(config), str(image.path), "--json", "--quiet"])
    assert code == 0
    data = json.loads(stdout.getvalue())
    return Built(config, Path(str(data["output"])), data, None)


@pytest.fixture(scope="module")
def built(
    fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[str], Built]]:
    """``built(name)``: the config built once per module (on first use)."""
    image = fixture_image("azl", "qcow2")
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    done: dict[str, Built] = {}

    def get(name: str) -> Built:
        if name not in done:
            done[name] = build(image, tmp_path_factory.mktemp(name), name)
        return done[name]

    try:
        yield get
    finally:
        if saved is None:
            del os.environ["SOURCE_DATE_EPOCH"]
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved


def user_cmdlines(info: MediaInfo) -> list[tuple[str, ...]]:
    return [e.cmdline for e in info.entries]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_media_show_the_config(built: Callable[[str], Built], name: str) -> None:
    done = built(name)
    mode = InitramfsMode.FULL_OS if "full-os" in name else InitramfsMode.BOOTSTRAP
    assert done.result["mode"] == mode.value
    arg = f"liveos.config={name}"
    entries = done.result["entries"]
    assert isinstance(entries, list) and entries
    assert all(arg in e["cmdline"] for e in entries), entries
    if mode is InitramfsMode.FULL_OS:  # os.selinux.mode disabled and os.kernelCommandLine
        assert all("selinux=0" in e["cmdline"] for e in entries), entries
    info = inspect(done.output)
    assert isinstance(info, MediaInfo)
    assert info.mode is mode
    assert info.state is not None and arg in info.state.user_args
    assert all(arg in cmdline for cmdline in user_cmdlines(info))
    with open_media(done.output) as media:
        assert media.read_bytes("/cloud-init-data/meta-data").decode() == SEED
        if name == "pxe-bootstrap":  # the reference's name for the ISO under a base URL
            assert media.is_file("/image.iso")
            config = media.read_bytes("/boot/grub2/grub.cfg").decode()
            assert f"root=live:http://{GUEST_HTTP_ADDR}/image.iso" in config
    if name == "iso-bootstrap":
        with IsoReader(done.output) as iso:
            assert iso.read_bytes("/cloud-init-data/network-config").decode() == NETWORK
            assert iso.entry("/cloud-init-data/network-config").mode & 0o777 == 0o640
            assert iso.entry("/cloud-init-data/meta-data").mode & 0o777 == 0o644
    if done.tree is not None:
        assert done.tree["hello"] is True
        assert done.tree["hostname"] == f"{name}\n"
        assert done.tree["script"] == "post hello\n"
        assert done.tree["config"] == f"built from {name}\n" and done.tree["config_mode"] == 0o600
        assert done.tree["network"] == NETWORK
        assert "hello=$(command -v hello)" in str(done.tree["marker"])


def test_same_config_twice_gives_the_same_grub_cfg(
    built: Callable[[str], Built], fixture_image: FixtureImageFactory, tmp_path: Path
) -> None:
    first = built("iso-full-os")
    again = build(fixture_image("azl", "qcow2"), tmp_path / "again", "iso-full-os")
    with IsoReader(first.output) as a, IsoReader(again.output) as b:
        assert a.read_bytes("/boot/grub2/grub.cfg") == b.read_bytes("/boot/grub2/grub.cfg")
    assert again.result["entries"] == first.result["entries"]


def test_with_config_sets_what_the_config_says(fixture_image: FixtureImageFactory, tmp_path: Path) -> None:
    """The Python entry point: the os: part lands in the overlay, the pxe: part in the settings."""
    (tmp_path / "seed").write_text(SEED)
    config = {
        "pxe": {
            "kernelCommandLine": {"extraCommandLine": ["quiet", "liveos.x=1"]},
            "kdumpBootFiles": "keep",
            "additionalFiles": [
                {"source": str(tmp_path / "seed"), "destination": "/seed", "permissions": "600"}
            ],
        },
        "os": {"hostname": "from-mapping", "kernelCommandLine": {"extraCommandLine": ["console=ttyS0"]}},
        "output": {"image": {"format": "pxe-tar"}},
    }
    with LiveOS.open(fixture_image("azl", "qcow2").path) as live:
        configured = live.with_config(config)
        settings = configured.settings
        assert settings.mode is InitramfsMode.FULL_OS  # pxe's default
        assert settings.kernel_args == ("console=ttyS0", "quiet", "liveos.x=1")
        assert settings.kdump_boot_files is KdumpBootFiles.KEEP
        assert [(f.destination, f.source, f.mode) for f in settings.media_files] == [
            ("/seed", tmp_path / "seed", 0o600)
        ]
        assert live.rootfs.read_text("/etc/hostname") == "from-mapping\n"
        assert configured.with_config({"iso": {}}).settings.mode is InitramfsMode.BOOTSTRAP


def test_selinux_with_full_os_is_refused_before_any_change(fixture_image: FixtureImageFactory) -> None:
    config = {"iso": {"initramfsType": "full-os"}, "os": {"hostname": "x", "selinux": {"mode": "enforcing"}}}
    with LiveOS.open(fixture_image("azl", "qcow2").path) as live:
        with pytest.raises(UsageError, match="selinux is not supported for full OS initramfs image"):
            live.with_config(config)
        assert live.image.changes() == ()


# -- boots: each config's media once ------------------------------------------------------------
def check_marker(line: str | None, name: str) -> None:
    assert line is not None, "no marker line"
    assert "hello=/usr/bin/hello" in line, line
    assert f"host={name} " in line, line


@pytest.mark.boot
@pytest.mark.parametrize("name", ["iso-bootstrap", "iso-full-os"])
def test_iso_from_config_boots(built: Callable[[str], Built], name: str, tmp_path: Path) -> None:
    done = built(name)
    result = boot(BootConfig(CdRom(done.output), log_path=tmp_path / "serial.log", timeout=400))
    assert result.ok, result.describe()
    check_marker(result.marker_line, name)
    if name == "iso-bootstrap":
        assert "fstype=overlay" in str(result.marker_line)


PXE_MEMORY_MIB = 3584  # bootstrap: the downloaded ISO lives in RAM next to the system


@pytest.mark.boot
def test_pxe_bootstrap_from_config_boots(built: Callable[[str], Built], tmp_path: Path) -> None:
    done = built("pxe-bootstrap")
    folder = done.output
    result = boot(
        BootConfig(
            PxeBoot(folder, "bootx64.efi"),
            http_root=folder,
            memory_mib=PXE_MEMORY_MIB,
            timeout=500,
            log_path=tmp_path / "serial.log",
        )
    )
    assert result.ok, result.describe()
    check_marker(result.marker_line, "pxe-bootstrap")


@pytest.mark.boot
def test_pxe_full_os_tar_from_config_boots(built: Callable[[str], Built], tmp_path: Path) -> None:
    done = built("pxe-full-os")
    folder = tmp_path / "tftp"
    folder.mkdir()
    with tarfile.open(done.output) as archive:
        archive.extractall(folder, filter="data")
    result = boot(
        BootConfig(
            PxeBoot(folder, "bootx64.efi"),
            memory_mib=PXE_MEMORY_MIB,
            timeout=500,
            log_path=tmp_path / "serial.log",
        )
    )
    assert result.ok, result.describe()
    check_marker(result.marker_line, "pxe-full-os")
