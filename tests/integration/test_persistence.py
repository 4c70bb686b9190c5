"""A persistent USB disk, booted twice: what the first boot writes, the second boot finds.

A bootstrap ISO with a 256 MiB persistence partition is copied (the copy is the "USB stick"),
attached writable as a raw virtio disk and booted under UEFI. A oneshot unit added to the image
writes a token to /var/lib on the first boot, syncs and prints it; the second boot of the same
disk prints the token it found. The disk is then read on the host: the token lies in the
persistence partition's overlay directory, and the pristine ISO's partition has no such file
(the negative check, by inspection rather than a third boot).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from liveos.boottest import BootConfig, Disk, Firmware, boot
from liveos.iso import isomd5
from liveos.iso.hybrid import SECTOR, HybridLayout
from liveos.live import LiveOS
from liveos.media.persistence import FS_LABEL, OVERLAY_DIR, RW_PARTITION_NAME
from liveos.verification import verify
from tests.conftest import FixtureImageFactory

pytestmark = [pytest.mark.root, pytest.mark.boot]

BOOT_TIMEOUT = 600.0
MARKER = "LIVEOS-PERSIST:"
TOKEN_FILE = "/var/lib/liveos-persist-token"
UNIT = "liveos-persist-test.service"
SCRIPT = f"""#!/bin/sh
f={TOKEN_FILE}
where="root=$(findmnt -no FSTYPE,SOURCE /) $(grep -o 'rd.live.overlay=[^ ]*' /proc/cmdline)"
if [ -f "$f" ]; then
  msg="{MARKER} second boot found=$(cat "$f") $where"
else
  echo "token-$(cat /proc/sys/kernel/random/uuid)" > "$f"
  sync
  msg="{MARKER} first boot wrote=$(cat "$f") $where"
fi
echo "$msg" > /dev/ttyS0 2>/dev/null || true
echo "$msg"
"""
SERVICE = """[Unit]
Description=liveos persistence test: write a token, or report the one found
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/liveos-persist-test
[Install]
WantedBy=multi-user.target
"""


def partition(path: Path, name: str) -> tuple[int, int]:
    """(offset, size) in bytes of the GPT partition called ``name``."""
    with path.open("rb") as f:
        layout = HybridLayout.parse(f)
    (part,) = [p for p in layout.partitions if p.name == name]
    return part.first_lba * SECTOR, (part.last_lba - part.first_lba + 1) * SECTOR


def debugfs_cat(disk: Path, offset: int, size: int, path: str, scratch: Path) -> str:
    """``path`` inside the ext4 at ``offset`` of ``disk`` (extracted sparse, fsck'ed, read with debugfs)."""
    part = scratch / "rw.img"
    subprocess.run(
        ["dd", f"if={disk}", f"of={part}", "bs=1M", f"skip={offset}", f"count={size}", "conv=sparse",
         "iflag=skip_bytes,count_bytes", "status=none"],
        check=True,
    )  # fmt: skip
    # The VM was stopped, not shut down: replay the journal (as the next mount would) and check.
    fsck = subprocess.run(["e2fsck", "-fy", str(part)], capture_output=True, text=True)
    assert fsck.returncode in (0, 1), fsck.stdout + fsck.stderr  # 1: the journal was replayed
    done = subprocess.run(["debugfs", "-R", f"cat {path}", str(part)], capture_output=True, text=True)
    part.unlink()
    return done.stdout


def test_persistent_usb_keeps_a_file_across_reboots(
    fixture_image: FixtureImageFactory, tmp_path: Path
) -> None:
    image = fixture_image("azl", "qcow2")
    iso = tmp_path / "persistent.iso"
    with LiveOS.open(image.path) as live:
        live.rootfs.write_text("/usr/local/sbin/liveos-persist-test", SCRIPT, mode=0o755)
        live.rootfs.write_text(f"/etc/systemd/system/{UNIT}", SERVICE)
        wants = live.rootfs.path(f"/etc/systemd/system/multi-user.target.wants/{UNIT}", follow_last=False)
        os.symlink(f"/etc/systemd/system/{UNIT}", wants)
        started = time.monotonic()
        result = live.bootstrap().with_persistence("256M").write_iso(iso)
        build_seconds = time.monotonic() - started
    st = iso.stat()
    print(f"\nbuild {build_seconds:.1f} s; ISO apparent {st.st_size} B, on disk {st.st_blocks * 512} B")
    assert result.size == st.st_size
    assert "persistence partition" in result.plan.steps[-1].detail
    # The ISO part is unchanged by the partition: checkisomd5 and liveos verify accept the file.
    with iso.open("rb") as f:
        assert isomd5.volume_size(f) < st.st_size - 256 * 2**20
    subprocess.run(["checkisomd5", str(iso)], check=True, capture_output=True)
    report = verify(iso)
    assert report.ok, report.describe()
    offset, size = partition(iso, RW_PARTITION_NAME)
    assert size == 256 * 2**20
    label = subprocess.run(
        ["blkid", "-p", "-O", str(offset), "-s", "LABEL", "-o", "value", str(iso)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert label == FS_LABEL
    pristine = debugfs_cat(iso, offset, size, f"{OVERLAY_DIR}{TOKEN_FILE}", tmp_path)
    assert pristine == "", "the fresh partition already holds a token"

    usb = tmp_path / "usb.img"
    shutil.copyfile(iso, usb)
    lines = []
    for n in (1, 2):
        log = tmp_path / f"serial-{n}.log"
        booted = boot(
            BootConfig(
                Disk(usb, format="raw", writable=True),
                marker=MARKER,
                firmware=Firmware.UEFI,
                timeout=BOOT_TIMEOUT,
                log_path=log,
            )
        )
        assert booted.ok, booted.describe()
        assert booted.marker_line is not None
        print(f"boot {n}: {booted.seconds:.1f} s: {booted.marker_line}")
        lines.append(booted.marker_line)
    first = re.search(r"first boot wrote=(token-[0-9a-f-]+)", lines[0])
    assert first is not None, lines[0]
    assert f"second boot found={first.group(1)}" in lines[1], lines
    assert "overlay" in lines[0] and "rd.live.overlay=UUID=" in lines[0], lines[0]
    # On the host: the token is in the persistence partition's overlay, nowhere in the pristine ISO.
    kept = debugfs_cat(usb, offset, size, f"{OVERLAY_DIR}{TOKEN_FILE}", tmp_path)
    assert kept.strip() == first.group(1)
    # The ISO data of the stick is untouched by two boots (only the partition was written).
    with iso.open("rb") as a, usb.open("rb") as b:
        end = isomd5.volume_size(a)
        a.seek(0)
        while a.tell() < end:
            assert a.read(1 << 20) == b.read(1 << 20)
