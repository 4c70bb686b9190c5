"""Partition tables, FAT volume ids and fstab entries, checked against what the real tools wrote."""

from __future__ import annotations

import json
import os
import struct
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from liveos.errors import ImageError
from liveos.image.fat import FatType, extract, list_files, read_volume
from liveos.image.fstab import Filesystem, FstabEntry, SpecKind, disk_entries, match, parse_fstab, probe
from liveos.image.partitions import ESP_GUID, MAX_LOGICAL, MAX_PARTITIONS, TableKind, read_partition_table
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


# -- tables written by hand: hostile but well-formed (CRCs right) ------------------------------
SECTOR = 512
LINUX = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le


def gpt_bytes(
    parts: Sequence[tuple[int, int]],
    *,
    sectors: int = 2048,
    count: int = 128,
    entry_size: int = 128,
    entries_lba: int = 2,
    backup: bool = True,
) -> bytearray:
    """A disk of ``sectors`` with a protective MBR and a primary (and backup) GPT listing ``parts``
    as (first LBA, last LBA), every CRC right whatever the entries say."""
    disk = bytearray(sectors * SECTOR)
    disk[0x1BE + 4] = 0xEE
    struct.pack_into("<II", disk, 0x1BE + 8, 1, min(sectors - 1, 0xFFFFFFFF))
    disk[510:512] = b"\x55\xaa"
    array = bytearray(count * entry_size)
    for index, (first, last) in enumerate(parts):
        at = index * entry_size
        array[at : at + 16] = LINUX
        array[at + 16 : at + 32] = uuid.UUID(int=index + 1).bytes_le
        struct.pack_into("<QQ", array, at + 32, first, last)
    backup_lba = sectors - 1
    backup_entries = backup_lba - len(array) // SECTOR

    def header(my_lba: int, other_lba: int, array_lba: int) -> bytes:
        head = bytearray(92)
        head[:8] = b"EFI PART"
        struct.pack_into("<IIIIQQQQ", head, 8, 0x10000, 92, 0, 0, my_lba, other_lba, 34, sectors - 34)
        head[56:72] = uuid.UUID(int=0xD15C).bytes_le
        struct.pack_into("<QIII", head, 72, array_lba, count, entry_size, zlib.crc32(array))
        struct.pack_into("<I", head, 16, zlib.crc32(head))
        return bytes(head)

    disk[SECTOR : SECTOR + 92] = header(1, backup_lba, entries_lba)
    if entries_lba * SECTOR + len(array) <= len(disk):
        disk[entries_lba * SECTOR : entries_lba * SECTOR + len(array)] = array
    if backup and backup_entries > 2:
        disk[backup_entries * SECTOR : backup_entries * SECTOR + len(array)] = array
        disk[backup_lba * SECTOR : backup_lba * SECTOR + 92] = header(backup_lba, 1, backup_entries)
    return disk


def mbr_bytes(
    slots: Sequence[tuple[int, int, int]],
    ebrs: Sequence[tuple[int, tuple[int, int, int] | None, int | None]] = (),
    *,
    sectors: int = 2048,
) -> bytearray:
    """A disk with an MBR of ``slots`` (type, first LBA, sectors) and EBRs (LBA, logical partition
    (type, start relative to the EBR, sectors) or None, next EBR relative to the extended start)."""
    disk = bytearray(sectors * SECTOR)

    def record(at: int, entries: Sequence[tuple[int, int, int]]) -> None:
        for slot, (kind, first, count) in enumerate(entries):
            base = at + 0x1BE + 16 * slot
            disk[base + 4] = kind
            struct.pack_into("<II", disk, base + 8, first, count)
        disk[at + 510 : at + 512] = b"\x55\xaa"

    struct.pack_into("<I", disk, 0x1B8, 0x1234ABCD)
    record(0, slots)
    for lba, logical, link in ebrs:
        entries = [logical] if logical else [(0, 0, 0)]
        if link is not None:
            entries.append((0x05, link, 1))
        record(lba * SECTOR, entries)
    return disk


def write_disk(path: Path, data: bytes | bytearray) -> Path:
    path.write_bytes(bytes(data))
    return path


def test_hand_written_tables_parse(tmp_path: Path) -> None:
    gpt = read_partition_table(write_disk(tmp_path / "gpt", gpt_bytes([(34, 99), (100, 1000)])))
    assert [(p.number, p.start, p.size) for p in gpt.partitions] == [
        (1, 34 * SECTOR, 66 * SECTOR),
        (2, 100 * SECTOR, 901 * SECTOR),
    ]
    mbr = mbr_bytes(
        [(0x83, 1, 99), (0x05, 200, 800)], [(200, (0x83, 1, 99), 300), (500, (0x82, 1, 99), None)]
    )
    table = read_partition_table(write_disk(tmp_path / "mbr", mbr))
    assert [(p.number, p.start // SECTOR, p.size // SECTOR) for p in table.partitions] == [
        (1, 1, 99), (5, 201, 99), (6, 501, 99)
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([(100, 199), (150, 249)], "overlap"),
        ([(100, 199)] * 128, "overlap"),  # one loop device per copy, before: now refused at once
        ([(100, 199), (50, 100)], "overlap"),  # one shared sector
        ([(100, 99)], "before it starts"),
        ([(100, 5000)], "outside the disk"),
        ([(100, 2**64 - 1)], "outside the disk"),
    ],
)
def test_hostile_gpt_entries_are_refused(tmp_path: Path, parts: list[tuple[int, int]], message: str) -> None:
    image = write_disk(tmp_path / "gpt", gpt_bytes(parts))
    with pytest.raises(ImageError, match=message) as caught:
        read_partition_table(image)
    assert str(image) in str(caught.value)


def test_too_many_partitions_are_refused(tmp_path: Path) -> None:
    parts = [(40 + i, 40 + i) for i in range(MAX_PARTITIONS + 1)]
    image = write_disk(tmp_path / "gpt", gpt_bytes(parts, count=256))
    with pytest.raises(ImageError, match=f"more than {MAX_PARTITIONS}"):
        read_partition_table(image)
    fine = write_disk(tmp_path / "ok", gpt_bytes(parts[:MAX_PARTITIONS], count=256))
    assert len(read_partition_table(fine).partitions) == MAX_PARTITIONS


@pytest.mark.parametrize(
    ("field", "value"), [("count", 0xFFFFFFFF), ("entry_size", 0xFFFFFFF8), ("entries_lba", 2**64 - 1)]
)
def test_absurd_gpt_headers_are_refused(tmp_path: Path, field: str, value: int) -> None:
    options = {"count": 128, "entry_size": 128, "entries_lba": 2, field: value}
    if field != "entries_lba":  # a CRC over a huge array cannot be written: the header's limits speak first
        options["count"], options["entry_size"] = 4, 128
    data = gpt_bytes([(100, 199)], backup=False, **options)
    if field != "entries_lba":
        offset = {"count": 80, "entry_size": 84}[field]
        struct.pack_into("<I", data, SECTOR + offset, value)
        struct.pack_into("<I", data, SECTOR + 16, 0)
        struct.pack_into("<I", data, SECTOR + 16, zlib.crc32(data[SECTOR : SECTOR + 92]))
    with pytest.raises(ImageError, match="no readable partition table"):
        read_partition_table(write_disk(tmp_path / "gpt", data))


def test_overlapping_primary_gpt_falls_back_to_a_sane_backup(tmp_path: Path) -> None:
    good = gpt_bytes([(100, 199), (200, 299)])
    bad = gpt_bytes([(100, 199), (150, 299)], backup=False)
    good[: 34 * SECTOR] = bad[: 34 * SECTOR]  # primary header and entries hostile, backup sane
    table = read_partition_table(write_disk(tmp_path / "gpt", good))
    assert [(p.start // SECTOR, p.end // SECTOR) for p in table.partitions] == [(100, 200), (200, 300)]


@pytest.mark.parametrize(
    ("slots", "ebrs", "message"),
    [
        ([(0x83, 1, 100), (0x83, 50, 100)], [], "overlap"),
        ([(0x83, 1, 100), (0x83, 1, 100), (0x83, 1, 100), (0x83, 1, 100)], [], "overlap"),
        ([(0x83, 1, 100), (0x05, 50, 500)], [(50, (0x83, 1, 100), None)], "overlap"),
        ([(0x05, 100, 1000)], [(100, (0x83, 1, 10), 100), (200, (0x83, 1, 10), 100)], "loops"),
        ([(0x05, 100, 1000)], [(100, (0x83, 1, 10), 0)], None),  # a link to the first EBR ends the chain
        ([(0x83, 1, 100), (0x83, 0, 100)], [], "outside"),
    ],
)
def test_hostile_mbr_tables_are_refused(
    tmp_path: Path,
    slots: list[tuple[int, int, int]],
    ebrs: list[tuple[int, tuple[int, int, int] | None, int | None]],
    message: str | None,
) -> None:
    image = write_disk(tmp_path / "mbr", mbr_bytes(slots, ebrs))
    if message is None:
        assert len(read_partition_table(image).partitions) == 1
        return
    with pytest.raises(ImageError, match=message) as caught:
        read_partition_table(image)
    assert str(image) in str(caught.value)


def test_ebr_chain_longer_than_the_limit_is_refused(tmp_path: Path) -> None:
    ebrs = [(100 + 10 * i, (0x83, 1, 5), 10 * (i + 1)) for i in range(MAX_LOGICAL + 1)]
    image = write_disk(tmp_path / "mbr", mbr_bytes([(0x05, 100, 1900)], ebrs, sectors=4096))
    with pytest.raises(ImageError, match=f"more than {MAX_LOGICAL} EBRs"):
        read_partition_table(image)


@pytest.mark.parametrize("size", [0, 1, 511, 512, 1023])
def test_tiny_disks_are_an_image_error(tmp_path: Path, size: int) -> None:
    image = write_disk(tmp_path / "tiny", b"\x55" * size)
    with pytest.raises(ImageError, match="no readable partition table"):
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


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("UUID=x / ext4 defaults 0 " + "9" * 5000, "passno"),  # was int()'s own 4300-digit error
        ("UUID=x / ext4 defaults 1_0 1", "freq"),
        ("UUID=x / ext4 defaults \u0663 1", "freq"),  # a digit to int(), not to fstab
        ("UUID=x / ext4 defaults -1 1", "freq"),
        ("UUID=x /a\\000b ext4", "NUL"),  # a mount point no system call takes
        ("UUID=x\x00 / ext4", "NUL"),
        ("UUID=" + "x" * 100_000 + " / ext4", "characters long"),
    ],
)
def test_fstab_hostile_lines_are_image_errors(line: str, message: str) -> None:
    with pytest.raises(ImageError, match=message) as caught:
        parse_fstab(f"# header\n{line}\n", path=Path("/etc/fstab"))
    text = str(caught.value)
    assert "line 2" in text and "/etc/fstab" in text and len(text) < 500
    with pytest.raises(ImageError, match=message):
        FstabEntry.parse(line)


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
