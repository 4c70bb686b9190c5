"""RootFs confines every path to the image root, whatever the image's symlinks say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from liveos.confined import resolve_in_root
from liveos.errors import ImageError
from liveos.rootfs import RootFs, parse_os_release
from liveos.versions import Version


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[RootFs, Path]:
    """An image root whose links all try to reach the host, and a host dir they aim at."""
    host = tmp_path / "host"
    (host / "etc").mkdir(parents=True)
    (host / "etc" / "passwd").write_text("HOST SECRET\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("image passwd\n")
    os.symlink(str(host / "etc"), root / "hostetc")  # absolute link naming a host path
    os.symlink("/../../../../" + str(host / "etc" / "passwd").lstrip("/"), root / "etc" / "fstab")
    os.symlink("../../../../../..", root / "up")  # relative link climbing out
    os.symlink("/real", root / "abs")  # absolute link that is fine inside the image
    os.symlink("loop2", root / "loop1")
    os.symlink("loop1", root / "loop2")
    return RootFs(root), host


def test_absolute_link_restarts_at_the_image_root(hostile: tuple[RootFs, Path]) -> None:
    rootfs, _ = hostile
    assert rootfs.path("/abs/passwd") == rootfs.root / "real" / "passwd"
    assert rootfs.read_text("/abs/passwd") == "image passwd\n"


def test_links_to_host_paths_stay_inside(hostile: tuple[RootFs, Path]) -> None:
    rootfs, host = hostile
    for path in ("/hostetc/passwd", "/etc/fstab", "/up/etc/passwd", "up/../../etc/passwd"):
        resolved = rootfs.path(path)
        assert resolved.is_relative_to(rootfs.root), path
        assert not resolved.is_relative_to(host), path
    with pytest.raises(ImageError):
        rootfs.read_text("/etc/fstab")  # its target does not exist inside the image


def test_writes_through_hostile_links_never_touch_the_host(hostile: tuple[RootFs, Path]) -> None:
    rootfs, host = hostile
    rootfs.write_text("/hostetc/passwd", "overwritten\n")
    rootfs.write_text("/etc/fstab", "replaced link\n")
    assert (host / "etc" / "passwd").read_text() == "HOST SECRET\n"
    assert not (rootfs.root / "etc" / "fstab").is_symlink()
    assert rootfs.remove_fstab()
    assert not rootfs.remove_fstab()


def test_symlink_loop_is_an_image_error(hostile: tuple[RootFs, Path]) -> None:
    rootfs, _ = hostile
    with pytest.raises(ImageError, match="symbolic links"):
        rootfs.path("/loop1/x")


def test_dotdot_stops_at_root(tmp_path: Path) -> None:
    assert resolve_in_root(tmp_path, "/../../etc/../../x") == tmp_path / "x"


def test_os_release_and_kernels(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    rootfs.write_text("/usr/lib/os-release", "ID=debian\nVERSION_ID=\"12\"\n# c\nPRETTY_NAME='Deb'\n")
    assert rootfs.os_release() == {"ID": "debian", "VERSION_ID": "12", "PRETTY_NAME": "Deb"}
    for name in ("vmlinuz-6.6.9", "vmlinuz-6.6.10", "initramfs-6.6.10.img", "initrd.img-6.6.9"):
        rootfs.write_bytes(f"/boot/{name}", b"x")
    kernels = rootfs.kernels()
    assert [k.version for k in kernels] == ["6.6.9", "6.6.10"]
    assert str(kernels[0].initrd) == "/boot/initrd.img-6.6.9"
    assert str(kernels[1].initrd) == "/boot/initramfs-6.6.10.img"


def test_selinux_mode(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    assert rootfs.selinux_mode() == "disabled"
    rootfs.write_text("/etc/selinux/config", "# x\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
    assert rootfs.selinux_mode() == "enforcing"


def test_parse_os_release_and_Version() -> None:
    assert parse_os_release("A=1\nB='two words'\n")["B"] == "two words"
    assert Version("6.6.10") > Version("6.6.9")
    assert Version("6.6.10.1") > Version("6.6.10")


def test_version_order_takes_any_number_of_digits() -> None:
    from liveos.versions import rpmvercmp

    assert rpmvercmp("1" * 5000, "2" * 5000) == -1
    assert rpmvercmp("007", "7") == 0 and rpmvercmp("10", "9") == 1 and rpmvercmp("1.010", "1.9") == 1
