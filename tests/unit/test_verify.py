"""verify and inspect without building media: the pure parts (grub references, the El Torito
catalog, the hybrid partition tables, reports), the media readers on small hand-made PXE folders
and archives (hostile ones too), and the command line of ``inspect``/``verify``/``boot``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, CdRom, Disk, PxeBoot
from liveos.cli import _boot_config, _parser, main
from liveos.cpio.writer import write_newc
from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.image.isofs import EntryKind
from liveos.inspection import (
    ArchiveMedia,
    FolderMedia,
    GrubFile,
    MediaInfo,
    MediaKind,
    describe_media,
    inspect,
    media_kind,
    open_media,
)
from liveos.iso.hybrid import Extent, make_hybrid
from liveos.settings import Compression, InitramfsMode
from liveos.state import MediaState, SourceDigest
from liveos.verification import (
    Check,
    CheckKind,
    VerifyReport,
    _efi_entry,
    _references,
    _search_label,
    _table_problems,
    verify,
)

KERNEL = "/boot/vmlinuz-6.1"
INITRD = "/boot/initrd.img"
MAIN_CFG = (
    "set bootprefix=/boot\n"
    "menuentry 'Live' {\n"
    "\tlinux $bootprefix/vmlinuz-6.1 ro console=ttyS0\n"
    "\tinitrd $bootprefix/initrd.img\n"
    "}\n"
)
REDIRECTOR = "set prefix=($root)/boot/grub2\nconfigfile $prefix/grub.cfg\n"


def references(text: str, env: dict[str, str] | None = None) -> list[tuple[str, str | None]]:
    return _references(GrubFile("/grub.cfg", GrubConfig.parse(text, "/grub.cfg"), env or {}))


# ------------------------------------------------------------------------------ grub references


def test_references_follow_variables_and_drop_the_device() -> None:
    assert references(MAIN_CFG) == [("linux", KERNEL), ("initrd", INITRD)]
    assert references(REDIRECTOR) == [("configfile", "/boot/grub2/grub.cfg")]


def test_references_of_every_loading_command() -> None:
    text = (
        "initrd /a.img /b.img\n"
        "chainloader --force /EFI/BOOT/grubx64.efi\n"
        "source /extra.cfg\n"
        "linuxefi (hd0,gpt2)/vmlinuz quiet\n"
        "echo /not/a/file\n"
    )
    assert references(text) == [
        ("initrd", "/a.img"),
        ("initrd", "/b.img"),
        ("chainloader", "/EFI/BOOT/grubx64.efi"),
        ("source", "/extra.cfg"),
        ("linuxefi", "/vmlinuz"),
    ]


def test_a_path_with_an_unknown_variable_is_reported_unresolved() -> None:
    assert references("linux $nowhere/vmlinuz\n") == [("linux", None)]
    assert references("linux $kdir/vmlinuz\n", {"kdir": "/boot"}) == [("linux", "/boot/vmlinuz")]


def test_a_doubling_variable_stops_being_followed() -> None:
    text = "set a=xxxxxxxxxxxxxxxx\n" + "set a=$a$a\n" * 20 + "linux /$a/vmlinuz\n"
    assert references(text) == [("linux", None)]


def test_search_labels() -> None:
    assert _search_label("search", ["--no-floppy", "--set=root", "--label", "LIVE"]) == "LIVE"
    assert _search_label("search", ["-l", "LIVE"]) == "LIVE"
    assert _search_label("search.fs_label", ["LIVE", "root"]) == "LIVE"
    assert _search_label("search", ["--fs-uuid", "1234"]) is None


# ------------------------------------------------------------------------------ El Torito catalog


def catalog(platform: int, sections: tuple[tuple[int, list[bytes]], ...] = ()) -> bytes:
    validation = bytearray(32)
    validation[0], validation[1] = 1, platform
    validation[30:32] = b"\x55\xaa"
    checksum = -sum(struct.unpack("<16H", bytes(validation))) & 0xFFFF
    validation[28:30] = struct.pack("<H", checksum)
    initial = bytes([0x88, 0]) + b"\0" * 4 + struct.pack("<HI", 8, 100) + b"\0" * 20
    out = bytes(validation) + initial
    for index, (section_platform, entries) in enumerate(sections):
        last = index == len(sections) - 1
        out += (
            bytes([0x91 if last else 0x90, section_platform]) + struct.pack("<H", len(entries)) + b"\0" * 28
        )
        out += b"".join(entries)
    return out.ljust(2048, b"\0")


def entry(rba: int, sectors: int, bootable: bool = True) -> bytes:
    return bytes([0x88 if bootable else 0, 0]) + b"\0" * 4 + struct.pack("<HI", sectors, rba) + b"\0" * 20


def test_the_efi_entry_is_the_initial_one_or_in_a_section() -> None:
    assert _efi_entry(catalog(0xEF)) == entry(100, 8)
    bios_then_efi = catalog(0x00, ((0xEF, [entry(7, 4, bootable=False), entry(9, 16)]),))
    assert _efi_entry(bios_then_efi) == entry(9, 16)
    assert _efi_entry(catalog(0x00)) is None
    assert _efi_entry(catalog(0x00, ((0x00, [entry(9, 16)]),))) is None


# ------------------------------------------------------------------------------ hybrid tables


ESP = Extent(64 * 2048, 40 * 2048)


def hybrid_image() -> io.BytesIO:
    """A 1 MiB "ISO": an empty system area and a primary volume descriptor, then make_hybrid."""
    data = bytearray(1024 * 1024)
    data[16 * 2048 : 16 * 2048 + 6] = b"\x01CD001"
    f = io.BytesIO(bytes(data))
    make_hybrid(f, iso_size=len(data), esp=ESP)
    return f


def problems_of(f: io.BytesIO | bytes, esp: Extent = ESP) -> list[str]:
    data = f if isinstance(f, bytes) else f.getvalue()
    return _table_problems(io.BytesIO(data), data[: 34 * 512], len(data), (esp.offset, esp.size))


def flipped(f: io.BytesIO, offset: int) -> io.BytesIO:
    data = bytearray(f.getvalue())
    data[offset] ^= 0xFF
    return io.BytesIO(bytes(data))


def test_good_hybrid_tables_have_no_problems() -> None:
    assert problems_of(hybrid_image()) == []


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (lambda size: 510, "no MBR signature"),
        (lambda size: 446 + 4, "protective"),
        (lambda size: 512 + 24, "primary GPT header"),  # its CRC no longer matches
        (lambda size: 1024 + 40, "primary GPT partition entries have a bad CRC"),
        (lambda size: size - 512 + 24, "backup GPT header"),
        (lambda size: size - 33 * 512 + 40, "backup GPT partition entries have a bad CRC"),
    ],
    ids=[
        "mbr-signature",
        "mbr-type",
        "primary-header",
        "primary-entries",
        "backup-header",
        "backup-entries",
    ],
)
def test_each_damaged_table_is_named(where: Callable[[int], int], expected: str) -> None:
    image = hybrid_image()
    size = len(image.getvalue())
    problems = problems_of(flipped(image, where(size)))
    assert any(expected in p for p in problems), problems


def test_a_truncated_hybrid_iso_is_caught() -> None:
    data = hybrid_image().getvalue()[:-2048]
    problems = problems_of(data)
    assert any("last LBA" in p for p in problems), problems


def test_an_esp_that_is_not_the_el_torito_image_is_caught() -> None:
    data = hybrid_image().getvalue()
    problems = problems_of(data, Extent(ESP.offset + 2048, ESP.size))
    assert any("is not the El Torito image" in p for p in problems), problems


# ------------------------------------------------------------------------------ reports


def test_a_report_is_ok_only_when_every_check_is() -> None:
    good = Check(CheckKind.STATE, True, "fine")
    bad = Check(CheckKind.LABELS, False, "labels differ", "/live.iso")
    report = VerifyReport(Path("/x.iso"), MediaKind.ISO, (good, bad))
    assert not report.ok and report.failures == (bad,)
    assert report.check(CheckKind.LABELS, "/live.iso") is bad and bad.name == "live.iso: labels"
    assert "FAIL  live.iso: labels: labels differ" in report.describe()
    assert json.loads(json.dumps(report.to_dict()))["ok"] is False
    assert "labels differ" in report._repr_html_() and "failed: live.iso: labels" in repr(report)
    assert VerifyReport(Path("/x.iso"), MediaKind.ISO, (good,)).ok


# ------------------------------------------------------------------------------ a hand-made PXE folder


def cpio(tmp: Path, files: dict[str, str]) -> bytes:
    tree = tmp / "cpio-tree"
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    out = tmp / "initrd.cpio"
    write_newc(tree, out, compression=Compression.ZSTD, level=1)
    return out.read_bytes()


def state(mode: InitramfsMode = InitramfsMode.FULL_OS, label: str = "PXELIVE") -> str:
    return MediaState(
        "0.1.0", mode, label, (), (), SourceDigest("sha256-size-head-tail-1mib", 1, "0" * 64), 0
    ).render()


def pxe_folder(tmp: Path, *, mode: InitramfsMode = InitramfsMode.FULL_OS) -> Path:
    """A full-os PXE folder as liveos lays it out (tiny stand-ins for the binaries)."""
    root = tmp / "tftp"
    files: dict[str, bytes | str] = {
        "bootx64.efi": b"MZ shim",
        "grubx64.efi": b"MZ grub",
        "grub.cfg": REDIRECTOR,
        "boot/grub2/grub.cfg": MAIN_CFG,
        "boot/vmlinuz-6.1": b"kernel",
        "liveos/state.json": state(mode),
    }
    files["boot/initrd.img"] = cpio(tmp, {"init": "#!/bin/sh\n", "etc/os-release": "ID=x\n"})
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def test_a_good_full_os_folder_passes_every_check(tmp_path: Path) -> None:
    report = verify(pxe_folder(tmp_path))
    assert report.ok, report.describe()
    assert {c.kind for c in report.checks} == set(CheckKind) - {
        CheckKind.EFI_IMAGE,
        CheckKind.BIOS_BOOT,
        CheckKind.PARTITION_TABLES,
        CheckKind.MD5,
    }
    assert "3 file references" in report.check(CheckKind.GRUB_REFERENCES).detail


def failed(report: VerifyReport) -> set[CheckKind]:
    return {c.kind for c in report.failures}


def test_a_missing_kernel_fails_only_the_references(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    (folder / "boot/vmlinuz-6.1").unlink()
    report = verify(folder)
    assert failed(report) == {CheckKind.GRUB_REFERENCES}, report.describe()
    assert "linux /boot/vmlinuz-6.1" in report.check(CheckKind.GRUB_REFERENCES).detail


def test_a_corrupt_state_file_fails_only_the_state(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    (folder / "liveos/state.json").write_text('{"schema": 1, "mode": "full-os"')
    report = verify(folder)
    assert failed(report) == {CheckKind.STATE}, report.describe()
    assert "not valid JSON" in report.check(CheckKind.STATE).detail


def test_a_truncated_cpio_fails_only_the_root_image(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    initrd = folder / "boot/initrd.img"
    initrd.write_bytes(initrd.read_bytes()[:-20])
    report = verify(folder)
    assert failed(report) == {CheckKind.ROOT_IMAGE}, report.describe()


def test_a_bootstrap_initrd_without_the_live_modules_fails(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    (folder / "liveos/state.json").write_text(state(InitramfsMode.BOOTSTRAP))
    good = {"init": "", "usr/sbin/dmsquash-live-root": "", "usr/sbin/livenetroot": ""}
    (folder / "boot/initrd.img").write_bytes(cpio(tmp_path / "a", good))
    report = verify(folder)
    assert report.check(CheckKind.INITRD_MODULES).ok, report.describe()
    del good["usr/sbin/livenetroot"]
    (folder / "boot/initrd.img").write_bytes(cpio(tmp_path / "b", good))
    check = verify(folder).check(CheckKind.INITRD_MODULES)
    assert not check.ok and "livenet" in check.detail and "dmsquash-live," not in check.detail
    listed = {**good, "usr/sbin/livenetroot": "", "usr/lib/dracut/modules.txt": "base\nlivenet\n"}
    (folder / "boot/initrd.img").write_bytes(cpio(tmp_path / "c", listed))
    check = verify(folder).check(CheckKind.INITRD_MODULES)
    assert not check.ok and "dmsquash-live" in check.detail  # modules.txt does not list it


def test_a_search_label_that_differs_from_the_state_fails_the_labels(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    (folder / "grub.cfg").write_text("search --no-floppy --set=root --label OTHER\n" + REDIRECTOR)
    report = verify(folder)
    assert failed(report) == {CheckKind.LABELS}, report.describe()
    assert "'OTHER'" in report.check(CheckKind.LABELS).detail


def test_inspect_describes_a_folder(tmp_path: Path) -> None:
    info = inspect(pxe_folder(tmp_path))
    assert isinstance(info, MediaInfo) and info.kind is MediaKind.PXE_FOLDER
    assert info.label == "PXELIVE" and info.mode is InitramfsMode.FULL_OS
    (entry,) = info.entries
    assert (entry.title, entry.kernel, entry.initrds) == ("Live", KERNEL, (INITRD,))
    assert entry.cmdline == ("ro", "console=ttyS0")
    assert {f.path for f in info.files if f.kind is EntryKind.FILE} >= {KERNEL, INITRD, "/bootx64.efi"}
    assert json.loads(json.dumps(info.to_dict()))["label"] == "PXELIVE"
    assert "linux  /boot/vmlinuz-6.1 ro console=ttyS0" in info.describe()
    assert "<table" in info._repr_html_()
    assert "label=PXELIVE mode=full-os, 1 boot entries" in repr(info)


def test_paths_resolve_through_symlinks_inside_the_medium_only(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    os.symlink("boot", folder / "b")
    os.symlink("/boot/vmlinuz-6.1", folder / "boot/absolute")
    os.symlink("loop", folder / "loop")
    with FolderMedia(folder) as media:
        assert media.is_file("/b/vmlinuz-6.1") and media.is_file("/b/../b/absolute")
        assert media.resolve("/b/absolute") == media.resolve(KERNEL)
        assert media.resolve("/../../boot/vmlinuz-6.1") == media.resolve(KERNEL)  # .. stops at the top
        assert media.resolve("/loop") is None and not media.is_file("/boot/vmlinuz-6.1/x")
        assert media.resolve("/boot/.." * 3000 + KERNEL) == media.resolve(KERNEL)  # no recursion


# ------------------------------------------------------------------------------ hostile folders and archives


def test_a_symlink_out_of_the_folder_is_not_followed(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    secret = tmp_path / "secret"
    secret.write_text("host file")
    (folder / "boot/vmlinuz-6.1").unlink()
    os.symlink(os.path.relpath(secret, folder / "boot"), folder / "boot/vmlinuz-6.1")
    os.symlink("vmlinuz-6.1", folder / "boot/alias")
    with FolderMedia(folder) as media:
        assert not media.is_file(KERNEL) and not media.is_file("/boot/alias")
        assert media.entries()[KERNEL].kind is EntryKind.SYMLINK
        with pytest.raises(ImageError, match="missing"):
            media.read_bytes(KERNEL)
    assert not verify(folder).check(CheckKind.GRUB_REFERENCES).ok


def tar_gz(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (member("../escape"), "'..'"),
        (member("/etc/passwd"), "absolute"),
        (member("link", tarfile.SYMTYPE, "../../etc/passwd"), "outside the bundle"),
        (member("abs", tarfile.SYMTYPE, "/etc/passwd"), "absolute"),
        (member("dev", tarfile.CHRTYPE), "neither a file"),
    ],
    ids=["dotdot", "absolute", "symlink-out", "symlink-absolute", "device"],
)
def test_hostile_archives_are_refused_before_anything_is_written(
    tmp_path: Path, bad: tarfile.TarInfo, message: str
) -> None:
    archive = tar_gz(tmp_path / "pxe.tar.gz", [(member("bootx64.efi"), b"MZ"), (bad, b"x")])
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(ImageError, match=message):
        ArchiveMedia(archive, workdir=work)
    assert list(work.iterdir()) == []


def test_an_archive_reads_like_its_folder(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    archive = tmp_path / "pxe.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    assert media_kind(archive) is MediaKind.PXE_ARCHIVE
    work = tmp_path / "work"
    work.mkdir()
    with open_media(archive, workdir=work) as media:
        assert media.kind is MediaKind.PXE_ARCHIVE and media.path == archive
        assert describe_media(media).entries[0].kernel == KERNEL
    assert list(work.iterdir()) == [], "the scratch copy was not removed"
    assert verify(archive, workdir=work).ok


def test_a_truncated_archive_is_an_image_error(tmp_path: Path) -> None:
    folder = pxe_folder(tmp_path)
    archive = tmp_path / "pxe.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=".")
    archive.write_bytes(archive.read_bytes()[:-100])
    with pytest.raises(ImageError, match="cannot read the PXE archive"):
        verify(archive)


def test_what_is_not_media_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        verify(tmp_path / "missing.iso")
    junk = tmp_path / "junk.img"
    junk.write_bytes(b"\0" * 70000)
    assert media_kind(junk) is MediaKind.DISK
    with pytest.raises(UsageError, match="not a liveos ISO nor a PXE bundle"):
        verify(junk)


# ------------------------------------------------------------------------------ the command line


def test_boot_arguments() -> None:
    args = _parser().parse_args(["boot", "live.iso", "--as", "usb", "--timeout", "60", "--memory", "1024"])
    assert (args.path, args.attach, args.timeout, args.memory) == (Path("live.iso"), "usb", 60.0, 1024)
    args = _parser().parse_args(["boot", "pxe/"])
    assert (args.attach, args.marker, args.timeout, args.memory) == (None, "login:", None, None)
    with pytest.raises(SystemExit):
        _parser().parse_args(["boot", "live.iso", "--as", "floppy"])


def boot_config(*argv: str) -> BootConfig:
    with contextlib.ExitStack() as stack:
        return _boot_config(_parser().parse_args(["boot", *argv]), stack)


def test_boot_picks_the_media_from_the_content(tmp_path: Path) -> None:
    iso = tmp_path / "named.img"  # the content decides, not the name
    iso.write_bytes(bytes(0x8001) + b"CD001" + bytes(4000))
    cd = boot_config(str(iso))
    assert cd.media == CdRom(iso) and cd.timeout == 300 and cd.memory_mib == 2048
    usb = boot_config(str(iso), "--as", "usb", "--memory", "1024")
    assert usb.media == Disk(iso, format="raw") and usb.memory_mib == 1024
    folder = pxe_folder(tmp_path)
    pxe = boot_config(str(folder), "--marker", "READY")
    assert pxe.media == PxeBoot(folder, "bootx64.efi") and pxe.http_root is None
    assert (pxe.marker, pxe.timeout) == ("READY", 500)


def test_boot_refuses_what_it_cannot_boot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", str(tmp_path / "missing.iso")]) == 2
    assert "does not exist" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["boot", str(empty)]) == 2
    assert "is not a PXE bundle: no bootx64.efi" in capsys.readouterr().err
    assert main(["boot", str(pxe_folder(tmp_path)), "--as", "usb"]) == 2
    assert "--as usb applies to an ISO" in capsys.readouterr().err


def test_verify_and_inspect_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = pxe_folder(tmp_path)
    assert main(["verify", str(folder)]) == 0
    assert ": OK" in capsys.readouterr().out
    assert main(["inspect", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["entries"][0]["kernel"] == KERNEL
    (folder / "boot/vmlinuz-6.1").unlink()
    assert main(["verify", str(folder), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["grub-references"]
    assert main(["verify", str(tmp_path / "missing")]) == 2
