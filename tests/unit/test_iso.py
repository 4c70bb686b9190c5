"""IsoWriter, the El Torito EFI image, the USB hybrid GPT and the reader, checked with real tools.

Structure is verified by independent readers (xorriso, bsdtar/libarchive, blkid, sgdisk, sfdisk,
mtools) rather than by pycdlib alone. The boots are in tests/integration/test_iso_boot.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import sys
import time
from pathlib import Path

import pytest

from liveos.atomic import atomic_output
from liveos.confined import check_component
from liveos.errors import ImageError, UsageError
from liveos.image.isofs import EntryKind, IsoReader
from liveos.iso import (
    EfiBootFiles,
    HybridLayout,
    IsoWriter,
    PartitionScheme,
    build_efiboot,
    build_efiboot_image,
)
from liveos.iso.efiboot import image_size
from liveos.run import output, run
from liveos.settings import Arch

ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"


@pytest.fixture
def efi_files(tmp_path: Path) -> EfiBootFiles:
    """Fake shim/grub/MokManager (random bytes; structure tests do not execute them)."""
    src = tmp_path / "efi-src"
    src.mkdir()
    for name, size in (("shimx64.efi", 950_000), ("grubx64.efi", 2_600_000), ("mmx64.efi", 850_000)):
        (src / name).write_bytes(os.urandom(size))
    return EfiBootFiles(
        loader=src / "shimx64.efi",
        grub=src / "grubx64.efi",
        mok_manager=src / "mmx64.efi",
        grub_cfg=b"configfile /boot/grub2/grub.cfg\n",
    )


@pytest.fixture
def source_tree(tmp_path: Path) -> Path:
    """A tree with the awkward cases: long/unicode/colliding names, deep dirs, symlinks, modes."""
    root = tmp_path / "tree"
    (root / "boot" / "grub2").mkdir(parents=True)
    (root / "boot" / "grub2" / "grub.cfg").write_text("search --label LIVEOS\n")
    (root / "liveos").mkdir()
    (root / "liveos" / "rootfs.img").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / ("long-" + "n" * 240 + ".conf")).write_text("long name\n")
    (root / "Ünïcödé – name.txt").write_text("unicode\n")
    (root / "a-b.txt").write_text("dash\n")
    (root / "a_b.txt").write_text("underscore\n")
    (root / "A_B.TXT").write_text("upper\n")
    secret = root / "secret"
    secret.write_text("0600\n")
    secret.chmod(0o600)
    tool = root / "tool.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    deep = root.joinpath(*[f"level{i}.d" for i in range(12)])
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_text("deep\n")
    (root / "rel-link").symlink_to("boot/grub2/grub.cfg")
    (root / "abs-link").symlink_to("/usr/lib/os-release")
    (root / "dangling").symlink_to("does/not/exist")
    (root / "empty-dir").mkdir()
    return root


def expected_entries(root: Path) -> dict[str, tuple[EntryKind, int, str | None]]:
    """What the ISO should hold for ``root``: path -> (kind, mode, symlink target)."""
    result: dict[str, tuple[EntryKind, int, str | None]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(dirpath) / name
            rel = "/" + str(path.relative_to(root))
            st = path.lstat()
            if path.is_symlink():
                result[rel] = (EntryKind.SYMLINK, 0, os.readlink(path))
            elif path.is_dir():
                result[rel] = (EntryKind.DIR, st.st_mode & 0o7777, None)
            else:
                result[rel] = (EntryKind.FILE, st.st_mode & 0o7777, None)
    return result


def build_iso(
    tmp_path: Path, tree: Path, efi_files: EfiBootFiles, **write_args: object
) -> tuple[Path, Path]:
    efiboot = tmp_path / "efiboot.img"
    build_efiboot_image(efiboot, efi_files)
    writer = IsoWriter("LIVEOS")
    writer.add_tree("/", tree)
    writer.add_bytes("/.disk/info", b"liveos\n")
    writer.set_efi_boot("/boot/grub2/efiboot.img", efiboot)
    iso = tmp_path / "live.iso"
    writer.write(iso, **write_args)  # type: ignore[arg-type]
    return iso, efiboot


# -- label ------------------------------------------------------------------------------------
@pytest.mark.parametrize("label", ["", "liveos", "LIVE-OS", "LIVE OS", "A" * 17, "ÄBC"])
def test_invalid_labels_are_usage_errors(label: str) -> None:
    with pytest.raises(UsageError):
        IsoWriter(label)


@pytest.mark.parametrize("label", ["LIVEOS", "A", "AZL_LIVE_2024_01", "0123456789ABCDEF"])
def test_label_is_what_blkid_and_grub_see(tmp_path: Path, label: str) -> None:
    writer = IsoWriter(label)
    writer.add_bytes("/x", b"x")
    iso = tmp_path / "l.iso"
    writer.write(iso, hybrid=False)
    blkid = dict(
        line.split("=", 1)
        for line in output(["blkid", "-p", "-o", "export", iso]).splitlines()
        if "=" in line
    )
    assert blkid["TYPE"] == "iso9660"
    assert blkid["LABEL"] == label
    with IsoReader(iso) as reader:
        assert reader.label == label
        assert reader.joliet_label == label  # grub's search --label reads the Joliet id


# -- EFI boot image ---------------------------------------------------------------------------
def test_efiboot_image_holds_arch_named_files(tmp_path: Path, efi_files: EfiBootFiles) -> None:
    img = tmp_path / "efiboot.img"
    size = build_efiboot_image(img, efi_files)
    assert img.stat().st_size == size and size % 2048 == 0
    listing = output(["mdir", "-b", "-i", img, "::/EFI/BOOT"], env={"MTOOLS_SKIP_CHECK": "1"})
    names = sorted(Path(line).name.lower() for line in listing.split())
    assert names == ["bootx64.efi", "grub.cfg", "grubx64.efi", "mmx64.efi"]
    copied = run(["mtype", "-i", img, "::/EFI/BOOT/bootx64.efi"], env={"MTOOLS_SKIP_CHECK": "1"}).stdout
    assert copied == efi_files.loader.read_bytes()
    info = output(["minfo", "-i", img, "::"], env={"MTOOLS_SKIP_CHECK": "1"})
    assert "FAT32" not in info  # small FAT32 trips mtools' cluster minimum (notes.md)
    payload = sum(p.stat().st_size for p in (efi_files.loader, efi_files.grub, efi_files.mok_manager) if p)
    assert payload < size < payload + 2 * 1024 * 1024


def test_efiboot_image_is_reproducible_with_source_date_epoch(
    tmp_path: Path, efi_files: EfiBootFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    build_efiboot_image(a, efi_files)
    time.sleep(1.1)  # a clock-dependent image would differ now
    build_efiboot_image(b, efi_files)
    assert a.read_bytes() == b.read_bytes()


def test_efiboot_from_a_mapping(tmp_path: Path, efi_files: EfiBootFiles) -> None:
    img = tmp_path / "m.img"
    files: dict[str, Path | bytes] = {
        "EFI/BOOT/bootx64.efi": efi_files.loader,
        "EFI/BOOT/grub.cfg": b"set x=1\n",
        "boot/grub2/x86_64-efi/extra.mod": b"mod",
    }
    assert build_efiboot(files, img) == img
    env = {"MTOOLS_SKIP_CHECK": "1"}
    assert run(["mtype", "-i", img, "::/boot/grub2/x86_64-efi/extra.mod"], env=env).stdout == b"mod"
    assert run(["mtype", "-i", img, "::/EFI/BOOT/grub.cfg"], env=env).stdout == b"set x=1\n"
    with pytest.raises(UsageError, match="bootaa64"):
        build_efiboot(files, tmp_path / "aa.img", arch=Arch.AA64)
    with pytest.raises(UsageError):
        build_efiboot({**files, "../escape": b""}, tmp_path / "bad.img")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["efi-src", "m.img"]


def test_efiboot_image_size_grows_with_content() -> None:
    assert image_size([10]) == 1024 * 1024
    big = image_size([20 * 1024 * 1024])
    assert 20 * 1024 * 1024 < big <= 22 * 1024 * 1024 and big % 65536 == 0


def test_efiboot_rejects_missing_source(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        build_efiboot_image(tmp_path / "x.img", EfiBootFiles(loader=tmp_path / "missing.efi"))
    assert not list(tmp_path.iterdir())


# -- ISO content ------------------------------------------------------------------------------
def test_tree_round_trips_through_rock_ridge(
    tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles
) -> None:
    iso, _ = build_iso(tmp_path, source_tree, efi_files)
    expected = expected_entries(source_tree)
    with IsoReader(iso) as reader:
        got = {e.path: e for e in reader.walk()}
        for path, (kind, mode, target) in expected.items():
            entry = got[path]
            assert entry.kind is kind, path
            if kind is EntryKind.SYMLINK:
                assert entry.target == target
            else:
                assert entry.mode == mode, path
            if kind is EntryKind.FILE:
                assert reader.read_bytes(path) == (source_tree / path[1:]).read_bytes(), path
        extra = set(got) - set(expected)
        assert extra == {"/.disk", "/.disk/info", "/boot.cat", "/boot/grub2/efiboot.img"}


def test_libarchive_reads_the_same_tree(tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles) -> None:
    iso, _ = build_iso(tmp_path, source_tree, efi_files)
    names = {line.rstrip("/") for line in output(["bsdtar", "-tf", iso]).splitlines()}
    for path in expected_entries(source_tree):
        assert path[1:] in names
    out = tmp_path / "x"
    out.mkdir()
    run(["bsdtar", "-xf", iso, "-C", out])
    assert (out / "liveos" / "rootfs.img").read_bytes() == (
        source_tree / "liveos" / "rootfs.img"
    ).read_bytes()
    assert os.readlink(out / "abs-link") == "/usr/lib/os-release"
    deep = "/".join(f"level{i}.d" for i in range(12))
    assert (out / deep / "bottom.txt").read_text() == "deep\n"


def test_joliet_tree_has_every_file_and_directory(
    tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles
) -> None:
    import pycdlib

    iso, _ = build_iso(tmp_path, source_tree, efi_files)
    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        joliet = []
        for dirpath, dirs, files in reader.walk(joliet_path="/"):
            joliet += [f"{dirpath.rstrip('/')}/{name}" for name in dirs + files]
    finally:
        reader.close()
    assert all(len(Path(p).name) <= 64 for p in joliet)
    assert len(joliet) == len(set(joliet))
    expected = expected_entries(source_tree)
    not_symlinks = [p for p, (kind, _, _) in expected.items() if kind is not EntryKind.SYMLINK]
    assert len(joliet) == len(not_symlinks) + 4  # + .disk, .disk/info, boot.cat, efiboot.img
    # Windows compares Joliet names case-insensitively: the later of A_B.TXT / a_b.txt is renamed
    assert {"/A_B.TXT", "/a-b.txt", "/a_b_1.txt"} <= set(joliet)
    assert "/Ünïcödé – name.txt" in joliet


def test_reader_extracts_a_subtree(tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles) -> None:
    iso, _ = build_iso(tmp_path, source_tree, efi_files)
    dest = tmp_path / "extracted"
    with IsoReader(iso) as reader:
        reader.extract("/", dest)
    for path, (kind, mode, target) in expected_entries(source_tree).items():
        got = dest / path[1:]
        if kind is EntryKind.SYMLINK:
            assert os.readlink(got) == target
        else:
            assert got.lstat().st_mode & 0o7777 == mode, path
            if kind is EntryKind.FILE:
                assert got.read_bytes() == (source_tree / path[1:]).read_bytes()


def test_el_torito_has_one_uefi_entry(tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles) -> None:
    iso, efiboot = build_iso(tmp_path, source_tree, efi_files)
    report = output(["xorriso", "-indev", iso, "-report_el_torito", "plain"])
    images = [line for line in report.splitlines() if line.startswith("El Torito boot img :")]
    assert len(images) == 1
    fields = images[0].split(":", 1)[1].split()
    assert fields[1] == "UEFI" and fields[3] == "none"  # platform 0xEF, no emulation
    assert int(fields[6]) == efiboot.stat().st_size // 512
    assert "El Torito img path :   1  /boot/grub2/efiboot.img" in report
    with IsoReader(iso) as reader:
        assert reader.read_bytes("/boot/grub2/efiboot.img") == efiboot.read_bytes()


def test_add_order_does_not_change_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, second = IsoWriter("ORDER"), IsoWriter("ORDER")
    items = [(f"/d{i % 3}/f{i}.txt", f"{i}\n".encode()) for i in range(20)]
    for path, data in items:
        first.add_bytes(path, data)
    for path, data in reversed(items):
        second.add_bytes(path, data)
    first.write(tmp_path / "1.iso", hybrid=False)
    second.write(tmp_path / "2.iso", hybrid=False)
    assert (tmp_path / "1.iso").read_bytes() == (tmp_path / "2.iso").read_bytes()


def test_source_date_epoch_makes_the_iso_reproducible(
    tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    iso1, _ = build_iso(tmp_path, source_tree, efi_files)
    digest1 = hashlib.sha256(iso1.read_bytes()).hexdigest()
    time.sleep(1.1)
    (tmp_path / "again").mkdir()
    iso2, _ = build_iso(tmp_path / "again", source_tree, efi_files)
    assert hashlib.sha256(iso2.read_bytes()).hexdigest() == digest1
    blkid = output(["blkid", "-p", "-o", "value", "-s", "UUID", iso1]).strip()
    assert blkid == "2023-11-14-22-13-20-00"  # the PVD creation date = the epoch, in UTC
    assert sys.modules["pycdlib.pycdlib"].time is time  # the clock swap is undone


def test_without_source_date_epoch_dates_are_now(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    writer = IsoWriter("NOW")
    writer.add_bytes("/x", b"x")
    writer.write(tmp_path / "n.iso", hybrid=False)
    uuid = output(["blkid", "-p", "-o", "value", "-s", "UUID", tmp_path / "n.iso"]).strip()
    assert uuid.startswith(time.strftime("%Y-%m-%d", time.localtime()))


def test_usage_errors(tmp_path: Path) -> None:
    writer = IsoWriter("X")
    with pytest.raises(UsageError):
        writer.add_bytes("/a/../b", b"")
    writer.add_bytes("/file", b"x")
    with pytest.raises(UsageError):
        writer.add_bytes("/file/below", b"x")
    with pytest.raises(UsageError):
        writer.write(tmp_path / "x.iso")  # hybrid without an EFI image
    writer.set_efi_boot("/missing.img")
    with pytest.raises(UsageError):
        writer.write(tmp_path / "x.iso")
    assert not list(tmp_path.iterdir())


# -- atomic output ----------------------------------------------------------------------------
def test_vanished_source_is_reported_and_leaves_no_file(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"y" * 10_000)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    writer = IsoWriter("FAIL")
    writer.add_file("/src.bin", src)
    src.unlink()  # vanishes between collecting and writing
    with pytest.raises(UsageError, match=r"src\.bin"):
        writer.write(out_dir / "fail.iso", hybrid=False)
    assert list(out_dir.iterdir()) == []


def test_atomic_output_keeps_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    target.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_output(target) as fp:
        fp.write(b"half written")
        raise KeyboardInterrupt
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["artifact"]
    with atomic_output(target, mode=0o600) as fp:
        fp.write(b"new")
    assert target.read_bytes() == b"new" and target.stat().st_mode & 0o777 == 0o600


# -- USB hybrid -------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", list(PartitionScheme))
def test_hybrid_gpt_points_at_the_boot_image(
    tmp_path: Path, source_tree: Path, efi_files: EfiBootFiles, scheme: PartitionScheme
) -> None:
    iso, efiboot = build_iso(tmp_path, source_tree, efi_files, scheme=scheme)
    size = iso.stat().st_size
    assert size % 2048 == 0
    verify = output(["sgdisk", "-v", iso])
    assert "No problems found" in verify, verify
    table = json.loads(output(["sfdisk", "-J", iso]))["partitiontable"]
    assert table["label"] == "gpt" and table["lastlba"] == size // 512 - 34
    (part,) = table["partitions"]
    assert part["type"] == ESP_TYPE
    with IsoReader(iso) as reader:
        offset, length = reader.extent("/boot/grub2/efiboot.img")
    assert part["start"] * 512 == offset and part["size"] * 512 == length == efiboot.stat().st_size
    listing = output(["mdir", "-b", "-i", f"{iso}@@{offset}", "::/EFI/BOOT"], env={"MTOOLS_SKIP_CHECK": "1"})
    assert "bootx64.efi" in listing.lower()
    with open(iso, "rb") as fp:
        layout = HybridLayout.parse(fp)
        fp.seek(-512, os.SEEK_END)
        backup = fp.read(512)
    assert backup[:8] == b"EFI PART"
    assert layout.header.backup_lba == size // 512 - 1
    mbr_types = [p.type for p in layout.mbr]
    assert mbr_types == ([0xEE] if scheme is PartitionScheme.GPT else [0xEE, 0xEF])
    # still a valid CD: El Torito, the ISO 9660 tree and blkid's whole-disk label
    assert "UEFI" in output(["xorriso", "-indev", iso, "-report_el_torito", "plain"])
    assert "liveos/rootfs.img" in output(["bsdtar", "-tf", iso])
    blkid = output(["blkid", "-p", "-o", "export", iso])
    assert "LABEL=LIVEOS" in blkid and "TYPE=iso9660" in blkid and "PTTYPE=gpt" in blkid


def test_hybrid_refuses_a_non_empty_system_area(tmp_path: Path) -> None:
    from liveos.errors import InternalError
    from liveos.iso.hybrid import Extent, make_hybrid

    with open(tmp_path / "junk", "w+b") as fp:
        fp.write(b"\x01" * 64 * 1024)
        with pytest.raises(InternalError):
            make_hybrid(fp, iso_size=64 * 1024, esp=Extent(36 * 1024, 2048))


# -- sparse files (the 4 GiB multi-extent file is in tests/integration/test_large_files.py) ------
def test_sparse_output_writes_what_a_plain_file_would(tmp_path: Path) -> None:
    """Random writes (zero and not, past the end and over data) and seeks, against BytesIO."""
    import random

    from liveos.iso.writer import _ZEROS, _SparseOutput

    rng = random.Random(14)
    for round_ in range(40):
        oracle = io.BytesIO()
        with open(tmp_path / f"out{round_}", "w+b") as fp:
            sparse = _SparseOutput(fp)
            for _ in range(30):
                op = rng.randrange(4)
                if op == 0:
                    where = rng.choice([0, 1, 2047, 5000, 2**20 + 3])
                    whence = rng.choice([os.SEEK_SET, os.SEEK_CUR, os.SEEK_END])
                    assert sparse.seek(where, whence) == oracle.seek(where, whence)
                else:
                    size = rng.choice([0, 1, 2048, 3000, len(_ZEROS)])
                    data = bytes(size) if op < 3 else rng.randbytes(size)
                    assert sparse.write(data) == oracle.write(data)
                assert sparse.tell() == oracle.tell()
            sparse.close()
            assert fp.tell() == oracle.tell()
        assert (tmp_path / f"out{round_}").read_bytes() == oracle.getvalue(), round_


def test_sparse_source_reads_holes_as_zeros_without_reading_them(tmp_path: Path) -> None:
    import random

    from liveos.iso.writer import _ZEROS, _SparseSource

    block = len(_ZEROS)
    path = tmp_path / "sparse.img"
    with open(path, "wb") as fp:
        fp.truncate(8 * block + 100)
        fp.seek(2 * block + 5)
        fp.write(b"x" * 5000)
        fp.seek(8 * block + 90)
        fp.write(b"0123456789")
    expected = path.read_bytes()
    fds = len(os.listdir("/proc/self/fd"))
    with _SparseSource(path) as source:
        assert len(os.listdir("/proc/self/fd")) == fds  # opened at the first read only
        source.seek(4 * block)
        assert source.read(block) is _ZEROS  # a hole: not read from disk
        rng = random.Random(14)
        for _ in range(300):
            where = rng.randrange(len(expected) + 10)
            source.seek(where)
            size = rng.choice([1, 2048, block, 2 * block])
            assert source.read(size) == expected[where : where + size], (where, size)
            assert source.tell() == min(where + size, max(where, len(expected)))
        source.seek(8 * block)
        assert source.read(block) == expected[8 * block :]
        assert len(os.listdir("/proc/self/fd")) == fds  # closed at the end of the file
        source.seek(0)
        assert source.read(10) == bytes(5) * 2
        source.seek(-30, os.SEEK_END)
        assert source.read() == expected[-30:]
    assert len(os.listdir("/proc/self/fd")) == fds


def test_sparse_input_gives_the_same_iso_with_holes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sparse file and a dense copy of it make byte-identical ISOs; the holes stay holes."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    size = 64 * 1024**2 + 777
    sparse = tmp_path / "sparse.img"
    with open(sparse, "wb") as fp:
        fp.truncate(size)
        for offset in (0, 3 * 1024**2 - 10, 40 * 1024**2 + 5, size - 3):
            fp.seek(offset)
            fp.write(b"data" * 800 if offset < size - 3 else b"end")
    dense = tmp_path / "dense.img"
    dense.write_bytes(sparse.read_bytes())
    assert os.stat(sparse).st_blocks < os.stat(dense).st_blocks
    written = {}
    for name, source in (("sparse", sparse), ("dense", dense)):
        writer = IsoWriter("SPARSE")
        writer.add_file("/liveos/rootfs.img", source)
        writer.add_bytes("/zz-last.txt", b"last\n")  # data after the big file's holes
        (tmp_path / name).mkdir()
        written[name] = writer.write(tmp_path / name / "s.iso", hybrid=False)
    sparse_iso, dense_iso = (tmp_path / "sparse" / "s.iso"), (tmp_path / "dense" / "s.iso")
    content = sparse_iso.read_bytes()
    assert content == dense_iso.read_bytes()
    assert written["sparse"].sha256 == hashlib.sha256(content).hexdigest() == written["dense"].sha256
    assert written["sparse"].size == len(content)
    assert os.stat(sparse_iso).st_blocks * 512 < 16 * 1024**2  # most of the 64 MiB is a hole
    out = tmp_path / "x"
    out.mkdir()
    run(["bsdtar", "-xf", sparse_iso, "-C", out])
    assert (out / "liveos" / "rootfs.img").read_bytes() == dense.read_bytes()
    assert (out / "zz-last.txt").read_bytes() == b"last\n"


# -- hostile ISOs (regressions: every byte of an ISO is untrusted) ----------------------------
def small_iso(tmp_path: Path, files: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    writer = IsoWriter("HOSTILE")
    for path, data in files.items():
        writer.add_bytes(path, data)
    for path, target in (links or {}).items():
        writer.add_symlink(path, target)
    iso = tmp_path / "hostile.iso"
    writer.write(iso, hybrid=False)
    return iso


def patch_nm(iso: Path, old: bytes, new: bytes) -> None:
    """Replace the Rock Ridge name (NM entry) ``old`` by ``new`` of the same length."""
    assert len(old) == len(new)
    data = bytearray(iso.read_bytes())
    marker = b"NM" + bytes([5 + len(old), 1, 0]) + old
    assert data.count(marker) == 1, marker
    start = data.index(marker) + 5
    data[start : start + len(old)] = new
    iso.write_bytes(data)


def outside(tmp_path: Path) -> dict[str, tuple[int, int, bytes]]:
    """Everything in ``tmp_path`` but the extraction target: it must not change."""
    result = {}
    for path in sorted(tmp_path.rglob("*")):
        if "dest" in path.relative_to(tmp_path).parts:
            continue
        st = path.lstat()
        content = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
        result[str(path)] = (st.st_mode, st.st_mtime_ns, content)
    return result


def assert_refused_and_nothing_outside_changed(iso: Path, tmp_path: Path, match: str) -> None:
    """Walking ``iso`` fails with an ImageError matching ``match``, extracting it to
    ``tmp_path / "dest"`` fails too, and nothing else in ``tmp_path`` changed."""
    before = outside(tmp_path)
    with IsoReader(iso) as reader:
        with pytest.raises(ImageError, match=match):
            list(reader.walk())
        with pytest.raises(ImageError):
            reader.extract("/", tmp_path / "dest")
    assert outside(tmp_path) == before


@pytest.mark.parametrize(
    "name", [b"..", b".", b"a/b", b"/x", b"a\0b", b"../../pwned", b"../../../../../../../../tmp/pwned"]
)
def test_rock_ridge_names_are_validated_before_any_path_is_built(tmp_path: Path, name: bytes) -> None:
    """A crafted NM name (``..``, ``a/b``...) used to let extract() write anywhere on the host."""
    iso = small_iso(tmp_path, {"/boot/" + "z" * len(name): b"pwned\n", "/pwned": b"real\n"})
    patch_nm(iso, b"z" * len(name), name)
    before = outside(tmp_path)
    with IsoReader(iso) as reader:
        with pytest.raises(ImageError) as info:
            list(reader.walk())
        assert info.value.path == iso and repr(name) in info.value.message
        with pytest.raises(ImageError):
            reader.extract("/", tmp_path / "dest")
        with pytest.raises(ImageError):
            reader.extract("/boot", tmp_path / "dest" / "boot")
        assert reader.read_bytes("/pwned") == b"real\n"  # the rest of the ISO is still readable
    assert outside(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_component_checks() -> None:
    assert check_component(b"ok \xff", what="ISO") == "ok \udcff"
    for bad in (b"", b".", b"..", b"a/b", b"a\0", b"x" * 256):
        with pytest.raises(ImageError):
            check_component(bad, what="ISO")


def _sl_over_tf(iso: Path, rr_name: bytes, up: int, target: str) -> None:
    """Turn the directory ``rr_name`` into a directory that is also a symlink: its TF entry
    (timestamps) is overwritten by an SL entry of the same length pointing to
    ``../`` * up + ``target`` (``target`` is padded to fill the slot)."""
    data = bytearray(iso.read_bytes())
    nm = data.index(b"NM" + bytes([5 + len(rr_name), 1, 0]) + rr_name)
    tf = data.index(b"TF", nm)
    size = data[tf + 2]
    name = target.encode()
    free = size - 5 - 2 * up - 2
    assert len(name) == free, f"target must be {free} bytes"
    data[tf : tf + size] = b"SL" + bytes([size, 1, 0]) + b"\x04\x00" * up + bytes([0, len(name)]) + name
    iso.write_bytes(data)


def test_symlink_then_file_through_it_is_refused(tmp_path: Path) -> None:
    """``boot/x`` both a directory holding ``passwd`` and a symlink out of the target: the old
    reader created the symlink, then wrote ``boot/x/passwd`` through it onto the host."""
    iso = small_iso(tmp_path, {"/boot/x/passwd": b"pwned\n"})
    _sl_over_tf(iso, b"x", 2, "c" * 15)
    canary = tmp_path / ("c" * 15)
    canary.mkdir()
    assert_refused_and_nothing_outside_changed(iso, tmp_path, "both a directory and a symlink")
    assert not (canary / "passwd").exists()


def test_duplicate_rock_ridge_names_are_refused(tmp_path: Path) -> None:
    """A symlink renamed onto a directory's name: extracting one through the other is refused."""
    iso = small_iso(tmp_path, {"/boot/abc/passwd": b"pwned\n"}, {"/boot/lnk": "../../canary"})
    patch_nm(iso, b"lnk", b"abc")
    (tmp_path / "canary").mkdir()
    assert_refused_and_nothing_outside_changed(iso, tmp_path, "two entries named 'abc'")


def test_extract_never_writes_through_a_symlink_at_the_destination(tmp_path: Path) -> None:
    iso = small_iso(tmp_path, {"/f": b"new\n"}, {"/dir/l": "/etc/passwd"})
    canary = tmp_path / "canary"
    canary.write_text("host\n")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "f").symlink_to(canary)
    with IsoReader(iso) as reader:
        reader.extract("/f", tmp_path / "dest" / "f")
        reader.extract("/", tmp_path / "dest")
        reader.extract("/", tmp_path / "dest")  # again: every entry replaced, nothing followed
    assert canary.read_text() == "host\n"
    assert (tmp_path / "dest" / "f").read_bytes() == b"new\n" and not (tmp_path / "dest" / "f").is_symlink()
    assert os.readlink(tmp_path / "dest" / "dir" / "l") == "/etc/passwd"


def _corrupt_isos(tmp_path: Path) -> dict[str, bytes]:
    iso = small_iso(tmp_path, {"/a/b.txt": b"b" * 5000, "/big": os.urandom(200_000)}, {"/l": "a/b.txt"})
    good = iso.read_bytes()
    pvd = 16 * 2048
    root_extent = pvd + 156 + 2  # the root directory record's extent (little endian)
    return {
        "empty": b"",
        "garbage": os.urandom(128 * 1024),
        "half": good[: len(good) // 2],
        "no-data": good[: len(good) - 150_000],
        "root-extent": good[:root_extent] + b"\xff\xff\xff\x7f" + good[root_extent + 4 :],
        "pvd-zeroed": good[:pvd] + bytes(2048) + good[pvd + 2048 :],
        "dirs-zeroed": good[: 20 * 2048] + bytes(10 * 2048) + good[30 * 2048 :],
    }


def test_corrupt_isos_are_image_errors(tmp_path: Path) -> None:
    for what, data in _corrupt_isos(tmp_path).items():
        iso = tmp_path / f"{what}.iso"
        iso.write_bytes(data)
        try:
            with IsoReader(iso) as reader:
                for entry in reader.walk():
                    if entry.kind is EntryKind.FILE:
                        reader.read_bytes(entry.path)
                reader.extract("/", tmp_path / f"dest-{what}")
        except ImageError as exc:
            assert exc.path == iso, what
        except Exception as exc:
            raise AssertionError(f"{what}: {type(exc).__name__}: {exc}") from exc


def test_truncated_isos_are_image_errors(tmp_path: Path) -> None:
    """pycdlib silently shortens a file whose data goes past the end of the file (and makes the
    length negative when it starts there): a truncated ISO must not read as short files."""
    iso = small_iso(tmp_path, {"/big": os.urandom(200_000)})
    with IsoReader(iso) as reader:
        offset, size = reader.extent("/big")
    with open(iso, "r+b") as fp:
        fp.truncate(offset + size // 2)
    with pytest.raises(ImageError, match="truncated"):
        IsoReader(iso)


def test_lookups_keep_their_usage_errors(tmp_path: Path) -> None:
    iso = small_iso(tmp_path, {"/d/f": b"x"}, {"/l": "d"})
    with IsoReader(iso) as reader:
        with pytest.raises(UsageError, match="not found"):
            reader.read_bytes("/missing")
        with pytest.raises(UsageError, match="not found"):
            reader.entry("/l/f")  # symlinks on the ISO are never followed
        with pytest.raises(UsageError):
            reader.read_bytes("/d")
        with pytest.raises(UsageError):
            reader.extents("/l")
        with pytest.raises(ImageError):
            list(reader.walk("/d/f"))
        assert reader.entry("/l").target == "d"


def test_extract_within_a_root_never_follows_links_above_dest(tmp_path: Path) -> None:
    """live_iso extracts entry by entry to host paths it builds (``boot/efi/EFI/BOOT/...``): with
    ``within``, a symlink an earlier extraction created on the way (``/boot/efi -> canary``) is
    refused instead of followed."""
    canary = tmp_path / "canary"
    canary.mkdir()
    iso = small_iso(
        tmp_path, {"/EFI/BOOT/bootx64.efi": b"efi", "/boot/vmlinuz": b"k"}, {"/boot/efi": str(canary)}
    )
    layer = tmp_path / "dest"
    layer.mkdir()
    with IsoReader(iso) as reader:
        for entry in reader.walk("/boot"):
            reader.extract(entry.path, layer / entry.path[1:], within=layer)
        with pytest.raises(ImageError, match="not a directory"):
            reader.extract("/EFI/BOOT/bootx64.efi", layer / "boot/efi/EFI/BOOT/bootx64.efi", within=layer)
        with pytest.raises(ImageError, match="not a directory"):
            reader.extract("/EFI/BOOT", layer / "boot/efi/EFI/BOOT", within=layer)
        reader.extract("/EFI", layer / "esp/EFI", within=layer)  # missing parents are created
        with pytest.raises(UsageError):
            reader.extract("/EFI", tmp_path / "elsewhere", within=layer)
    assert list(canary.iterdir()) == []
    assert (layer / "esp/EFI/BOOT/bootx64.efi").read_bytes() == b"efi"
    assert os.readlink(layer / "boot/efi") == str(canary)
