"""Partition tables, FAT volume ids and fstab entries, checked against what the real tools wrote."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveos.errors import ImageError
from liveos.image.fat import FatType, extract, list_files, read_volume
from liveos.image.fstab import Filesystem, FstabEntry, SpecKind, disk_entries, match, parse_fstab, probe
from liveos.image.partitions import ESP_GUID, TableKind, read_partition_table
from tests.imagekit import PartSpec, make_disk, sh, write_tree


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("gpt")
    esp = write_tree(work / "esp", {"/EFI/BOOT/BOOTX64.EFI": b"MZ", "/EFI/debian/grub.cfg": "x\n"})
    specs = [
        PartSpec(16, "vfat", esp, fs_uuid="ABCD1234", label="ESPLABEL", name="EFI system", esp=True),
        PartSpec(8, "ext4", name="boot", label="bootfs"),
        PartSpec(12, None, name="root"),
    ]
    return make_disk(work / "gpt.raw", specs).path


def sgdisk_info(image: Path, number: int) -> dict[str, str]:
    out = sh("sgdisk", "-i", str(number), image)
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def test_gpt_matches_sgdisk(gpt: Path) -> None:
    table = read_partition_table(gpt)
    assert table.kind is TableKind.GPT
    assert [p.number for p in table.partitions] == [1, 2, 3]
    for part in table.partitions:
        info = sgdisk_info(gpt, part.number)
        assert part.start == int(info["First sector"].split()[0]) * 512
        assert part.end == (int(info["Last sector"].split()[0]) + 1) * 512
        assert part.partuuid == info["Partition unique GUID"].lower()
        assert part.type_guid == info["Partition GUID code"].split()[0].lower()
        assert part.partlabel == info["Partition name"].strip("'")
    assert table.by_number(1).is_esp and table.by_number(1).type_guid == ESP_GUID
    assert not table.by_number(2).is_esp
    assert table.by_number(1).start == 1 << 20


def _corrupt(image: Path, offset: int, data: bytes) -> None:
    with image.open("r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("where", ["header", "entries"])
def test_damaged_primary_gpt_falls_back_to_backup(gpt: Path, tmp_path: Path, where: str) -> None:
    good = read_partition_table(gpt)
    broken = tmp_path / "broken.raw"
    sh("cp", "--sparse=always", gpt, broken)
    _corrupt(broken, 512 + 24 if where == "header" else 1024 + 40, b"\x99" * 8)
    assert read_partition_table(broken) == good


def test_both_gpt_headers_damaged_is_an_image_error(gpt: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.raw"
    sh("cp", "--sparse=always", gpt, broken)
    _corrupt(broken, 512 + 24, b"\x99" * 8)
    _corrupt(broken, broken.stat().st_size - 512 + 24, b"\x99" * 8)
    with pytest.raises(ImageError, match=r"CRC|damaged"):
        read_partition_table(broken)


def test_zeroed_table_is_an_image_error(tmp_path: Path) -> None:
    image = tmp_path / "zero.raw"
    sh("truncate", "-s", "4M", image)
    with pytest.raises(ImageError, match=r"no readable partition table.*no MBR boot signature"):
        read_partition_table(image)


def test_garbage_table_is_an_image_error(tmp_path: Path) -> None:
    image = tmp_path / "garbage.raw"
    image.write_bytes(os.urandom(1 << 20)[:510] + b"\x55\xaa" + bytes((1 << 20) - 512))
    with pytest.raises(ImageError):
        read_partition_table(image)


def test_mbr_with_logical_partitions_matches_sfdisk(tmp_path: Path) -> None:
    image = tmp_path / "mbr.raw"
    sh("truncate", "-s", "64M", image)
    script = (
        "label: dos\nlabel-id: 0x1234abcd\n"
        "start=2048, size=16384, type=ef\n"
        "start=18432, size=8192, type=83\n"
        "start=26624, type=5\n"
        "start=28672, size=8192, type=83\n"
        "start=38912, size=8192, type=82\n"
    )
    sh("sfdisk", "--quiet", image, input=script.encode())
    table = read_partition_table(image)
    expected = json.loads(sh("sfdisk", "--json", image))["partitiontable"]["partitions"]
    expected = [p for p in expected if p["type"] != "5"]
    assert table.kind is TableKind.MBR
    assert [p.number for p in table.partitions] == [1, 2, 5, 6]
    for part, exp in zip(table.partitions, expected, strict=True):
        assert exp["node"].endswith(str(part.number))
        assert (part.start, part.size) == (exp["start"] * 512, exp["size"] * 512)
        assert part.type_byte == int(exp["type"], 16)
        assert part.partuuid == f"1234abcd-{part.number:02x}"
    assert table.by_number(1).is_esp and not table.by_number(2).is_esp


def test_mbr_partition_past_the_end_is_an_image_error(tmp_path: Path) -> None:
    image = tmp_path / "mbr.raw"
    sh("truncate", "-s", "8M", image)
    sh("sfdisk", "--quiet", image, input=b"label: dos\nstart=2048, size=8192, type=83\n")
    _corrupt(image, 0x1BE + 12, struct.pack("<I", 1 << 30))
    with pytest.raises(ImageError, match="outside"):
        read_partition_table(image)


# -- FAT -------------------------------------------------------------------------------------
def test_fat_volume_id_and_label_match_blkid(gpt: Path) -> None:
    part = read_partition_table(gpt).by_number(1)
    volume = read_volume(gpt, part.start)
    assert volume.fat_type is FatType.FAT16
    assert (volume.volume_id, volume.label) == ("ABCD-1234", "ESPLABEL")
    fs = probe(gpt, part)
    assert (fs.fstype, fs.uuid, fs.label) == ("vfat", "ABCD-1234", "ESPLABEL")


def test_fat32_volume_id(tmp_path: Path) -> None:
    image = tmp_path / "fat32.raw"
    disk = make_disk(image, [PartSpec(80, "vfat", fs_uuid="0BAD1DEA", esp=True)])
    volume = read_volume(image, disk.parts[0].start)
    assert (volume.fat_type, volume.volume_id, volume.label) == (FatType.FAT32, "0BAD-1DEA", None)


def test_fat_extract_and_list(gpt: Path, tmp_path: Path) -> None:
    start = read_partition_table(gpt).by_number(1).start
    assert list_files(gpt, start) == [
        "/EFI/",
        "/EFI/BOOT/",
        "/EFI/BOOT/BOOTX64.EFI",
        "/EFI/debian/",
        "/EFI/debian/grub.cfg",
    ]
    out = extract(gpt, start, tmp_path / "esp")
    assert (out / "EFI" / "BOOT" / "BOOTX64.EFI").read_bytes() == b"MZ"
    assert (out / "EFI" / "debian" / "grub.cfg").read_text() == "x\n"


def test_not_fat_is_an_image_error(gpt: Path) -> None:
    with pytest.raises(ImageError, match="no FAT filesystem"):
        read_volume(gpt, read_partition_table(gpt).by_number(2).start)


# -- fstab -----------------------------------------------------------------------------------
FSTAB = r"""
# /etc/fstab: static file system information.
UUID=0a3f6b2e-1d5c-4c1e-9d5b-2f3c4d5e6f70  /           ext4  errors=remount-ro 0 1
PARTUUID=11111111-2222-3333-4444-555555555555 /boot  ext4  defaults 0 2
LABEL=ESPLABEL    /boot/efi   vfat  umask=0077      0 1
PARTLABEL=data    /srv/my\040data xfs defaults,nofail 0 0
/dev/vda4         /home       btrfs subvol=@home,compress=zstd 0 0
/dev/disk/by-uuid/ABCD-1234 /efi vfat noauto 0 0
/swapfile         none        swap  sw 0 0
tmpfs             /tmp        tmpfs defaults 0 0
server:/export    /mnt/nfs    nfs   defaults 0 0
"""


def test_fstab_parse() -> None:
    entries = parse_fstab(FSTAB)
    assert len(entries) == 9
    root, boot, esp, data, home, efi, swap, tmp, nfs = entries
    assert (root.kind, root.value, root.file) == (
        SpecKind.UUID,
        "0a3f6b2e-1d5c-4c1e-9d5b-2f3c4d5e6f70",
        PurePosixPath("/"),
    )
    assert (boot.kind, esp.kind, data.kind, home.kind) == (
        SpecKind.PARTUUID, SpecKind.LABEL, SpecKind.PARTLABEL, SpecKind.DEVICE
    )  # fmt: skip
    assert data.file == PurePosixPath("/srv/my data") and data.optional
    assert home.subvol == "@home" and home.option("compress") == "zstd"
    assert (efi.kind, efi.value, efi.optional) == (SpecKind.UUID, "ABCD-1234", True)
    assert not swap.is_disk and not tmp.is_disk and not nfs.is_disk
    assert [str(e.file) for e in disk_entries(entries)] == [
        "/",
        "/boot",
        "/home",
        "/efi",
        "/boot/efi",
        "/srv/my data",
    ]


def test_fstab_malformed_line_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="line 2"):
        parse_fstab("# ok\nUUID=x / ext4 defaults 0 1 extra junk\n")
    with pytest.raises(ImageError, match="line 1"):
        parse_fstab("UUID=x / ext4 defaults zero 1\n")


fields = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="#"), min_size=1
)


@given(
    spec=fields, file=fields, opts=st.lists(st.from_regex(r"[a-z0-9=@_]{1,8}", fullmatch=True), min_size=1)
)
def test_fstab_line_round_trip(spec: str, file: str, opts: list[str]) -> None:
    entry = FstabEntry(spec, PurePosixPath("/" + file.lstrip("/")), "ext4", tuple(opts), 0, 2)
    assert FstabEntry.parse(entry.line()) == entry


def test_fstab_matching(gpt: Path) -> None:
    table = read_partition_table(gpt)
    filesystems = [probe(gpt, p) for p in table.partitions]
    boot = filesystems[1]
    assert boot.fstype == "ext4" and boot.label == "bootfs" and boot.uuid
    assert filesystems[2].fstype is None  # empty partition

    def found(spec: str) -> Filesystem | None:
        entry = FstabEntry.parse(f"{spec} /x auto defaults 0 0")
        assert entry is not None
        return match(entry, filesystems)

    assert found(f"UUID={boot.uuid.upper()}") is boot
    assert found("LABEL=bootfs") is boot
    assert found(f"PARTUUID={boot.partition.partuuid}") is boot
    assert found("PARTLABEL=boot") is boot
    assert found("/dev/sda2") is boot and found("/dev/nvme0n1p2") is boot
    assert found(f"/dev/disk/by-uuid/{boot.uuid}") is boot
    assert found("UUID=ABCD-1234") is filesystems[0] and found("LABEL=ESPLABEL") is filesystems[0]
    assert found("UUID=ffffffff-0000-0000-0000-000000000000") is None
    assert found("LABEL=bootf") is None
