"""Persistence: the partition table bytes, the ext4, the grub edit and the setting, with real tools.

The GPT is read back by sgdisk/sfdisk (independent readers) as well as by HybridLayout; the ext4
by blkid and debugfs. The two boots of a persistent disk are in
tests/integration/test_persistence.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
import uuid
import zlib
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import InternalError, UsageError
from liveos.grub import GrubConfig
from liveos.iso import isomd5
from liveos.iso.hybrid import SECTOR, Extent, GptPartition, HybridLayout, PartitionScheme, make_hybrid
from liveos.iso.writer import IsoWriter
from liveos.media.grubedit import GrubEdit, edit_grub_config
from liveos.media.persistence import (
    FS_LABEL,
    GRUB_VARIABLE,
    LINUX_DATA_TYPE,
    OVERLAY_DIR,
    ROOT_PARTITION_NAME,
    RW_PARTITION_NAME,
    WORK_DIR,
    Persistence,
    apply_to_grub,
    make_ext4,
)
from liveos.run import output
from liveos.settings import InitramfsMode, LiveSettings, add_cli_arguments, from_cli, parse_persistence
from liveos.verification import verify

MIB = 1 << 20
GRUB_CFG = """set timeout=1
search --no-floppy --set=root --label OLD
menuentry 'Linux' {
	linux /boot/vmlinuz-6.1 root=UUID=1234 ro quiet
	initrd /boot/initrd.img-6.1
}
"""


# -- the setting ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "size"),
    [("256M", 256 * MIB), ("1G", 1 << 30), ("1gib", 1 << 30), (100_000_000, 96 * MIB), ("16M", 16 * MIB)],
)
def test_sizes_parse_and_round_up_to_whole_mib(given: object, size: int) -> None:
    assert parse_persistence(given) == size
    assert LiveSettings().replace(persistence=given).persistence == size


@pytest.mark.parametrize("bad", ["1X", "", "-5M", "1.5G", True, 3.0, "15M", 1024])
def test_bad_sizes_are_usage_errors(bad: object) -> None:
    with pytest.raises(UsageError):
        parse_persistence(bad)


def test_full_os_and_non_hybrid_refuse_persistence() -> None:
    with pytest.raises(UsageError, match="bootstrap"):
        LiveSettings().replace(persistence="1G", mode="full-os")
    with pytest.raises(UsageError, match="hybrid"):
        LiveSettings().replace(persistence="1G", hybrid=False)


def test_cli_flag() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert from_cli(parser.parse_args(["--persistent", "512M"])).persistence == 512 * MIB
    assert from_cli(parser.parse_args([])).persistence is None
    with pytest.raises(UsageError):
        from_cli(parser.parse_args(["--persistent", "lots"]))


# -- identities and arguments -----------------------------------------------------------------------
def test_identities_are_derived_from_the_label() -> None:
    a, b = Persistence(256 * MIB, "LIVE_A"), Persistence(256 * MIB, "LIVE_B")
    assert a.fs_uuid == Persistence(1 << 30, "LIVE_A").fs_uuid  # reproducible, size-independent
    ids = {a.fs_uuid, a.rw_guid, a.root_guid, b.fs_uuid, b.rw_guid, b.root_guid}
    assert len(ids) == 6


def test_disk_args_follow_the_dracut_version() -> None:
    p = Persistence(256 * MIB, "LIVE")
    assert p.disk_args("059") == [
        f"root=live:PARTUUID={p.root_guid}",
        f"rd.live.overlay=UUID={p.fs_uuid}:{OVERLAY_DIR}",
    ]
    assert p.disk_args("110")[1] == f"rd.overlay=UUID={p.fs_uuid}:{OVERLAY_DIR}"
    assert OVERLAY_DIR.parent / "ovlwork" == WORK_DIR  # dracut 059 wants <path>/../ovlwork


# -- the grub edit ---------------------------------------------------------------------------------------
def edit(text: str, persistence: Persistence | None) -> str:
    grub = GrubEdit(
        mode=InitramfsMode.BOOTSTRAP, label="LIVE", boot_separate=False, dracut_version="059",
        user_args=(), disable_selinux=False, persistence=persistence,
    )  # fmt: skip
    return edit_grub_config(text, grub, path=PurePosixPath("/boot/grub/grub.cfg")).render()


def test_grub_gets_the_prologue_and_the_argument_once() -> None:
    p = Persistence(256 * MIB, "LIVE")
    once = edit(GRUB_CFG, p)
    assert edit(once, p) == once  # a re-opened ISO's config keeps one prologue and one argument
    assert once.startswith("# liveos persistence: begin\n")
    assert f"--fs-uuid {p.fs_uuid}" in once
    (line,) = [x for x in once.splitlines() if x.strip().startswith("linux")]
    assert line.split()[-1] == f"${GRUB_VARIABLE}"
    assert "root=live:CDLABEL=LIVE" in line  # CD: unchanged; USB: dracut takes the later root=
    assert GrubConfig.parse(once).known_label() == "LIVE"  # set_search_label left the prologue alone
    plain = edit(once, None)
    assert plain == edit(GRUB_CFG, None)  # rebuilt without persistence: both gone
    assert GRUB_VARIABLE not in plain


def test_full_os_and_network_edits_drop_the_argument() -> None:
    persistent = edit(GRUB_CFG, Persistence(256 * MIB, "LIVE"))
    full_os = GrubEdit(
        mode=InitramfsMode.FULL_OS, label="LIVE", boot_separate=False, dracut_version=None,
        user_args=(), disable_selinux=False, persistence=Persistence(256 * MIB, "LIVE"),
    )  # fmt: skip
    text = edit_grub_config(persistent, full_os, path=PurePosixPath("/boot/grub/grub.cfg")).render()
    assert GRUB_VARIABLE not in text and "--fs-uuid" not in text


def test_apply_to_grub_replaces_an_old_prologue() -> None:
    old = apply_to_grub("x\n", Persistence(16 * MIB, "OLD"), "059")
    new = apply_to_grub(old, Persistence(16 * MIB, "NEW"), "059")
    assert new == apply_to_grub("x\n", Persistence(16 * MIB, "NEW"), "059")


# -- the partition table -------------------------------------------------------------------------------
def test_layout_lists_the_extra_partitions_with_their_crc() -> None:
    extra = (
        GptPartition(LINUX_DATA_TYPE, uuid.uuid4(), 200, 299, ROOT_PARTITION_NAME),
        GptPartition(LINUX_DATA_TYPE, uuid.uuid4(), 2048, 4095, RW_PARTITION_NAME),
    )
    disk, esp = uuid.uuid4(), uuid.uuid4()
    layout = HybridLayout.build(
        4096 + 64, Extent(100 * SECTOR, 50 * SECTOR), PartitionScheme.GPT, disk, esp, extra
    )
    assert layout.partitions[1:] == extra
    blob = b"".join(p.pack() for p in layout.partitions).ljust(128 * 128, b"\0")
    assert layout.header.entries_crc == zlib.crc32(blob)
    raw = extra[1].pack()
    assert raw[:16] == LINUX_DATA_TYPE.bytes_le and GptPartition.parse(raw) == extra[1]
    too_far = GptPartition(
        LINUX_DATA_TYPE, uuid.uuid4(), 2048, 4096 + 64 - 33, "x"
    )  # over the backup entries
    with pytest.raises(InternalError):
        HybridLayout.build(
            4096 + 64, Extent(100 * SECTOR, 50 * SECTOR), PartitionScheme.GPT, disk, esp, (too_far,)
        )


def test_make_hybrid_puts_the_backup_gpt_after_the_partition(tmp_path: Path) -> None:
    iso_size = 1 * MIB
    rw = GptPartition(LINUX_DATA_TYPE, uuid.uuid4(), 2048, 2048 + 32768 - 1, RW_PARTITION_NAME)
    path = tmp_path / "fake.iso"
    with path.open("w+b") as fp:
        fp.truncate(iso_size)
        fp.seek(16 * 2048)
        fp.write(b"\x01CD001\x01")
        size = make_hybrid(
            fp,
            iso_size=iso_size,
            esp=Extent(64 * 2048, 8 * 2048),
            extra=(rw,),
            end=(rw.last_lba + 1) * SECTOR,
        )
    assert size == path.stat().st_size == 17 * MIB + 18432  # the backup GPT (33 sectors) padded to 2 KiB
    table = json.loads(output(["sfdisk", "-J", path]))["partitiontable"]
    assert table["lastlba"] >= rw.last_lba
    parts = {p["name"]: p for p in table["partitions"]}
    assert parts[RW_PARTITION_NAME]["start"] == 2048 and parts[RW_PARTITION_NAME]["size"] == 32768
    assert parts[RW_PARTITION_NAME]["type"] == str(LINUX_DATA_TYPE).upper()
    assert "No problems found" in output(["sgdisk", "-v", path])
    with path.open("rb") as fp:
        fp.seek(-SECTOR, os.SEEK_END)
        assert fp.read(8) == b"EFI PART"


# -- the filesystem ------------------------------------------------------------------------------------
def test_ext4_has_the_label_uuid_and_overlay_dirs_and_is_sparse(tmp_path: Path) -> None:
    p = Persistence(64 * MIB, "LIVE")
    img = make_ext4(tmp_path / "rw.img", p)
    assert img.stat().st_size == 64 * MIB
    assert img.stat().st_blocks * 512 < 8 * MIB  # a sparse file: only metadata is allocated
    probe = output(["blkid", "-p", "-o", "export", img])
    assert "TYPE=ext4" in probe and f"LABEL={FS_LABEL}" in probe and f"UUID={p.fs_uuid}" in probe
    listing = subprocess.run(
        ["debugfs", "-R", "ls -l /liveos", str(img)], capture_output=True, text=True
    ).stdout
    assert "overlay" in listing and "ovlwork" in listing


def test_ext4_is_reproducible_with_source_date_epoch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    p = Persistence(32 * MIB, "LIVE")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_ext4(tmp_path / "a" / "rw.img", p).read_bytes()
    time.sleep(1.1)  # a second later: a directory's ctime is "now" unless it is set afterwards
    assert first == make_ext4(tmp_path / "b" / "rw.img", p).read_bytes()
    stat = subprocess.run(["debugfs", "-R", f"stat {OVERLAY_DIR}", str(tmp_path / "a" / "rw.img")],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert stat.count("0x6553f100") == 4  # atime, mtime, ctime, crtime: the epoch


# -- the whole ISO ------------------------------------------------------------------------------------
def persistent_iso(tmp_path: Path, persistence: Persistence) -> Path:
    from liveos.iso.efiboot import build_efiboot

    efiboot = build_efiboot({"EFI/BOOT/bootx64.efi": os.urandom(64 * 1024)}, tmp_path / "efiboot.img")
    writer = IsoWriter(persistence.label)
    writer.add_bytes("/liveos/rootfs.img", b"hsqs" + os.urandom(300_000))
    writer.add_bytes("/boot/grub/grub.cfg", b"search --label X\n")
    writer.set_efi_boot("/boot/grub/efiboot.img", efiboot)
    writer.set_persistence(persistence, "/liveos/rootfs.img")
    return writer.write(tmp_path / "p.iso").path


def test_iso_with_persistence(tmp_path: Path) -> None:
    p = Persistence(32 * MIB, "PERSIST")
    iso = persistent_iso(tmp_path, p)
    st = iso.stat()
    with iso.open("rb") as f:
        volume = isomd5.volume_size(f)
        layout = HybridLayout.parse(f)
        assert isomd5.check(f) is not None  # the implanted MD5 covers the volume, not the partition
    _, root, rw = layout.partitions
    assert (root.name, rw.name) == (ROOT_PARTITION_NAME, RW_PARTITION_NAME)
    assert (root.guid, rw.guid) == (p.root_guid, p.rw_guid)
    assert rw.first_lba * SECTOR >= volume and rw.first_lba * SECTOR % MIB == 0
    assert (rw.last_lba - rw.first_lba + 1) * SECTOR == 32 * MIB
    assert layout.header.backup_lba == st.st_size // SECTOR - 1
    with iso.open("rb") as f:
        f.seek(root.first_lba * SECTOR)
        assert f.read(4) == b"hsqs"  # the root partition starts at the squashfs
    assert root.last_lba * SECTOR < volume
    probe = output(["blkid", "-p", "-O", str(rw.first_lba * SECTOR), "-o", "export", iso])
    assert f"UUID={p.fs_uuid}" in probe and "TYPE=ext4" in probe
    assert "No problems found" in output(["sgdisk", "-v", iso])
    assert st.st_blocks * 512 < st.st_size - 16 * MIB  # the partition's free space stays a hole
    subprocess.run(["checkisomd5", str(iso)], check=True, capture_output=True)
    tables = verify(iso).check("partition-tables")
    assert tables.ok and "persistence" in tables.detail, tables


def test_persistence_needs_hybrid_and_a_squashfs(tmp_path: Path) -> None:
    writer = IsoWriter("X")
    writer.add_bytes("/liveos/rootfs.img", b"not a squashfs")
    writer.add_bytes("/efi.img", b"\0" * 4096)
    writer.set_efi_boot("/efi.img")
    writer.set_persistence(Persistence(16 * MIB, "X"), "/liveos/rootfs.img")
    with pytest.raises(UsageError):
        writer.write(tmp_path / "a.iso", hybrid=False)
    with pytest.raises(UsageError, match="squashfs"):
        writer.write(tmp_path / "b.iso")
    assert not (tmp_path / "a.iso").exists() and not (tmp_path / "b.iso").exists()
