"""Benchmark: liveos' pycdlib IsoWriter vs ``xorriso -as mkisofs`` on the same ~1.1 GB tree.

Method as in perf-baselines.md: whole processes, candidates interleaved (A B C A B C ...),
medians of wall time, user+sys CPU and peak RSS from ``wait4()`` rusage; page cache warm, a
``sync`` before each run, output on the same disk, no fsync by xorriso (liveos fsyncs: atomic
output, so it pays for durability the others skip).

Run from the repo root: ``python3 -m benchmarks.bench_iso [--rounds 3] [--work DIR]``.
Writes ``benchmarks/results/iso.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3


@dataclass(frozen=True)
class Sample:
    wall: float
    cpu: float
    user: float
    sys: float
    rss_mb: float
    out_bytes: int


def make_input(work: Path) -> tuple[Path, Path, int]:
    """The tree: 1 GiB random rootfs.img, 12 MB kernel, 80 MB initrd, 40 small files, efiboot.img."""
    tree = work / "tree"
    stamp = work / "tree.done"
    if not stamp.exists():
        sys.path.insert(0, str(REPO))
        from liveos.iso import EfiBootFiles, build_efiboot_image

        (tree / "liveos").mkdir(parents=True, exist_ok=True)
        (tree / "boot" / "grub2").mkdir(parents=True, exist_ok=True)
        (tree / "EFI" / "BOOT").mkdir(parents=True, exist_ok=True)
        with open(tree / "liveos" / "rootfs.img", "wb") as fp:
            for _ in range(1024):
                fp.write(os.urandom(1024 * 1024))
        (tree / "boot" / "vmlinuz").write_bytes(os.urandom(12 * 1024 * 1024))
        (tree / "boot" / "initrd.img").write_bytes(os.urandom(80 * 1024 * 1024))
        for i in range(40):
            (tree / "boot" / "grub2" / f"file{i:02d}.cfg").write_bytes(os.urandom(1000 + 997 * i))
        shim, grub = tree / "EFI" / "BOOT" / "bootx64.efi", tree / "EFI" / "BOOT" / "grubx64.efi"
        shim.write_bytes(os.urandom(950_000))
        grub.write_bytes(os.urandom(2_600_000))
        build_efiboot_image(tree / "boot" / "grub2" / "efiboot.img", EfiBootFiles(loader=shim, grub=grub))
        stamp.touch()
    size = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    return tree, tree / "boot" / "grub2" / "efiboot.img", size


def candidates(tree: Path, efiboot: Path, out: Path) -> dict[str, list[str]]:
    rel_efi = str(efiboot.relative_to(tree))
    liveos = (
        "import sys; from pathlib import Path; sys.path.insert(0, {repo!r});"
        "from liveos.iso import IsoWriter; w = IsoWriter('LIVEOS'); w.add_tree('/', Path({tree!r}));"
        "w.set_efi_boot({efi!r}); w.write(Path({out!r}), hybrid={hybrid})"
    )
    xorriso = [
        "xorriso", "-as", "mkisofs", "-o", str(out), "-iso-level", "3", "-full-iso9660-filenames",
        "-joliet", "-joliet-long", "-rational-rock", "-volid", "LIVEOS",
    ]  # fmt: skip
    return {
        "liveos IsoWriter (pycdlib), hybrid GPT": [
            sys.executable, "-c",
            liveos.format(repo=str(REPO), tree=str(tree), efi="/" + rel_efi, out=str(out), hybrid=True),
        ],
        "liveos IsoWriter (pycdlib), plain": [
            sys.executable, "-c",
            liveos.format(repo=str(REPO), tree=str(tree), efi="/" + rel_efi, out=str(out), hybrid=False),
        ],
        "xorriso -as mkisofs, El Torito EFI, plain": [*xorriso, "-e", rel_efi, "-no-emul-boot", str(tree)],
        "xorriso -as mkisofs, hybrid (appended ESP as GPT, notes.md §4)": [
            *xorriso, "-partition_offset", "16", "-append_partition", "2",
            "C12A7328-F81F-11D2-BA4B-00A0C93EC93B", str(efiboot), "-appended_part_as_gpt",
            "-e", "--interval:appended_partition_2:all::", "-no-emul-boot", str(tree),
        ],
        "floor: cat all files > out": [
            "sh", "-c",
            f"find {shlex.quote(str(tree))} -type f -print0 | xargs -0 cat > {shlex.quote(str(out))}",
        ],
    }  # fmt: skip


def measure(argv: list[str], out: Path) -> Sample:
    out.unlink(missing_ok=True)
    os.sync()
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise SystemExit(f"failed ({proc.returncode}): {shlex.join(argv)}\n{stderr[-2000:]}")
    if proc.stderr:
        proc.stderr.close()
    return Sample(
        wall, usage.ru_utime + usage.ru_stime, usage.ru_utime, usage.ru_stime, usage.ru_maxrss / 1024,
        out.stat().st_size,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/liveos-bench-iso"))
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "iso.json")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.prepare_only:
        make_input(args.work)
        return
    # Build the input in a child: a forked child inherits the harness' RSS high-water mark, so
    # the harness must stay small for the peak-RSS column to mean anything.
    subprocess.run([sys.executable, __file__, "--prepare-only", "--work", str(args.work)], check=True)
    tree, efiboot, input_bytes = make_input(args.work)
    out = args.work / "out.iso"
    cands = candidates(tree, efiboot, out)
    samples: dict[str, list[Sample]] = {name: [] for name in cands}
    for _ in range(args.rounds):
        for name, argv in cands.items():  # interleaved
            samples[name].append(measure(argv, out))
    out.unlink(missing_ok=True)
    rows = [summarize(name, runs) for name, runs in samples.items()]
    best = min(r.wall_median for r in rows)
    result = {
        "benchmark": "iso",
        "input_bytes": input_bytes,
        "rounds": args.rounds,
        "loadavg_at_end": os.getloadavg(),
        "rows": [asdict(r) for r in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"**iso writing (input {input_bytes} bytes, {args.rounds} interleaved rounds, medians)**\n")
    columns = ["tool", "wall s median (min-max)", "CPU s (user+sys)", "user / sys", "peak RSS MB", "MB/s"]
    print("| " + " | ".join([*columns, "vs best", "output bytes"]) + " |")
    print("|---" * (len(columns) + 2) + "|")
    for r in rows:
        print(
            f"| {r.tool} | {r.wall_median:.2f} ({r.wall_min:.2f}-{r.wall_max:.2f}) "
            f"| {r.cpu_median:.2f} | {r.user_median:.2f} / {r.sys_median:.2f} "
            f"| {r.rss_mb_median:.0f} | {input_bytes / r.wall_median / 1e6:.0f} "
            f"| {r.wall_median / best:.2f} | {r.out_bytes} |"
        )


@dataclass(frozen=True)
class Row:
    tool: str
    wall_median: float
    wall_min: float
    wall_max: float
    cpu_median: float
    user_median: float
    sys_median: float
    rss_mb_median: float
    out_bytes: int
    runs: list[Sample]


def summarize(name: str, runs: list[Sample]) -> Row:
    walls = [s.wall for s in runs]
    return Row(
        name, statistics.median(walls), min(walls), max(walls),
        statistics.median(s.cpu for s in runs), statistics.median(s.user for s in runs),
        statistics.median(s.sys for s in runs), statistics.median(s.rss_mb for s in runs),
        runs[-1].out_bytes, runs,
    )  # fmt: skip


if __name__ == "__main__":
    main()
