"""Run every liveos benchmark, then print the tables docs/performance.md is made of.

    python3 -m benchmarks                 # all: cpio (long: a 2.9 GB corpus once), iso, build, rebuild
    python3 -m benchmarks --quick         # 1 round each, no 2x-tree cpio run, no zstd-15 build path
    python3 -m benchmarks --reuse         # keep results/*.json that exist, run only the missing ones
    python3 -m benchmarks --skip cpio     # leave some out (comma-separated: cpio,iso,build,rebuild)
    python3 -m benchmarks --tables        # run nothing; print the tables from results/*.json

Each benchmark runs as its own process (so one's peak RSS or page cache state does not leak into
another's figures) and writes ``benchmarks/results/<name>.json``. Needs root (loop devices, mounts).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
BENCHES = ("cpio", "iso", "build", "rebuild")


def command(name: str, quick: bool) -> list[str]:
    """The command line of one benchmark."""
    py = sys.executable
    if name == "cpio":
        return [
            py,
            str(REPO / "benchmarks" / "bench_cpio.py"),
            *(["--rounds", "1", "--no-double"] if quick else []),
        ]
    if name == "iso":
        return [py, "-m", "benchmarks.bench_iso", *(["--rounds", "1"] if quick else [])]
    if name == "rebuild":
        return [py, "-m", "benchmarks.bench_rebuild", *(["--quick"] if quick else [])]
    return [py, "-m", "benchmarks.bench_build", *(["--quick"] if quick else [])]


def _load(name: str) -> dict[str, object] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _cpio_tables(data: dict[str, object]) -> str:
    facts = data["facts"]
    assert isinstance(facts, dict)
    out = [
        f"Tree: {facts['entries']} entries, {facts['bytes'] / 1e9:.2f} GB, {data['threads']} threads, "
        f"{data['rounds']} interleaved rounds, medians (finished {data.get('finished', '?')}).\n"
    ]
    for section in ("uncompressed newc to a file", "zstd-3 newc, all cores", "reader", "2x tree"):
        rows = data.get(section)
        if not isinstance(rows, list):
            continue
        out += [
            f"**{section}**\n",
            "| candidate | wall s median (min-max) | CPU s | peak RSS MB "
            "| liveos wall / this wall (<1: liveos faster) | output bytes |",
            "|---|---|---|---|---|---|",
        ]
        groups = [rows[:3], rows[3:]] if section == "2x tree" else [rows]
        for group in groups:
            ref = group[0]["wall_median"]
            for row in group:
                lo, hi = row["wall_min_max"]
                name = row["name"].replace("|", "\\|")
                out.append(
                    f"| {name} | {row['wall_median']:.2f} ({lo:.2f}-{hi:.2f}) | {row['cpu_median']:.2f} "
                    f"| {row['rss_mb_max']:.0f} | {ref / row['wall_median']:.2f} "
                    f"| {row.get('output_bytes', '')} |"
                )
        out.append("")
    return "\n".join(out)


def _iso_table(data: dict[str, object]) -> str:
    rows = data["rows"]
    load = data["loadavg_at_end"]
    assert isinstance(rows, list) and isinstance(load, list)
    xorriso = next((r["wall_median"] for r in rows if r["tool"].startswith("xorriso")), None)
    out = [
        f"Input {data['input_bytes']} bytes, {data['rounds']} interleaved rounds, medians; "
        f"load average at the end {', '.join(f'{x:.2f}' for x in load)}.\n",
        "| tool | wall s median (min-max) | CPU s | peak RSS MB | wall / xorriso plain |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['wall_median'] / xorriso:.2f}" if xorriso else ""
        out.append(
            f"| {r['tool']} | {r['wall_median']:.2f} ({r['wall_min']:.2f}-{r['wall_max']:.2f}) "
            f"| {r['cpu_median']:.2f} | {r['rss_mb_median']:.0f} | {ratio} |"
        )
    return "\n".join(out) + "\n"


def tables() -> str:
    """Markdown for every results/*.json present."""
    parts: list[str] = []
    for name, render in (("cpio", _cpio_tables), ("iso", _iso_table)):
        data = _load(name)
        if data is not None:
            parts.append(f"## {name}\n\n" + render(data))
    build = _load("build")
    if build is not None:
        parts.append(
            f"## build\n\nImage {build['image']} ({build['image_bytes']} bytes), {build['rounds']} rounds, "
            f"{build['statistic']} ({build['started']} - {build['finished']}).\n\n{build['markdown']}"
        )
    rebuild = _load("rebuild")
    if rebuild is not None:
        parts.append(
            f"## rebuild\n\nImage {rebuild['image']} ({rebuild['image_bytes']} bytes), {rebuild['rounds']} "
            f"rounds, {rebuild['statistic']} ({rebuild['started']} - {rebuild['finished']}).\n\n"
            f"{rebuild['markdown']}"
        )
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 round each, skip the long variants")
    ap.add_argument("--reuse", action="store_true", help="skip benchmarks whose results/*.json exists")
    ap.add_argument("--skip", default="", help="comma-separated benchmarks to skip (cpio,iso,build,rebuild)")
    ap.add_argument("--tables", action="store_true", help="only print tables from recorded results")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - set(BENCHES)
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(sorted(unknown))}; choose from {', '.join(BENCHES)}")
    failed: list[str] = []
    if not args.tables:
        if os.geteuid() != 0:
            ap.error("benchmarks need root (loop devices, mounts, chroot)")
        for name in BENCHES:
            if name in skip or (args.reuse and (RESULTS / f"{name}.json").exists()):
                print(f"== {name}: skipped", flush=True)
                continue
            argv = command(name, args.quick)
            print(f"== {name}: {' '.join(argv)}", flush=True)
            if subprocess.run(argv, cwd=REPO).returncode != 0:
                failed.append(name)
    print("\n" + tables())
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
