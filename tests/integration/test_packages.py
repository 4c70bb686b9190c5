"""The image's own tools, in the sandbox, on the real azl fixture (Debian 12): apt-get installs
from deb.debian.org, systemctl enables units offline, scripts run as the image's root. Every
change lands in the overlay: the input image's bytes never change, and nothing liveos put into
the tree for the run (policy-rc.d, the script, a resolv.conf placeholder) stays there.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.errors import CommandError, ImageError, UsageError
from liveos.live import LiveOS
from liveos.packages import PackageManager
from liveos.rootfs import RootFs
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage
from tests.imagekit import sha256
from tests.liveimagekit import live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and namespaces need root"),
    pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap"),
]
WANTS = "/etc/systemd/system/multi-user.target.wants"


@pytest.fixture
def azl(fixture_image: FixtureImageFactory) -> FixtureImage:
    return fixture_image("azl", "qcow2")


@pytest.fixture
def live(azl: FixtureImage, tmp_path: Path) -> Iterator[LiveOS]:
    with LiveOS.open(azl.path, workdir=tmp_path) as opened:
        yield opened


def leftovers(rootfs: RootFs) -> list[str]:
    """What a run could leave behind in the tree: its /tmp, the policy-rc.d, downloads."""
    found = [str(p) for p in rootfs.iterdir("/tmp")]
    found += [str(p) for p in rootfs.iterdir("/var/cache/apt/archives") if p.name.endswith(".deb")]
    found += [str(p) for p in rootfs.iterdir("/var/lib/apt/lists") if p.name not in ("lock", "partial")]
    return found + (["/usr/sbin/policy-rc.d"] if rootfs.exists("/usr/sbin/policy-rc.d") else [])


def test_install_then_remove_a_package_from_the_distribution(azl: FixtureImage, tmp_path: Path) -> None:
    before = sha256(azl.path)
    with LiveOS.open(azl.path, workdir=tmp_path) as live:
        rootfs = live.rootfs
        assert rootfs.package_manager() is PackageManager.APT
        assert not rootfs.exists("/usr/bin/hello")
        resolv = rootfs.read_bytes("/etc/resolv.conf")  # the host's is bound over it, read-only
        rootfs.install_packages(["hello"])
        assert rootfs.run(["hello"]).stdout == b"Hello, world!\n"  # the image's new binary, in its sandbox
        assert "/usr/bin/hello" in {str(c.path) for c in live.image.changes()}  # in the overlay
        assert "ii  hello " in rootfs.run(["dpkg", "-l", "hello"]).stdout.decode()
        assert leftovers(rootfs) == []
        assert rootfs.read_bytes("/etc/resolv.conf") == resolv
        rootfs.remove_packages(["hello"])
        assert not rootfs.exists("/usr/bin/hello")
        assert leftovers(rootfs) == []
    assert sha256(azl.path) == before, "the input image changed"


def test_an_unknown_package_is_the_package_manager_s_error(live: LiveOS) -> None:
    with pytest.raises(CommandError, match="Unable to locate package liveos-no-such-package"):
        live.rootfs.install_packages(["liveos-no-such-package"])
    assert leftovers(live.rootfs) == []  # cleaned after the failure too


def test_hostname(live: LiveOS) -> None:
    live.rootfs.set_hostname("live-01")
    assert live.rootfs.read_text("/etc/hostname") == "live-01\n"
    with pytest.raises(UsageError, match="invalid hostname"):
        live.rootfs.set_hostname("live_01")
    assert live.rootfs.read_text("/etc/hostname") == "live-01\n"


def test_enable_and_disable_services(live: LiveOS) -> None:
    rootfs = live.rootfs
    assert rootfs.is_symlink(f"{WANTS}/e2scrub_reap.service")
    assert not rootfs.exists(f"{WANTS}/systemd-networkd.service")
    rootfs.disable_services(["e2scrub_reap"])
    rootfs.enable_services(["systemd-networkd.service"])
    assert not os.path.lexists(rootfs.path(f"{WANTS}/e2scrub_reap.service", follow_last=False))
    link = rootfs.path(f"{WANTS}/systemd-networkd.service", follow_last=False)
    assert os.readlink(link) == "/lib/systemd/system/systemd-networkd.service"
    rootfs.enable_services(["e2scrub_reap"])
    assert rootfs.is_symlink(f"{WANTS}/e2scrub_reap.service")


def test_a_missing_service_is_named_and_nothing_changes(live: LiveOS) -> None:
    with pytest.raises(UsageError, match=r"cannot enable liveos-nothing\.service: no such unit"):
        live.rootfs.enable_services(["systemd-networkd", "liveos-nothing"])
    assert not live.rootfs.exists(f"{WANTS}/systemd-networkd.service")
    assert live.image.changes() == ()


def test_scripts_run_as_the_image_s_root(live: LiveOS, tmp_path: Path) -> None:
    rootfs = live.rootfs
    script = tmp_path / "customize.sh"
    script.write_text(
        '#!/bin/bash\necho "$1 $GREETING from bash $BASH_VERSION" > /etc/customized\necho done\n'
    )
    done = rootfs.run_script(script, args=["hello"], env={"GREETING": "world"})
    assert done.stdout == b"done\n"
    assert rootfs.read_text("/etc/customized").startswith("hello world from bash 5.")
    assert not Path("/etc/customized").exists()
    python = rootfs.run_script(
        content="import sys; print(sys.argv[1:])", interpreter="python3", args=["a b"]
    )
    assert python.stdout == b"['a b']\n"
    assert rootfs.run_script(content="id -u; hostname").stdout.split() == [b"0", b"liveos-sandbox"]
    assert leftovers(rootfs) == []


def test_a_failing_script_gives_its_stderr(live: LiveOS) -> None:
    with pytest.raises(CommandError, match="exit code 7") as info:
        live.rootfs.run_script(content="echo 'cannot configure the widget' >&2\nexit 7\n")
    assert "cannot configure the widget" in info.value.stderr
    assert "the inline script" in str(info.value)
    assert leftovers(live.rootfs) == []


def test_scripts_get_the_network_only_when_asked(live: LiveOS) -> None:
    interfaces = "tail -n +3 /proc/net/dev | cut -d: -f1"
    assert live.rootfs.run_script(content=interfaces).stdout.split() == [b"lo"]
    assert live.rootfs.run_script(content="getent hosts deb.debian.org", network=True).stdout.strip()
    with pytest.raises(CommandError):
        live.rootfs.run_script(content="getent hosts deb.debian.org")


@pytest.mark.parametrize("kind", ["missing", "symlink"])
def test_dns_in_network_mode_leaves_no_trace(live: LiveOS, kind: str) -> None:
    """An image without resolv.conf (bwrap makes a placeholder to bind onto: removed), or with
    systemd-resolved's link into /run (the host's file lands on the sandbox's own /run)."""
    rootfs = live.rootfs
    rootfs.remove("/etc/resolv.conf")
    if kind == "symlink":
        os.symlink(
            "../run/systemd/resolve/stub-resolv.conf", rootfs.path("/etc/resolv.conf", follow_last=False)
        )
    assert rootfs.run_script(content="getent hosts deb.debian.org", network=True).stdout.strip()
    resolv = rootfs.path("/etc/resolv.conf", follow_last=False)
    if kind == "missing":
        assert not os.path.lexists(resolv)
    else:
        assert os.readlink(resolv) == "../run/systemd/resolve/stub-resolv.conf"
        assert not os.path.lexists(rootfs.root / "run/systemd/resolve")


def test_no_package_manager_is_an_image_error(tmp_path: Path) -> None:
    image = live_image(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    with (
        LiveOS.open(image, workdir=work) as live,
        pytest.raises(ImageError, match=r"no package manager .*apt-get"),
    ):
        live.rootfs.install_packages(["hello"])
