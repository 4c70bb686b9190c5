"""Programs from an image run in the sandbox, and an image's program trying to get out fails.

The crafted image's "dracut" is an attack script (the host's dash + a static busybox copied into
the image) that tries every way out we know of: host files through ``/proc/<pid>/root``, a block
device of the host made with mknod, kernel knobs in ``/proc/sys``, mounts, sysfs, a nested user
namespace, the host's network, the host's processes, and a process left running after the build.
Each attempt's outcome is written into the "initrd", which lands on the ISO; the test reads it
there and checks the host: canary files untouched (inotify), core_pattern unchanged, no TCP
connection reached the test's server, nothing of the sandbox still running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.errors import CommandError
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from liveos.rootfs import RootFs
from tests.liveimagekit import KVER, AccessWatch, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices, mounts and namespaces need root"),
    pytest.mark.skipif(not shutil.which("bwrap"), reason="needs bubblewrap"),
]
BUSYBOX = Path("/bin/busybox")
CORE_PATTERN = Path("/proc/sys/kernel/core_pattern")

ATTACK = r"""#!/bin/sh
for a in "$@"; do out=$a; done
B=/bin/busybox
try() { if "$@" >/dev/null 2>&1; then echo "ALLOWED: $*"; else echo "denied: $*"; fi; }
{
echo "attack started as $($B id -u)"
try $B sh -c "echo pwned > /proc/1/root@CANARY@/written"
try $B sh -c "echo pwned > /proc/$PPID/root@CANARY@/written"
try $B sh -c "echo pwned > /proc/self/root@CANARY@/written"
try $B cat @CANARY@/secret
try $B mknod /tmp/disk b @MAJOR@ @MINOR@
try $B mknod /var/tmp/disk b @MAJOR@ @MINOR@
try $B dd if=/dev/vda of=/dev/null bs=512 count=1
try $B sh -c "echo '|/bin/false' > /proc/sys/kernel/core_pattern"
try $B sh -c "echo 1 > /proc/sys/kernel/sysrq"
try $B mount -t tmpfs none /mnt
try $B mount -t sysfs none /mnt
try $B mount -o remount,rw /proc/sys
try $B umount /proc/sys
try $B ls /sys/block
try $B unshare -U -r true
try $B sh -c "echo probe | $B nc -w 2 127.0.0.1 @PORT@"
try $B sh -c "echo probe | $B nc -w 2 10.0.2.2 @PORT@"
try $B kill -0 @HOSTPID@
try $B sh -c "$B mkdir -p /x && $B chroot /x /bin/busybox true"
try $B ip link add dummy0 type dummy
$B setsid $B sleep 600 </dev/null >/dev/null 2>&1 &
echo "attack finished"
} > "$out"
"""


class Listener:
    """A TCP server on 127.0.0.1 that records whether anyone connected."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connected = False
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connected = True
            conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[Listener]:
    server = Listener()
    yield server
    server.close()


def sleepers() -> list[int]:
    """Processes running busybox's ``sleep 600`` (what the attack leaves behind)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:3] == [b"/bin/busybox", b"sleep", b"600"]:
                found.append(int(entry))
    return found


def test_image_code_cannot_reach_the_host(tmp_path: Path, listener: Listener) -> None:
    canary = Path("/var/lib") / f"liveos-sandbox-canary-{os.getpid()}"
    canary.mkdir()
    try:
        (canary / "secret").write_text("host secret\n")
        device = os.stat(tmp_path).st_dev
        script = (
            ATTACK.replace("@CANARY@", str(canary))
            .replace("@MAJOR@", str(os.major(device)))
            .replace("@MINOR@", str(os.minor(device)))
            .replace("@PORT@", str(listener.port))
            .replace("@HOSTPID@", str(os.getpid()))
        )
        image = live_image(tmp_path, root={"/usr/bin/dracut": script, "/bin/busybox": BUSYBOX.read_bytes()})
        core_pattern = CORE_PATTERN.read_text()
        watch = AccessWatch(canary)
        work = tmp_path / "work"
        work.mkdir()
        with LiveOS.open(image, workdir=work) as live:
            (live.rootfs.root / "bin/busybox").chmod(0o755)
            result = live.with_label("SANDBOX").write_iso(tmp_path / "live.iso")
        with IsoReader(result.output) as reader:
            report = reader.read_bytes(f"/boot/initramfs-{KVER}.img").decode()
        assert "attack started as 0" in report and "attack finished" in report, report
        attempts = [line for line in report.splitlines() if line.startswith(("ALLOWED", "denied"))]
        assert len(attempts) == ATTACK.count("\ntry "), report
        assert [line for line in attempts if line.startswith("ALLOWED")] == [], report
        assert watch.events() == [], "a host file was touched"
        assert not (canary / "written").exists()
        assert CORE_PATTERN.read_text() == core_pattern
        assert not listener.connected, "the image's program reached a host TCP server"
        deadline = time.monotonic() + 5
        while sleepers():
            assert time.monotonic() < deadline, "a process the image started outlived the build"
            time.sleep(0.1)
    finally:
        shutil.rmtree(canary)


def test_rootfs_run_uses_the_image_s_tools_and_writes_land_in_the_tree(tmp_path: Path) -> None:
    image = live_image(tmp_path, root={"/bin/busybox": BUSYBOX.read_bytes()})
    work = tmp_path / "work"
    work.mkdir()
    with LiveOS.open(image, workdir=work) as live:
        rootfs: RootFs = live.rootfs
        (rootfs.root / "bin/busybox").chmod(0o755)
        script = "echo installed > /etc/from-the-image; id -u; hostname"
        done = rootfs.run(["/bin/busybox", "sh", "-c", script])
        lines = done.stdout.decode().split()
        assert lines == ["0", "liveos-sandbox"] and socket.gethostname() != "liveos-sandbox"
        assert rootfs.read_text("/etc/from-the-image") == "installed\n"
        assert not Path("/etc/from-the-image").exists()
        with pytest.raises(CommandError, match="exit code 3"):
            rootfs.run(["/bin/busybox", "sh", "-c", "exit 3"])
        netless = rootfs.run(["/bin/busybox", "ip", "-o", "link"]).stdout.decode()
        assert [line.split(":")[1].strip() for line in netless.splitlines()] == ["lo"]
        started = time.monotonic()
        with pytest.raises(CommandError, match="timed out"):
            rootfs.run(["/bin/busybox", "sleep", "600"], timeout=2)
        assert time.monotonic() - started < 30
    assert sleepers() == []
    assert subprocess.run(["pgrep", "-f", "busybox sleep 600"], capture_output=True).returncode == 1
