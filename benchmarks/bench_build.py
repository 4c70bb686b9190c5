"""Benchmark: liveos end to end (qcow2 -> Live ISO) vs the same job done by hand with the standard tools.

Image: the ``azl`` qcow2 test fixture (Debian 12, ESP + ext4 root, ~690 MB tree). Candidates, each a
whole child process (wall fork->reap, user+sys CPU and peak RSS from ``wait4``), interleaved
(A B C ... A B C ...), each reporting its own per-step times:

* ``liveos bootstrap``: ``LiveOS.open(img).with_label(..).with_cache(False).bootstrap().write_iso(out)``
  (a cold build: nothing reused; rebuilds are benchmarks/bench_rebuild.py's)
* ``by hand bootstrap``: ``qemu-img convert -W -m 4`` -> ``sfdisk -J`` -> ``losetup --offset
  --sizelimit -r`` -> ``mount -o ro,noload`` -> ``mcopy`` of the ESP's EFI dir -> chroot mounts +
  ``chroot dracut`` with liveos' live modules and drivers and the image's own settings otherwise
  (its ``compress="zstd"``: level 15) -> ``mksquashfs`` with
  liveos' default preset (liveos/squashfs.py) -> ``mkfs.vfat`` + ``mcopy`` efiboot.img ->
  ``xorriso -as mkisofs`` (El Torito EFI, ESP appended as GPT partition: USB-bootable like liveos')
* ``liveos full-os`` / ``by hand full-os``: the whole tree as a zstd-3 newc initrd
  (``find | cpio -o -H newc | zstd -T0 -3`` by hand) instead of dracut + squashfs
* ``by hand bootstrap, mksquashfs default zstd (15)``: the reference-tool-like slow path, as context

Ratios use the **minimum** over the rounds (the least disturbed run on a shared machine), per step
and end to end; medians are recorded too. Machine load (``/proc/loadavg``, CPU burnt by other
processes during each run) is recorded per run.

Run as root from the repo root: ``python3 -m benchmarks.bench_build [--rounds 2] [--quick]``.
Writes ``benchmarks/results/build.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._timing import run_once, write_results  # noqa: E402

WORK = Path("/var/tmp/liveos-bench-build")
LABEL = "BENCH"
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
#: Step names, in pipeline order; every candidate reports a subset of them.
STEPS = ("open", "dracut", "squashfs", "cpio", "efiboot", "iso", "other", "close")

CANDIDATES: dict[str, str] = {
    "liveos-bootstrap": "liveos bootstrap ISO",
    "hand-bootstrap": "by hand bootstrap ISO (the image's dracut settings, liveos' squashfs options)",
    "liveos-full-os": "liveos full-os ISO (zstd-3 newc)",
    "hand-full-os": "by hand full-os ISO (find|cpio|zstd -T0 -3)",
    "hand-bootstrap-zstd15": "by hand bootstrap ISO, mksquashfs default zstd 15 (reference-like)",
}
#: (liveos candidate, by-hand candidate) pairs that do the same job.
PAIRS = (("liveos-bootstrap", "hand-bootstrap"), ("liveos-full-os", "hand-full-os"))


class Clock:
    """Accumulates wall seconds per named step."""

    def __init__(self) -> None:
        self.steps: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - start


def sh(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run a tool; fail loudly with its stderr tail."""
    kwargs.setdefault("stdout", subprocess.PIPE)
    proc = subprocess.run(argv, stderr=subprocess.PIPE, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        tail = proc.stderr.decode(errors="replace")[-2000:]
        raise RuntimeError(f"failed ({proc.returncode}): {shlex.join(argv)}\n{tail}")
    return proc  # type: ignore[no-any-return]


# -- children: one build each --------------------------------------------------------------------
def child_liveos(image: Path, work: Path, out: Path, mode: str) -> dict[str, float]:
    """liveos end to end; ``open`` = LiveOS.open (qemu-img convert, losetup, mounts, ESP extract)."""
    from liveos.live import LiveOS

    clock = Clock()
    start = time.perf_counter()
    with LiveOS.open(image, workdir=work) as live:
        clock.steps["open"] = time.perf_counter() - start
        job = live.with_label(LABEL).with_cache(False)  # a cold build every round
        job = job.bootstrap() if mode == "bootstrap" else job.full_os()
        built = time.perf_counter()
        result = job.write_iso(out)
        build = time.perf_counter() - built
        steps = dict.fromkeys((str(s.kind) for s in result.steps), 0.0)
        for step in result.steps:
            steps[str(step.kind)] += step.seconds
        clock.steps.update(steps)
        clock.steps["other"] = build - result.seconds
        closing = time.perf_counter()
    clock.steps["close"] = time.perf_counter() - closing
    return clock.steps


def _partitions(raw: Path) -> tuple[tuple[int, int], tuple[int, int]]:
    """(offset, size) in bytes of the ESP and of the root (largest other) partition, via sfdisk -J."""
    table = json.loads(sh(["sfdisk", "-J", str(raw)]).stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    parts = table["partitions"]
    esp = next(p for p in parts if p["type"].upper() == ESP_TYPE)
    root = max((p for p in parts if p is not esp), key=lambda p: p["size"])
    return (esp["start"] * sector, esp["size"] * sector), (root["start"] * sector, root["size"] * sector)


@contextlib.contextmanager
def _mounted(source: str, target: Path, *options: str) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    sh(["mount", *options, source, str(target)])
    try:
        yield target
    finally:
        if subprocess.run(["umount", str(target)], stderr=subprocess.DEVNULL).returncode != 0:
            subprocess.run(["umount", "--lazy", str(target)], check=False)


@contextlib.contextmanager
def _loop(raw: Path, offset: int, size: int) -> Iterator[str]:
    dev = sh(
        ["losetup", "--find", "--show", "--read-only", "--offset", str(offset), "--sizelimit", str(size),
         str(raw)]
    ).stdout.decode().strip()  # fmt: skip
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "--detach", dev], check=False)


def _network_handler(mnt: Path) -> str | None:
    """The same choice liveos makes (liveos/initramfs/dracut.py NETWORK_HANDLERS), done by looking."""
    from liveos.initramfs.dracut import NETWORK_HANDLERS

    modules_dir = mnt / "usr/lib/dracut/modules.d"
    modules = {re.sub(r"^\d+", "", n) for n in os.listdir(modules_dir)}
    for module, binaries in NETWORK_HANDLERS:
        if module in modules and any((mnt / b).exists() for b in binaries):
            return module
    return None


def _dracut(mnt: Path, kver: str, out: Path) -> None:
    """chroot dracut with liveos' modules/drivers; tmpfs on /tmp, /var/tmp (the root is mounted ro)."""
    from liveos.initramfs.dracut import LIVE_DRIVERS, LIVE_MODULES

    modules = list(LIVE_MODULES)
    handler = _network_handler(mnt)
    if handler:
        modules.append(handler)
    with contextlib.ExitStack() as stack:
        for path, fstype, opts in (
            ("proc", "proc", "nosuid,nodev,noexec"),
            ("sys", "sysfs", "nosuid,nodev,noexec"),
            ("dev", "devtmpfs", "nosuid,mode=0755"),
            ("dev/pts", "devpts", "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620"),
            ("run", "tmpfs", "nosuid,nodev,mode=0755"),
            ("tmp", "tmpfs", "nosuid,nodev,mode=1777"),
            ("var/tmp", "tmpfs", "nosuid,nodev,mode=1777"),
        ):
            stack.enter_context(_mounted(fstype, mnt / path, "-t", fstype, "-o", opts))
        sh(
            ["chroot", str(mnt), "dracut", "--force", "--no-hostonly", "--kver", kver,
             "--add", " ".join(modules), "--add-drivers", LIVE_DRIVERS, "/tmp/initrd-live.img"],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        )  # fmt: skip
        shutil.copyfile(mnt / "tmp/initrd-live.img", out)


def _mksquashfs(mnt: Path, out: Path, *, slow: bool) -> None:
    from liveos.layout import ROOT_IMAGE_EXCLUDED
    from liveos.settings import Preset
    from liveos.squashfs import MKSQUASHFS_OPTIONS

    comp = ["-comp", "zstd"] if slow else list(MKSQUASHFS_OPTIONS[Preset.FAST])
    sh(
        ["mksquashfs", str(mnt), str(out), "-noappend", "-xattrs", "-no-progress", *comp,
         "-processors", str(os.cpu_count() or 1), "-wildcards", "-e", *ROOT_IMAGE_EXCLUDED]
    )  # fmt: skip


def _efiboot(esp_boot: Path, out: Path) -> None:
    files = [esp_boot / "bootx64.efi", esp_boot / "grubx64.efi"]
    kib = sum(f.stat().st_size for f in files) // 1024 + 1024
    sh(["mkfs.vfat", "-C", "-n", "EFIBOOT", str(out), str(kib)])
    sh(["mmd", "-i", str(out), "::EFI", "::EFI/BOOT"])
    sh(["mcopy", "-i", str(out), *map(str, files), "::EFI/BOOT/"])


def _grub_cfg(mnt: Path, out: Path, live_args: str, initrd: str | None) -> None:
    """The image's grub.cfg with root= replaced by live args (and the initrd renamed for full-os)."""
    text = (mnt / "boot/grub2/grub.cfg").read_text()
    text = re.sub(r"\broot=\S+", live_args, text)
    text = re.sub(r"search [^\n]*", f"search --no-floppy --set=root --label {LABEL}", text)
    if initrd:
        text = re.sub(r"(?m)^(\s*initrd\s+)\S+", rf"\g<1>{initrd}", text)
    out.write_text(text)


def child_by_hand(image: Path, work: Path, out: Path, mode: str) -> dict[str, float]:
    """The same job with the standard tools; every mount/loop released in ``finally`` (ExitStack)."""
    clock = Clock()
    scratch = Path(sh(["mktemp", "-d", "-p", str(work), "by-hand-XXXXXX"]).stdout.decode().strip())
    raw, mnt, esp = scratch / "disk.raw", scratch / "mnt", scratch / "esp"
    try:
        with contextlib.ExitStack() as stack:
            with clock.step("open"):
                sh(["qemu-img", "convert", "-W", "-m", "4", "-O", "raw", str(image), str(raw)])
                (esp_off, _), (root_off, root_size) = _partitions(raw)
                dev = stack.enter_context(_loop(raw, root_off, root_size))
                stack.enter_context(_mounted(dev, mnt, "-o", "ro,noload"))
                esp.mkdir()
                sh(["mcopy", "-s", "-n", "-i", f"{raw}@@{esp_off}", "::/EFI", str(esp)])
            kver = sorted(os.listdir(mnt / "lib/modules"))[-1]
            initrd = scratch / "initrd.img"
            grub = scratch / "grub.cfg"
            grafts = [f"/boot/vmlinuz-{kver}={mnt}/boot/vmlinuz-{kver}", f"/EFI/BOOT={esp}/EFI/BOOT"]
            if mode.startswith("bootstrap"):
                with clock.step("dracut"):
                    _dracut(mnt, kver, initrd)
                squash = scratch / "rootfs.img"
                with clock.step("squashfs"):
                    _mksquashfs(mnt, squash, slow=mode == "bootstrap-zstd15")
                with clock.step("other"):
                    args = (
                        f"root=live:CDLABEL={LABEL} rd.live.image rd.live.dir=liveos "
                        "rd.live.squashimg=rootfs.img rd.live.overlay.overlayfs=1"
                    )
                    _grub_cfg(mnt, grub, args, None)
                grafts += [f"/boot/initramfs-{kver}.img={initrd}", f"/liveos/rootfs.img={squash}"]
            else:
                with clock.step("cpio"):
                    find = "find . \\( -path './boot/*' -o -path ./etc/fstab \\) -prune -o -print0"
                    sh(
                        ["sh", "-c", f"{find} | cpio -o -H newc --null --quiet | zstd -q -T0 -3 > "
                         f"{shlex.quote(str(initrd))}"],
                        cwd=mnt,
                    )  # fmt: skip
                with clock.step("other"):
                    _grub_cfg(mnt, grub, "rdinit=/lib/systemd/systemd selinux=0", "/boot/initrd.img")
                grafts.append(f"/boot/initrd.img={initrd}")
            grafts.append(f"/boot/grub2/grub.cfg={grub}")
            efiboot = scratch / "efiboot.img"
            with clock.step("efiboot"):
                _efiboot(esp / "EFI/BOOT", efiboot)
            with clock.step("iso"):
                sh(
                    ["xorriso", "-as", "mkisofs", "-o", str(out), "-iso-level", "3",
                     "-full-iso9660-filenames", "-joliet", "-joliet-long", "-rational-rock", "-volid", LABEL,
                     "-partition_offset", "16", "-append_partition", "2", ESP_TYPE, str(efiboot),
                     "-appended_part_as_gpt", "-e", "--interval:appended_partition_2:all::", "-no-emul-boot",
                     "-graft-points", *grafts]
                )  # fmt: skip
            closing = time.perf_counter()
        raw.unlink()
        clock.steps["close"] = time.perf_counter() - closing
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return clock.steps


CHILDREN: dict[str, Callable[[Path, Path, Path], dict[str, float]]] = {
    "liveos-bootstrap": lambda i, w, o: child_liveos(i, w, o, "bootstrap"),
    "liveos-full-os": lambda i, w, o: child_liveos(i, w, o, "full-os"),
    "hand-bootstrap": lambda i, w, o: child_by_hand(i, w, o, "bootstrap"),
    "hand-full-os": lambda i, w, o: child_by_hand(i, w, o, "full-os"),
    "hand-bootstrap-zstd15": lambda i, w, o: child_by_hand(i, w, o, "bootstrap-zstd15"),
}


# -- the harness ----------------------------------------------------------------------------------
def fixture_image() -> Path:
    from tests.fixtures.builder import build_image

    return build_image("azl", "qcow2").path


def leftovers(work: Path) -> list[str]:
    """Mounts and loop devices under ``work`` (must be none after every run)."""
    with open("/proc/self/mountinfo") as fp:
        mounts = [line.split()[4] for line in fp if line.split()[4].startswith(str(work))]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines()
    return mounts + [line for line in loops if str(work) in line]


def run_candidate(kind: str, image: Path, work: Path) -> dict[str, object]:
    out = work / f"{kind}.iso"
    result = work / f"{kind}.json"
    out.unlink(missing_ok=True)
    result.unlink(missing_ok=True)
    os.sync()
    load_before = os.getloadavg()
    argv = [sys.executable, "-m", "benchmarks.bench_build", "--child", kind, "--image", str(image),
            "--work", str(work), "--out", str(out), "--result", str(result)]  # fmt: skip
    sample = run_once(argv, cwd=REPO)
    steps = json.loads(result.read_text())
    left = leftovers(work)
    if left:
        raise RuntimeError(f"{kind} left mounts/loop devices behind: {left}")
    size = out.stat().st_size
    out.unlink()
    result.unlink()
    return {
        "wall": sample.wall, "user": sample.user, "sys": sample.sys, "cpu": sample.cpu,
        "rss_mb": sample.rss_mb, "other_cpu": sample.other_cpu, "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(), "iso_bytes": size, "steps": steps,
    }  # fmt: skip


def summarize(kind: str, runs: list[dict[str, object]]) -> dict[str, object]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    steps: dict[str, dict[str, float]] = {}
    for name in STEPS:
        values = [float(r["steps"][name]) for r in runs if name in r["steps"]]  # type: ignore[index,operator]
        if values:
            steps[name] = stat(values)
    return {
        "kind": kind,
        "name": CANDIDATES[kind],
        "runs": len(runs),
        "wall": stat([float(r["wall"]) for r in runs]),  # type: ignore[arg-type]
        "cpu": stat([float(r["cpu"]) for r in runs]),  # type: ignore[arg-type]
        "rss_mb_max": max(float(r["rss_mb"]) for r in runs),  # type: ignore[arg-type]
        "other_cpu": stat([float(r["other_cpu"]) for r in runs]),  # type: ignore[arg-type]
        "iso_bytes": runs[-1]["iso_bytes"],
        "steps": steps,
        "samples": runs,
    }


def _without_dracut(summary: dict[str, object]) -> list[float]:
    """Per-run whole-process wall minus the dracut step: dracut runs the image's own dracut (and
    its ``zstd -15``) identically on both sides, and its time swings 2-3x with the machine's load."""
    samples = summary["samples"]
    assert isinstance(samples, list)
    if not any("dracut" in s["steps"] for s in samples):
        return []
    return [float(s["wall"]) - float(s["steps"].get("dracut", 0.0)) for s in samples]


def markdown(summaries: dict[str, dict[str, object]]) -> str:
    """Per-step table (min / median s) and liveos / by-hand ratios of the minima."""
    lines: list[str] = []
    for live, hand in PAIRS:
        if live not in summaries or hand not in summaries:
            continue
        a, b = summaries[live], summaries[hand]
        sa, sb = a["steps"], b["steps"]
        assert isinstance(sa, dict) and isinstance(sb, dict)
        lines += [
            f"**{a['name']}** vs **{b['name']}** ({a['runs']} runs each, interleaved)\n",
            "| step | liveos s min (median) | by hand s min (median) | liveos / by hand (min) |",
            "|---|---|---|---|",
        ]
        for step in STEPS:
            if step not in sa and step not in sb:
                continue
            x, y = sa.get(step), sb.get(step)
            cell_a = f"{x['min']:.2f} ({x['median']:.2f})" if x else "-"
            cell_b = f"{y['min']:.2f} ({y['median']:.2f})" if y else "-"
            ratio = f"{x['min'] / y['min']:.2f}x" if x and y and y["min"] > 0.05 else ""
            lines.append(f"| {step} | {cell_a} | {cell_b} | {ratio} |")
        wa, wb = a["wall"], b["wall"]
        assert isinstance(wa, dict) and isinstance(wb, dict)
        ca, cb = a["cpu"], b["cpu"]
        assert isinstance(ca, dict) and isinstance(cb, dict)
        lines.append(
            f"| **end to end (whole process)** | **{wa['min']:.2f}** ({wa['median']:.2f}) "
            f"| **{wb['min']:.2f}** ({wb['median']:.2f}) | **{wa['min'] / wb['min']:.2f}x** |"
        )
        na, nb = _without_dracut(a), _without_dracut(b)
        if na and nb:
            lines.append(
                f"| end to end minus the dracut step (same command both sides) | {min(na):.2f} "
                f"({statistics.median(na):.2f}) | {min(nb):.2f} ({statistics.median(nb):.2f}) "
                f"| {min(na) / min(nb):.2f}x |"
            )
        lines.append(
            f"| CPU s user+sys | {ca['min']:.2f} ({ca['median']:.2f}) "
            f"| {cb['min']:.2f} ({cb['median']:.2f}) | {ca['min'] / cb['min']:.2f}x |"
        )
        lines.append(f"| peak RSS MB (largest process) | {a['rss_mb_max']:.0f} | {b['rss_mb_max']:.0f} | |")
        lines.append(f"| ISO bytes | {a['iso_bytes']} | {b['iso_bytes']} | |\n")
    slow = summaries.get("hand-bootstrap-zstd15")
    if slow:
        steps = slow["steps"]
        wall = slow["wall"]
        assert isinstance(steps, dict) and isinstance(wall, dict)
        lines.append(
            f"Context, {slow['name']}: end to end {wall['min']:.2f} s min ({wall['median']:.2f} median), "
            f"of which mksquashfs {steps['squashfs']['min']:.2f} s; ISO {slow['iso_bytes']} bytes.\n"
        )
    return "\n".join(lines)


def machine() -> dict[str, object]:
    def first(cmd: list[str]) -> str:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return (proc.stdout or proc.stderr).strip().splitlines()[0] if proc.returncode == 0 else "?"

    with open("/proc/cpuinfo") as fp:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fp if ln.startswith("model name")), "?")
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": os.uname().release,
        "python": sys.version.split()[0],
        "tools": {
            "mksquashfs": first(["mksquashfs", "-version"]),
            "xorriso": first(["xorriso", "-version"]),
            "qemu-img": first(["qemu-img", "--version"]),
            "cpio": first(["cpio", "--version"]),
            "zstd": first(["zstd", "--version"]),
        },
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--quick", action="store_true", help="1 round, no zstd-15 slow path")
    ap.add_argument("--no-slow", action="store_true", help="skip the mksquashfs zstd-15 slow path")
    ap.add_argument("--image", type=Path, help="disk image (default: the azl qcow2 fixture)")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "build.json")
    ap.add_argument("--rerender", action="store_true", help="only re-render the tables of --json")
    ap.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        steps = CHILDREN[args.child](args.image, args.work, args.out)
        args.result.write_text(json.dumps(steps))
        return 0
    if args.rerender:
        data = json.loads(args.json.read_text())
        data["markdown"] = markdown(data["candidates"])
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(data["markdown"])
        return 0
    image = (args.image or fixture_image()).resolve()
    rounds = 1 if args.quick else args.rounds
    kinds = [k for k in CANDIDATES if not (k == "hand-bootstrap-zstd15" and (args.quick or args.no_slow))]
    sh(["cat", str(image)], stdout=subprocess.DEVNULL)  # warm the page cache
    runs: dict[str, list[dict[str, object]]] = {k: [] for k in kinds}
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for index in range(rounds):
        for kind in kinds:
            sample = run_candidate(kind, image, args.work)
            runs[kind].append(sample)
            print(
                f"round {index + 1}/{rounds} {kind}: {sample['wall']:.1f} s, "
                f"load {sample['loadavg_before']}, "
                f"steps { {k: round(v, 2) for k, v in sample['steps'].items()} }",  # type: ignore[attr-defined]
                flush=True,
            )
    summaries = {k: summarize(k, v) for k, v in runs.items()}
    table = markdown(summaries)
    print("\n" + table)
    result = {
        "benchmark": "build",
        "image": str(image),
        "image_bytes": image.stat().st_size,
        "rounds": rounds,
        "statistic": "min over rounds for ratios (median recorded too)",
        "started": started,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "candidates": summaries,
        "markdown": table,
    }
    write_results(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
