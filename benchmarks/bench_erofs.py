"""Benchmark: the bootstrap root image as erofs vs squashfs (build time, size, boot time to marker).

Trees: the ``trixie`` fixture (Debian 13) and the ``azl`` one (Debian 12), each opened with liveos.
For each tree, preset and format, one process-internal build of the root image with liveos' own
functions (:func:`liveos.squashfs.make_squashfs`, :func:`liveos.erofs.make_erofs`, the media's
exclusions), interleaved squashfs/erofs per preset: wall seconds, CPU seconds of the tool (children
rusage) and bytes. Then, on the trixie tree only (Debian 12's dracut 059 cannot boot erofs), one
bootstrap ISO per format booted from CD (UEFI, QEMU TCG): wall seconds from QEMU's start to the
marker, and the guest's own uptime at the marker (kernel start -> multi-user, printed by the
fixture's marker service); both boot on a CPU without ERMS (as the trixie boot tests do).

Run as root from the repo root: ``python3 -m benchmarks.bench_erofs [--no-boot] [--presets fast]``.
Writes ``benchmarks/results/erofs.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._timing import write_results  # noqa: E402
from liveos.boottest import BootConfig, CdRom, boot  # noqa: E402
from liveos.erofs import make_erofs  # noqa: E402
from liveos.layout import ROOT_IMAGE_EXCLUDED  # noqa: E402
from liveos.live import LiveOS  # noqa: E402
from liveos.settings import Preset, RootFsFormat  # noqa: E402
from liveos.squashfs import make_squashfs  # noqa: E402
from tests.fixtures import trixie  # noqa: E402
from tests.fixtures.builder import build_image  # noqa: E402

WORK = Path("/var/tmp/liveos-bench-erofs")
RESULTS = REPO / "benchmarks" / "results" / "erofs.json"
UPTIME = re.compile(r"uptime=([0-9.]+)")
#: See tests/integration/test_trixie.py: TCG emulates ERMS' ``rep stosb`` page zeroing byte by byte.
NO_ERMS = ("-cpu", "max,erms=off")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def build_root_images(name: str, image: Path, presets: list[Preset]) -> list[dict[str, object]]:
    """Each preset's squashfs and erofs of ``image``'s tree, interleaved."""
    rows: list[dict[str, object]] = []
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    with LiveOS.open(image, workdir=work) as live:
        tree = live.rootfs.root
        for preset in presets:
            for fmt in RootFsFormat:
                out = WORK / f"{name}-{preset}.{fmt}"
                out.unlink(missing_ok=True)
                cpu, start = _children_cpu(), time.perf_counter()
                if fmt is RootFsFormat.EROFS:
                    make_erofs(tree, out, preset=preset, excludes=ROOT_IMAGE_EXCLUDED)
                else:
                    make_squashfs(tree, out, preset=preset, excludes=ROOT_IMAGE_EXCLUDED)
                wall, used = time.perf_counter() - start, _children_cpu() - cpu
                row: dict[str, object] = {"tree": name, "preset": str(preset), "format": str(fmt)}
                row.update(seconds=round(wall, 1), cpu_seconds=round(used, 1), bytes=out.stat().st_size)
                rows.append(row)
                print(json.dumps(rows[-1]), flush=True)
                out.unlink()
    return rows


def boot_each_format(image: Path) -> list[dict[str, object]]:
    """A fast-preset bootstrap ISO per format from ``image``, booted from CD, one after the other."""
    rows: list[dict[str, object]] = []
    work = WORK / "boot"
    work.mkdir(parents=True, exist_ok=True)
    for fmt in RootFsFormat:
        iso = WORK / f"boot-{fmt}.iso"
        with LiveOS.open(image, workdir=work) as live:
            media = live.with_label("BENCH_EROFS").bootstrap()
            media.with_rootfs_format(fmt).write_iso(iso)
        log = WORK / f"boot-{fmt}.log"
        result = boot(BootConfig(CdRom(iso), timeout=900, log_path=log, extra_qemu_args=NO_ERMS))
        match = UPTIME.search(result.marker_line or "")
        uptime = float(match.group(1)) if match else None
        rows.append({"format": str(fmt), "ok": result.ok, "seconds_to_marker": round(result.seconds, 1)})
        rows[-1]["guest_uptime_at_marker"] = uptime
        print(json.dumps(rows[-1]), flush=True)
        iso.unlink()
    return rows


def main() -> int:
    """Run the measurements, write the JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-boot", action="store_true", help="build only")
    parser.add_argument("--presets", default="fast,balanced,small", help="comma-separated presets")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_erofs: run as root", file=sys.stderr)
        return 1
    presets = [Preset(p) for p in args.presets.split(",")]
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    trixie_image = trixie.build_image("qcow2").path
    builds = build_root_images("trixie", trixie_image, presets)
    builds += build_root_images("azl", build_image("azl", "qcow2").path, presets)
    boots = [] if args.no_boot else boot_each_format(trixie_image)
    write_results(RESULTS, {"started": started, "load": os.getloadavg(), "builds": builds, "boots": boots})
    print("| tree | preset | format | build s (CPU s) | MB |\n|---|---|---|---|---|")
    for row in builds:
        mb = int(str(row["bytes"])) / 1e6
        seconds = f"{row['seconds']} ({row['cpu_seconds']})"
        print(f"| {row['tree']} | {row['preset']} | {row['format']} | {seconds} | {mb:.0f} |")
    for row in boots:
        uptime = row["guest_uptime_at_marker"]
        print(f"boot {row['format']}: {row['seconds_to_marker']} s to marker, guest uptime {uptime}")
    shutil.rmtree(WORK, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
