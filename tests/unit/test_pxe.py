"""PXE bundles without booting: URL rules, the TFTP plan, grub inspection, tar.gz and folder output."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any, cast

import pytest

from liveos.bootfiles import find_boot_files
from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.image.base import SourceImage
from liveos.image.formats import DiskFormat
from liveos.initramfs.livenet import livenet_extra_args
from liveos.live import LiveOS
from liveos.media.grubedit import GrubEdit, NetworkRoot, edit_grub_config, network_redirector, render_bls
from liveos.plan import Origin
from liveos.pxe.bundle import FILE_MODE, WORK_PREFIX, PxeBundle, Symlink, wants_archive
from liveos.pxe.netgrub import MODULE_INFO_MAGIC, GrubImage, choose_network_grub
from liveos.pxe.output import plan_pxe
from liveos.pxe.urls import LIVENET_SCHEMES, BootstrapUrl, resolve_bootstrap_url
from liveos.rootfs import RootFs
from liveos.settings import InitramfsMode, LiveSettings

DATA = Path(__file__).parent.parent / "data" / "grub"
BOOTSTRAP, FULL_OS = InitramfsMode.BOOTSTRAP, InitramfsMode.FULL_OS


# ------------------------------------------------------------------------------ URLs


def test_bootstrap_needs_a_url() -> None:
    with pytest.raises(UsageError, match="needs the URL"):
        resolve_bootstrap_url(BOOTSTRAP)


def test_base_and_file_url_are_exclusive() -> None:
    with pytest.raises(UsageError, match="not both"):
        resolve_bootstrap_url(BOOTSTRAP, base_url="http://h/", file_url="http://h/a.iso")
    with pytest.raises(UsageError, match="not both"):
        resolve_bootstrap_url(FULL_OS, base_url="http://h/", file_url="http://h/a.iso")


@pytest.mark.parametrize("field", ["base_url", "file_url"])
def test_full_os_takes_no_url(field: str) -> None:
    with pytest.raises(UsageError, match="full-os"):
        resolve_bootstrap_url(FULL_OS, **{field: "http://h/live.iso"})
    assert resolve_bootstrap_url(FULL_OS) is None


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h/pxe", "http://h/pxe/live.iso"),
        ("http://h/pxe/", "http://h/pxe/live.iso"),
        ("http://h", "http://h/live.iso"),
        ("http://h/", "http://h/live.iso"),
        ("http://10.0.2.100:8080/a/b//", "http://10.0.2.100:8080/a/b/live.iso"),
        ("tftp://h/x", "tftp://h/x/live.iso"),
    ],
)
def test_base_url_joining(base: str, expected: str) -> None:
    url = resolve_bootstrap_url(BOOTSTRAP, base_url=base)
    assert url == BootstrapUrl(expected, "live.iso")


def test_base_url_with_own_file_name_is_percent_encoded() -> None:
    url = BootstrapUrl.join("https://h/pxe/", "my live.iso")
    assert url.url == "https://h/pxe/my%20live.iso"
    assert url.file_name == "my live.iso"


@pytest.mark.parametrize("scheme", LIVENET_SCHEMES)
def test_file_url_every_livenet_scheme(scheme: str) -> None:
    url = resolve_bootstrap_url(BOOTSTRAP, file_url=f"{scheme}://server/images/os-1.2.iso")
    assert url is not None and url.file_name == "os-1.2.iso"
    assert str(url) == f"{scheme}://server/images/os-1.2.iso"


def test_file_url_scheme_is_case_insensitive() -> None:
    assert BootstrapUrl.parse("HTTP://h/x.iso").file_name == "x.iso"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///srv/live.iso", "unsupported scheme"),
        ("torrent://h/live.iso", "unsupported scheme"),
        ("live.iso", "unsupported scheme"),
        ("http:///live.iso", "no server"),
        ("http://h/", "names no file"),
        ("http://h", "names no file"),
        ("http://h/dir/", "names no file"),
        ("http://h/a/..", "names no file"),
        ("http://h/a b.iso", "blanks"),
        ("http://h/a.iso\n", "blanks"),
        ('http://h/a".iso', "blanks"),
        ("http://h/a.iso#frag", "fragment"),
        ("http://h:99999/a.iso", "invalid"),
        ("http://h/a%2Fb.iso", "not a plain name"),
    ],
)
def test_file_url_rejected(url: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve_bootstrap_url(BOOTSTRAP, file_url=url)


def test_base_url_rejected() -> None:
    with pytest.raises(UsageError, match="unsupported scheme"):
        resolve_bootstrap_url(BOOTSTRAP, base_url="ssh://h/pxe")
    with pytest.raises(UsageError, match="query"):
        resolve_bootstrap_url(BOOTSTRAP, base_url="http://h/pxe?x=1")
    with pytest.raises(UsageError, match="plain file name"):
        BootstrapUrl.join("http://h/", "a/b.iso")


def test_file_url_query_is_kept_and_not_in_the_name() -> None:
    url = BootstrapUrl.parse("https://h/img/live.iso?sig=abc&exp=1")
    assert url.file_name == "live.iso" and url.url.endswith("?sig=abc&exp=1")


# ------------------------------------------------------------------------------ grub config


def live_config(network: NetworkRoot | None) -> str:
    edit = GrubEdit(
        mode=BOOTSTRAP,
        label="LIVEOS_T",
        boot_separate=False,
        dracut_version="059-4",
        user_args=(),
        disable_selinux=False,
        network=network,
    )
    path = PurePosixPath("/boot/grub2/grub.cfg")
    return edit_grub_config((DATA / "fixture-azure.cfg").read_text(), edit, path=path).render()


def args_of(text: str) -> set[str]:
    return {str(a) for args in GrubConfig.parse(text).kernel_args() for a in args}


def test_network_config_differs_from_the_iso_config_only_in_finding_the_root() -> None:
    url = BootstrapUrl.parse("http://10.0.2.100/live.iso")
    text = live_config(NetworkRoot(url.url))
    assert "search" not in text
    assert "CDLABEL" not in text
    args = args_of(text)
    assert {"root=live:http://10.0.2.100/live.iso", "ip=dhcp", "rd.neednet=1", "rd.live.image"} <= args
    iso = args_of(live_config(None))
    assert "root=live:CDLABEL=LIVEOS_T" in iso
    assert args - {"root=live:http://10.0.2.100/live.iso", "ip=dhcp", "rd.neednet=1"} == iso - {
        "root=live:CDLABEL=LIVEOS_T"
    }


def test_network_config_extra_args() -> None:
    text = live_config(NetworkRoot("http://h/live.iso", ("rd.live.azldownloader=enable",)))
    assert "rd.live.azldownloader=enable" in args_of(text)


def test_bls_menu_is_rendered_for_tftp(tmp_path: Path) -> None:
    rootfs = RootFs(tmp_path)
    for entry in sorted((DATA / "fedora" / "loader" / "entries").glob("*.conf")):
        rootfs.write_bytes(f"/boot/loader/entries/{entry.name}", entry.read_bytes())
    main = PurePosixPath("/boot/grub2/grub.cfg")
    text = render_bls("set timeout=1\nblscfg\n", rootfs, main.parent, path=main)
    assert "blscfg" not in text
    assert text.count("menuentry ") == 2  # the rescue entry is skipped
    assert text.index("6.12.9") < text.index("6.11.4")  # newest first


# ------------------------------------------------------------------------------ grub binaries


def fake_elf_module(name: str) -> bytes:
    """A minimal ELF64 object whose ``.modname`` section names a grub module."""
    shstr = b"\0.shstrtab\0.modname\0"
    modname = name.encode() + b"\0"
    data_off = 64
    shoff = data_off + len(shstr) + len(modname)
    header = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    header += struct.pack("<HHIQQQIHHHHHH", 1, 0x3E, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1)
    sections = bytes(64)
    sections += struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, data_off, len(shstr), 0, 0, 1, 0)
    sections += struct.pack("<IIQQQQIIQQ", 11, 1, 0, 0, data_off + len(shstr), len(modname), 0, 0, 1, 0)
    return header + shstr + modname + sections


def fake_grub(path: Path, prefix: str, modules: list[str], memdisk: bool = False) -> Path:
    """A PE file with a grub ``mods`` section (what grub-mkimage writes), for the parser."""
    objects = b""
    for module in modules:
        elf = fake_elf_module(module)
        objects += struct.pack("<II", 0, 8 + len(elf)) + elf
    if memdisk:
        objects += struct.pack("<II", 1, 8 + 64) + bytes(64)
    text = prefix.encode() + b"\0"
    objects += struct.pack("<II", 3, 8 + len(text)) + text
    mods = struct.pack("<IIQQ", MODULE_INFO_MAGIC, 0, 24, 24 + len(objects)) + objects
    dos = b"MZ" + bytes(0x3A) + struct.pack("<I", 0x40)
    coff = b"PE\0\0" + struct.pack("<HHIIIHH", 0x8664, 1, 0, 0, 0, 0, 0x22)
    section = struct.pack("<8sIIIIIIHHI", b"mods", len(mods), 0x1000, len(mods), 0x200, 0, 0, 0, 0, 0)
    head = dos + coff + section
    path.write_bytes(head + bytes(0x200 - len(head)) + mods)
    return path


def test_grub_image_reads_prefix_and_modules(tmp_path: Path) -> None:
    image = GrubImage.read(fake_grub(tmp_path / "g.efi", "/grub", ["efinet", "tftp", "linux"], True))
    assert image is not None
    assert image.prefix == "/grub" and image.modules == {"efinet", "tftp", "linux"}
    assert image.network_capable and image.has_memdisk
    assert image.tftp_config_dir() == PurePosixPath("/grub")
    disk = GrubImage.read(fake_grub(tmp_path / "d.efi", "(hd0,gpt2)/boot/grub", ["efinet", "ext2"]))
    assert disk is not None and not disk.network_capable and disk.tftp_config_dir() is None
    (tmp_path / "not-pe").write_bytes(b"hello")
    assert GrubImage.read(tmp_path / "not-pe") is None


def fake_image(tmp_path: Path, *, netgrub: bool) -> SourceImage:
    """A Debian-layout OS tree (ESP grub without tftp, optionally the signed network grub),
    opened as a :class:`SourceImage` straight from the directory: planning needs no mounts."""
    root = tmp_path / "root"
    esp = root / "boot/efi/EFI/debian"
    esp.mkdir(parents=True)
    (esp / "shimx64.efi").write_bytes(b"MZshim")
    fake_grub(esp / "grubx64.efi", "/EFI/debian", ["efinet", "linux"], memdisk=True)
    if netgrub:
        signed = root / "usr/lib/grub/x86_64-efi-signed"
        signed.mkdir(parents=True)
        fake_grub(signed / "grubnetx64.efi.signed", "/grub", ["efinet", "tftp", "linux"], memdisk=True)
    rootfs = RootFs(root)
    rootfs.write_text(
        "/boot/grub/grub.cfg",
        "search --no-floppy --fs-uuid --set=root 1234\n"
        "menuentry live {\n\tlinux /boot/vmlinuz-6 root=UUID=1234\n\tinitrd /boot/initrd.img-6\n}\n",
    )
    rootfs.write_bytes("/boot/grub/grubenv", b"# GRUB Environment Block\n")
    rootfs.write_bytes("/boot/vmlinuz-6", b"kernel")
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"disk")
    return SourceImage(path=disk, format=DiskFormat.RAW, root=root, scratch=tmp_path)


FULL_OS_SETTINGS = LiveSettings(mode=FULL_OS)


def test_plan_uses_the_network_grub_and_redirects_to_the_main_config(tmp_path: Path) -> None:
    image = fake_image(tmp_path, netgrub=True)
    plan = plan_pxe(image, FULL_OS_SETTINGS, "L", extra={"notes.txt": b"mine"})
    files = {str(f.path): f for f in plan.files}
    boot = find_boot_files(image.rootfs)
    assert files["/bootx64.efi"].host == boot.shim
    assert files["/grubx64.efi"].host == image.rootfs.path(
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"
    )
    for gone in ("/EFI/BOOT/bootx64.efi", "/EFI/BOOT/grubx64.efi", "/.disk/info", "/liveos/rootfs.img"):
        assert gone not in files
    assert {"/boot/vmlinuz-6", "/boot/initrd.img", "/boot/grub/grubenv", "/notes.txt"} <= set(files)
    assert files["/notes.txt"].origin is Origin.USER
    assert files["/boot/initrd.img"].origin is Origin.BUILT
    redirectors = {path for path, f in files.items() if f.source == "grub.cfg redirector"}
    expected = {"/grub/x86_64-efi/grub.cfg", "/grub/grub.cfg", "/grub.cfg", "/EFI/BOOT/grub.cfg"}
    expected |= {"/EFI/debian/grub.cfg", "/boot/grub2/grub.cfg"}
    assert redirectors == expected
    for path in redirectors:
        data = files[path].data
        assert data == network_redirector(PurePosixPath(path), PurePosixPath("/boot/grub"))
        assert b"search" not in data and b"configfile $prefix/grub.cfg" in data
    main = GrubConfig.parse((files["/boot/grub/grub.cfg"].data or b"").decode())
    assert not main.search_commands() and main.initrd_paths() == ["/boot/initrd.img"]
    assert [e.kernel for e in plan.entries] == ["/boot/vmlinuz-6"]


def test_plan_refuses_a_grub_without_tftp(tmp_path: Path) -> None:
    image = fake_image(tmp_path, netgrub=False)
    with pytest.raises(ImageError, match=r"grubx64.efi \(lacks tftp\)"):
        choose_network_grub(image.rootfs, find_boot_files(image.rootfs))
    with pytest.raises(ImageError, match="grubnetx64"):
        plan_pxe(image, FULL_OS_SETTINGS, "L")


def test_plan_refuses_extra_files_over_boot_files(tmp_path: Path) -> None:
    image = fake_image(tmp_path, netgrub=True)
    with pytest.raises(UsageError, match="already a boot file"):
        plan_pxe(image, FULL_OS_SETTINGS, "L", extra={"/bootx64.efi": b"x"})
    with pytest.raises(UsageError, match="escapes"):
        plan_pxe(image, FULL_OS_SETTINGS, "L", extra={"../x": b"x"})


# ------------------------------------------------------------------------------ livenet network


def fake_dracut(tmp_path: Path, version: str, handlers: dict[str, str], livenet_extra: str = "") -> RootFs:
    root = tmp_path / "dracut-root"
    modules = root / "usr/lib/dracut/modules.d"
    (modules / "90livenet").mkdir(parents=True)
    (modules / "90livenet/parse-livenet.sh").write_text("#!/bin/sh\n" + livenet_extra)
    for module, binary in handlers.items():
        (modules / f"35{module}").mkdir()
        (root / binary).parent.mkdir(parents=True, exist_ok=True)
        (root / binary).write_text("")
    (root / "var/lib/dpkg").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text(f"Package: dracut-core\nVersion: {version}\n\n")
    return RootFs(root)


NETWORKD = {"systemd-networkd": "usr/lib/systemd/systemd-networkd"}


def test_livenet_network_legacy_needs_nothing(tmp_path: Path) -> None:
    handlers = {"network-legacy": "sbin/dhclient", **NETWORKD}
    assert livenet_extra_args(fake_dracut(tmp_path, "059-4", handlers)) == ()


def test_livenet_with_old_networkd_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="systemd-networkd never downloads"):
        livenet_extra_args(fake_dracut(tmp_path, "059-4", NETWORKD))


def test_livenet_with_fixed_networkd(tmp_path: Path) -> None:
    assert livenet_extra_args(fake_dracut(tmp_path, "105-1", NETWORKD)) == ()


def test_livenet_azure_linux_downloader(tmp_path: Path) -> None:
    rootfs = fake_dracut(tmp_path, "102-11.azl3", NETWORKD, "getargbool 0 rd.live.azldownloader\n")
    assert livenet_extra_args(rootfs) == ("rd.live.azldownloader=enable",)


def test_livenet_without_network_module(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no usable network module"):
        livenet_extra_args(fake_dracut(tmp_path, "059-4", {}))


# ------------------------------------------------------------------------------ bundle paths


def test_bundle_paths_stay_inside(tmp_path: Path) -> None:
    bundle = PxeBundle()
    bundle.add("/boot/x", b"x")
    assert PurePosixPath("boot/x") in bundle.files
    for bad in ("../x", "a/../../x", "", "/"):
        with pytest.raises(UsageError):
            bundle.add(bad, b"x")
    with pytest.raises(UsageError, match="relative target"):
        bundle.add("link", Symlink("/etc/passwd"))
    with pytest.raises(UsageError, match="outside"):
        bundle.add("a/link", Symlink("../../x"))
    bundle.add("a/link", Symlink("../boot/x"))
    with pytest.raises(UsageError, match="inside the file"):
        bundle.add("boot/x/y", b"y")


def test_wants_archive() -> None:
    assert wants_archive(Path("a.tar.gz"), None) and wants_archive(Path("A.TGZ"), None)
    assert not wants_archive(Path("out"), None)
    assert wants_archive(Path("out"), True) and not wants_archive(Path("a.tar.gz"), False)


# ------------------------------------------------------------------------------ tar.gz


def sample_bundle(tmp_path: Path) -> PxeBundle:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    initrd = src / "initrd.img"
    initrd.write_bytes(os.urandom(300_000))
    initrd.chmod(0o600)  # as dracut writes it
    bundle = PxeBundle()
    bundle.add("bootx64.efi", b"shim")
    bundle.add("boot/initrd.img", initrd)
    bundle.add("boot/grub2/grub.cfg", b"menuentry x {}\n")
    bundle.add("boot/vmlinuz", Symlink("vmlinuz-6.1"))
    bundle.add("boot/vmlinuz-6.1", b"kernel")
    bundle.add("zz/deep/er/file", b"z")
    return bundle


def expected_content(bundle: PxeBundle) -> dict[str, bytes]:
    out = {}
    for path, source in bundle.files.items():
        if isinstance(source, bytes):
            out[str(path)] = source
        elif isinstance(source, Path):
            out[str(path)] = source.read_bytes()
    return out


def check_tree(root: Path, bundle: PxeBundle) -> None:
    for name, data in expected_content(bundle).items():
        assert (root / name).read_bytes() == data, name
        assert (root / name).stat().st_mode & 0o777 == FILE_MODE, name
    assert os.readlink(root / "boot/vmlinuz") == "vmlinuz-6.1"


def test_tar_gz_properties(tmp_path: Path) -> None:
    bundle = sample_bundle(tmp_path)
    out = bundle.write_tar(tmp_path / "pxe.tar.gz")
    with tarfile.open(out) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == sorted(names, key=lambda n: PurePosixPath(n).parts)
        for m in members:
            assert not m.name.startswith("/") and ".." not in PurePosixPath(m.name).parts
            assert (m.uid, m.gid, m.uname, m.gname) == (0, 0, "root", "root")
        assert {"boot", "boot/grub2", "zz/deep/er"} <= set(names)
        assert names.index("boot") < names.index("boot/grub2") < names.index("boot/grub2/grub.cfg")
        link = tar.getmember("boot/vmlinuz")
        assert link.issym() and link.linkname == "vmlinuz-6.1"
        py = tmp_path / "py"
        tar.extractall(py, filter="data")
    check_tree(py, bundle)
    gnu = tmp_path / "gnu"
    gnu.mkdir()
    subprocess.run(["tar", "-xzf", str(out), "-C", str(gnu)], check=True)
    check_tree(gnu, bundle)
    listing = subprocess.run(["tar", "-tzf", str(out)], check=True, capture_output=True, text=True).stdout
    assert all(not line.startswith("/") for line in listing.splitlines())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_tar_gz_is_reproducible_with_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    bundle = sample_bundle(tmp_path)
    first = bundle.write_tar(tmp_path / "a.tar.gz").read_bytes()
    for source in bundle.files.values():
        if isinstance(source, Path):
            os.utime(source, (1_000_000, 1_000_000))  # source mtimes must not matter
    second = bundle.write_tar(tmp_path / "b.tar.gz").read_bytes()
    assert first == second
    with gzip.open(tmp_path / "a.tar.gz") as gz:
        gz.read(1)
        assert gz.mtime == 1700000000
    with tarfile.open(tmp_path / "a.tar.gz") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


def test_tar_gz_failure_leaves_the_old_archive(tmp_path: Path) -> None:
    out = tmp_path / "pxe.tar.gz"
    out.write_bytes(b"old")
    bundle = sample_bundle(tmp_path)
    bundle.add("missing", tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError):
        bundle.write_tar(out)
    assert out.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pxe.tar.gz", "src"]


def test_tar_gz_refuses_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="directory"):
        sample_bundle(tmp_path).write_tar(tmp_path)


# ------------------------------------------------------------------------------ folder output


def test_folder_created_and_written(tmp_path: Path) -> None:
    bundle = sample_bundle(tmp_path)
    out = bundle.write(tmp_path / "tftp")
    check_tree(out, bundle)
    assert (tmp_path / "src/initrd.img").stat().st_mode & 0o777 == 0o600, "the source was changed"
    assert not any(p.name.startswith(WORK_PREFIX) for p in out.iterdir())


def test_folder_non_empty_is_refused_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UsageError, match="not empty"):
        sample_bundle(tmp_path).write(out)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_folder_overwrite_replaces_contents_but_keeps_the_directory(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    (out / "old/sub").mkdir(parents=True)
    (out / "old/sub/f").write_text("old")
    (out / "bootx64.efi").write_text("old shim")
    (out / "dangling").symlink_to("nowhere")
    inode = out.stat().st_ino
    bundle = sample_bundle(tmp_path)
    bundle.write(out, overwrite=True)
    assert out.stat().st_ino == inode
    assert not (out / "old").exists() and not (out / "dangling").is_symlink()
    check_tree(out, bundle)
    assert sorted(p.name for p in out.iterdir()) == ["boot", "bootx64.efi", "zz"]


def test_folder_failed_overwrite_keeps_old_contents(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    bundle = sample_bundle(tmp_path)
    bundle.add("missing", tmp_path / "does-not-exist")
    with pytest.raises(FileNotFoundError):
        bundle.write(out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_folder_output_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        sample_bundle(tmp_path).write(tmp_path / "file")


def test_folder_links_only_scratch_files(tmp_path: Path) -> None:
    bundle = sample_bundle(tmp_path)
    out = bundle.write(tmp_path / "linked", link_from=tmp_path / "src")
    assert (out / "boot/initrd.img").stat().st_ino == (tmp_path / "src/initrd.img").stat().st_ino
    shutil.rmtree(out)
    out = bundle.write(tmp_path / "copied")
    assert (out / "boot/initrd.img").stat().st_ino != (tmp_path / "src/initrd.img").stat().st_ino


# ------------------------------------------------------------------------------ write_pxe checks


def unopened(mode: InitramfsMode) -> LiveOS:
    """A LiveOS whose image must never be touched: the checks below run before any build."""
    return LiveOS(cast(Any, None), LiveSettings(mode=mode))


def test_write_pxe_validates_before_building(tmp_path: Path) -> None:
    out = tmp_path / "tftp"
    with pytest.raises(UsageError, match="needs the URL"):
        unopened(BOOTSTRAP).write_pxe(out)
    with pytest.raises(UsageError, match="full-os"):
        unopened(FULL_OS).write_pxe(out, base_url="http://h/")
    with pytest.raises(UsageError, match="unsupported scheme"):
        unopened(BOOTSTRAP).write_pxe(out, file_url="file:///x.iso")
    assert not out.exists()
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        unopened(BOOTSTRAP).write_pxe(out, base_url="http://h/")
    with pytest.raises(UsageError, match="is a directory"):
        unopened(BOOTSTRAP).write_pxe(out, base_url="http://h/", archive=True)
    assert [p.name for p in tmp_path.iterdir()] == ["tftp"]
