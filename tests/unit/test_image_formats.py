"""Format detection reads content, never names; the raw view of every format has the same bytes.

The raw view of qcow2/vhd/vhdx is a FUSE export (qemu-storage-daemon): those tests need root; every
one of them checks that no daemon, mount or file is left behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import struct
import subprocess
from pathlib import Path

import pytest

from liveos.errors import HostError, ImageError, UsageError
from liveos.host import export
from liveos.host.export import fuse_export
from liveos.image import formats
from liveos.image.formats import VHD_FOOTER_SIZE, DiskFormat, RawBacking, VhdFooter, detect, raw_view
from tests.imagekit import PartSpec, convert, make_disk, sh, sha256, write_tree

FORMATS = ["qcow2", "vhd", "vhd-fixed", "vhdx"]


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the raw view of qcow2/vhd/vhdx is a FUSE mount (root, private mount namespace)")


def daemons_of(workdir: Path) -> list[int]:
    """Live qemu-storage-daemon / qemu-nbd processes whose command line names ``workdir``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes() if entry.isdigit() else b""
        except OSError:
            continue
        argv0 = cmdline.split(b"\0", 1)[0]
        if argv0.endswith((b"qemu-storage-daemon", b"qemu-nbd")) and os.fsencode(workdir) in cmdline:
            found.append(int(entry))
    return found


def fuse_mounts(below: Path) -> int:
    """FUSE mounts at or below ``below`` in this thread's mount namespace."""
    count = 0
    with open("/proc/thread-self/mountinfo") as f:
        for line in f:
            fields = line.split()
            fstype = fields[fields.index("-") + 1]
            if fstype.startswith("fuse") and (fields[4] == str(below) or fields[4].startswith(f"{below}/")):
                count += 1
    return count


@pytest.fixture(scope="module")
def disk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small GPT disk with one ext4 partition holding a file (no root needed)."""
    work = tmp_path_factory.mktemp("formats")
    tree = write_tree(work / "tree", {"/hello": "hello\n"})
    return make_disk(work / "disk.raw", [PartSpec(8, "ext4", tree)]).path


@pytest.mark.parametrize("fmt", ["raw", *FORMATS])
def test_detect_by_content_not_name(disk: Path, fmt: str, tmp_path: Path) -> None:
    source = disk if fmt == "raw" else convert(disk, fmt)
    misnamed = shutil.copyfile(source, tmp_path / "image.iso")  # the name lies; content decides
    info = detect(misnamed)
    assert info.format == DiskFormat(fmt)
    assert info.virtual_size == disk.stat().st_size


@pytest.mark.parametrize("fmt", ["raw", *FORMATS])
def test_raw_view_has_the_disk_bytes_and_input_is_untouched(disk: Path, fmt: str, tmp_path: Path) -> None:
    source = disk if fmt == "raw" else convert(disk, fmt)
    before = sha256(source)
    info = detect(source)
    if not info.format.in_place:
        needs_root()
    with raw_view(info, tmp_path) as raw:
        if info.format.in_place:
            assert raw.backing is RawBacking.INPUT
            assert raw.path == source.resolve()
        else:
            assert raw.backing is RawBacking.FUSE
            assert raw.path.parent.parent == tmp_path
            assert fuse_mounts(raw.path) == 1
            assert daemons_of(tmp_path), "no qemu-storage-daemon serves the view"
            assert sha256(raw.path) == sha256(disk)
        assert raw.size == disk.stat().st_size
    assert sha256(source) == before
    assert list(tmp_path.iterdir()) == [], "the export's files were not removed"
    assert daemons_of(tmp_path) == [] and fuse_mounts(tmp_path) == 0


def test_iso_is_detected_and_is_not_a_raw_disk(tmp_path: Path) -> None:
    write_tree(tmp_path / "tree", {"/a.txt": "a\n"})
    iso = tmp_path / "disk.img"  # not named .iso on purpose
    sh("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, tmp_path / "tree")
    info = detect(iso)
    assert info.format is DiskFormat.ISO
    with pytest.raises(UsageError, match="not a disk image"), raw_view(info, tmp_path):
        pass


def test_empty_file_is_an_image_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.qcow2"
    empty.touch()
    with pytest.raises(ImageError, match="empty"):
        detect(empty)


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        detect(tmp_path / "nope.raw")


def test_truncated_qcow2_is_an_image_error(disk: Path, tmp_path: Path) -> None:
    qcow2 = shutil.copyfile(convert(disk, "qcow2"), tmp_path / "cut.qcow2")
    with qcow2.open("r+b") as f:
        f.truncate(qcow2.stat().st_size // 2)
    with pytest.raises(ImageError, match=r"cut\.qcow2"):
        detect(qcow2)  # qemu-img check: read through the export, a truncated qcow2 reads as zeros
    assert list(tmp_path.iterdir()) == [qcow2]


def test_qcow2_header_only_is_an_image_error(disk: Path, tmp_path: Path) -> None:
    qcow2 = shutil.copyfile(convert(disk, "qcow2"), tmp_path / "head.qcow2")
    with qcow2.open("r+b") as f:
        f.truncate(64)
    with pytest.raises(ImageError, match="qemu-img could not open it"):
        detect(qcow2)


def test_backing_file_is_refused(disk: Path, tmp_path: Path) -> None:
    overlay = tmp_path / "overlay.qcow2"
    sh("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", disk, overlay)
    with pytest.raises(ImageError, match="backing file"):
        detect(overlay)


def _patch_creator(vhd: Path, creator: bytes, chs: tuple[int, int, int], at: int | None = None) -> None:
    """Rewrite the footer's creator app and geometry, fix its checksum (like a Virtual PC image).

    ``at``: where the footer is (default: the end; a dynamic VHD has a copy at offset 0 too)."""
    where = vhd.stat().st_size - VHD_FOOTER_SIZE if at is None else at
    with vhd.open("r+b") as f:
        f.seek(where)
        footer = bytearray(f.read(VHD_FOOTER_SIZE))
        footer[28:32] = creator
        struct.pack_into(">HBB", footer, 56, *chs)
        footer[64:68] = b"\0\0\0\0"
        struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
        f.seek(where)
        f.write(footer)


def test_geometry_sized_vhd_is_rejected(tmp_path: Path) -> None:
    odd = tmp_path / "odd.raw"
    sh("truncate", "-s", str(10 * 1024 * 1024 + 3 * 512), odd)  # not a whole number of CHS cylinders
    vhd = convert(odd, "vhd-fixed")
    assert detect(vhd).format is DiskFormat.VHD_FIXED  # force_size=on: creator "qem2", current size
    _patch_creator(vhd, b"vpc ", (20, 16, 63))  # 20*16*63 sectors = 10321920 bytes, not 10487296
    footer = VhdFooter.parse(vhd.read_bytes()[-VHD_FOOTER_SIZE:])
    assert footer is not None and footer.uses_geometry_size
    with pytest.raises(ImageError, match="Disk Geometry"):
        detect(vhd)


def test_fixed_vhd_with_bad_checksum_is_plain_raw(tmp_path: Path) -> None:
    data = tmp_path / "data.raw"
    sh("truncate", "-s", "4M", data)
    vhd = convert(data, "vhd-fixed")
    with vhd.open("r+b") as f:
        f.seek(-VHD_FOOTER_SIZE + 64, 2)
        f.write(b"\xff\xff\xff\xff")
    info = detect(vhd)
    assert info.format is DiskFormat.RAW
    assert info.virtual_size == vhd.stat().st_size


def _unknown_creator_vhd(tmp_path: Path) -> tuple[Path, Path]:
    """A dynamic VHD whose creator qemu does not know and whose CHS size is below its current size
    (qemu sizes those by CHS unless ``force_size_calc=current_size``), and the raw disk it holds."""
    tree = write_tree(tmp_path / "tree", {"/hello": "hello\n"})
    odd = make_disk(tmp_path / "odd.raw", [PartSpec(8, "ext4", tree)]).path
    with odd.open("r+b") as f:  # not a whole number of CHS cylinders: the GPT backup is past CHS size
        f.truncate(odd.stat().st_size + 3 * 512)
    sh("sgdisk", "-e", odd)
    vhd = convert(odd, "vhd")
    for at in (0, vhd.stat().st_size - VHD_FOOTER_SIZE):  # the copy at the start and the footer
        _patch_creator(vhd, b"vbox", (20, 16, 63), at=at)
    return vhd, odd


@pytest.mark.root
def test_vhd_is_sized_by_current_size_like_hyper_v(tmp_path: Path) -> None:
    needs_root()
    vhd, odd = _unknown_creator_vhd(tmp_path)
    info = detect(vhd)
    footer = VhdFooter.parse(vhd.read_bytes()[-VHD_FOOTER_SIZE:])
    assert footer is not None and footer.current_size == odd.stat().st_size
    assert info.virtual_size == 20 * 16 * 63 * 512 != footer.current_size  # qemu's default: CHS
    work = tmp_path / "work"
    work.mkdir()
    with raw_view(info, work) as raw:
        assert raw.size == odd.stat().st_size
        assert sha256(raw.path) == sha256(odd)
        assert len(daemons_of(work)) == 2  # qemu-nbd --image-opts ...,force_size_calc=current_size
    assert list(work.iterdir()) == [] and daemons_of(work) == []
    deep = work / ("d" * 100)  # no room for qemu-nbd's Unix socket below it
    deep.mkdir()
    with pytest.raises(UsageError, match="too deep"), raw_view(info, deep):
        pass
    assert list(deep.iterdir()) == []


@pytest.mark.root
def test_daemon_refusing_the_image_is_an_image_error_naming_it(disk: Path, tmp_path: Path) -> None:
    needs_root()
    lying = formats.ImageInfo(disk, DiskFormat.QCOW2, disk.stat().st_size)  # a raw file "as qcow2"
    work = tmp_path / "work"
    work.mkdir()
    refused = r"could not be opened by qemu-storage-daemon.*qcow2"
    with pytest.raises(ImageError, match=refused) as exc, raw_view(lying, work):
        pass
    assert str(disk) in str(exc.value) and exc.value.hint
    assert list(work.iterdir()) == [] and daemons_of(work) == []


@pytest.mark.root
def test_export_not_ready_in_time_is_a_host_error(disk: Path, tmp_path: Path) -> None:
    needs_root()
    with (
        pytest.raises(HostError, match="did not get ready within 0 s"),
        fuse_export(convert(disk, "qcow2"), "qcow2", tmp_path, timeout=0),
    ):
        pass
    assert list(tmp_path.iterdir()) == [] and daemons_of(tmp_path) == []


@pytest.mark.root
def test_no_fuse_is_a_host_error(disk: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    needs_root()
    monkeypatch.setattr(export, "FUSE_DEVICE", tmp_path / "no-fuse")
    with (
        pytest.raises(HostError, match="no FUSE support"),
        raw_view(detect(convert(disk, "vhdx")), tmp_path),
    ):
        pass
    assert list(tmp_path.iterdir()) == []


@pytest.mark.root
def test_exception_in_the_block_leaves_nothing(disk: Path, tmp_path: Path) -> None:
    needs_root()

    class Boom(Exception):
        pass

    with pytest.raises(Boom), raw_view(detect(convert(disk, "qcow2")), tmp_path) as raw:
        assert fuse_mounts(raw.path) == 1
        raise Boom
    assert list(tmp_path.iterdir()) == [] and daemons_of(tmp_path) == [] and fuse_mounts(tmp_path) == 0


@pytest.mark.root
def test_read_after_the_daemon_died_is_an_image_error(disk: Path, tmp_path: Path) -> None:
    needs_root()
    qcow2 = convert(disk, "qcow2")
    with (
        pytest.raises(ImageError, match=r"could not be read.*exited") as exc,
        raw_view(detect(qcow2), tmp_path) as raw,
    ):
        for pid in daemons_of(tmp_path):
            os.kill(pid, signal.SIGKILL)
        raw.path.read_bytes()
    assert str(qcow2) in str(exc.value)
    assert list(tmp_path.iterdir()) == [] and fuse_mounts(tmp_path) == 0


@pytest.mark.root
def test_other_os_errors_pass_through(disk: Path, tmp_path: Path) -> None:
    needs_root()
    elsewhere = OSError(errno.EIO, "Input/output error", "/somewhere/else")
    with pytest.raises(OSError) as exc, raw_view(detect(convert(disk, "qcow2")), tmp_path):
        raise elsewhere
    assert exc.value is elsewhere


def test_qemu_img_is_what_reads_formats() -> None:
    out = subprocess.run(["qemu-img", "--help"], capture_output=True, text=True, check=True).stdout
    for driver in ("qcow2", "vpc", "vhdx", "raw"):
        assert driver in out


# -- hostile bytes (no qemu-img: the pure parsing) ---------------------------------------------
def _footer(patch: dict[int, bytes]) -> bytes:
    footer = bytearray(VHD_FOOTER_SIZE)
    footer[:8] = b"conectix"
    for offset, value in patch.items():
        footer[offset : offset + len(value)] = value
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


def test_vhd_footer_parse_takes_any_bytes() -> None:
    assert VhdFooter.parse(b"") is None
    assert VhdFooter.parse(b"conectix") is None  # short
    assert VhdFooter.parse(b"conectix" + bytes(504)) is None  # checksum wrong
    extreme = _footer({28: b"\xff" * 4, 48: b"\xff" * 8, 56: b"\xff" * 8})
    footer = VhdFooter.parse(extreme + b"trailing bytes are ignored")
    assert footer is not None
    assert (footer.current_size, footer.cylinders, footer.heads, footer.sectors) == (
        2**64 - 1,
        65535,
        255,
        255,
    )
    assert footer.geometry_size == 65535 * 255 * 255 * 512 and footer.uses_geometry_size is False
    vpc = VhdFooter.parse(_footer({28: b"vpc ", 56: struct.pack(">HBB", 0, 0, 0)}))
    assert vpc is not None and vpc.geometry_size == 0 and vpc.uses_geometry_size is False


@pytest.mark.parametrize(
    "stdout",
    [b"", b"not json", b"[1, 2]", b"\xff\xfe", b"[" * 100_000, b'{"format": "raw", "virtual-size": "12"}',
     b'{"format": "raw", "virtual-size": true}', b'{"format": "raw", "virtual-size": -5}'],
)  # fmt: skip
def test_odd_qemu_img_reports_are_image_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stdout: bytes
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(4096))

    def fake_run(argv: list[object], **_: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.CompletedProcess([str(a) for a in argv], 0, stdout, b"")

    monkeypatch.setattr(formats, "run", fake_run)
    with pytest.raises(ImageError):
        detect(image)
