"""Benchmark: the open -> tweak -> build -> boot loop -- cold builds, rebuilds, warm caches.

Image: the ``azl`` qcow2 test fixture. Each round runs, interleaved, as separate processes:

* ``by hand``: bench_build's by-hand bootstrap recipe (the image's dracut with its own settings,
  mksquashfs, xorriso) -- the reference for the first build;
* ``loop`` (an empty cache): open, the first bootstrap ISO, then in the same process a rebuild
  after changing ``/etc/motd`` and one after changing only the kernel arguments;
* ``warm`` (the cache ``loop`` left): a fresh process building the unchanged image again;
* ``full-os`` (an empty cache): open, the first full-os ISO, a rebuild after a one-file change;
* ``open`` on the fixture and on :mod:`benchmarks.bigimage`'s variant with 4x its data (qcow2
  both): opening (partitions, mounts, os-release, kernels) should cost what is read, so the ratio
  of the two should stay near 1, not near 4.

In-process times are taken by the child (``first`` counts from before ``import liveos`` to the
end of the first build, like the by-hand process from fork to reap); the whole-process wall,
CPU and peak RSS of every child come from ``wait4``. Peak RSS of liveos' *own* process (not
dracut's or mksquashfs') is the child's ``RUSAGE_SELF``. Ratios use the minimum over rounds.

Run as root from the repo root: ``python3 -m benchmarks.bench_rebuild [--rounds 2] [--quick]``.
Writes ``benchmarks/results/rebuild.json`` and prints markdown tables.
"""

from __future__ import annotations

import time

T0 = time.perf_counter()  # before liveos is imported: the child's "first build" starts here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks._timing import run_once, write_results  # noqa: E402
from benchmarks.bench_build import fixture_image, leftovers, machine, run_candidate  # noqa: E402
from benchmarks.bigimage import big_image  # noqa: E402

if TYPE_CHECKING:  # imported in the child only, after T0: the import is part of its first build
    from liveos.live import LiveOS

WORK = Path("/var/tmp/liveos-bench-rebuild")
LABEL = "BENCH"
#: name -> (what it measures, the limit the issue sets, as "x of what")
TARGETS = {
    "first_vs_hand": ("first bootstrap ISO / by-hand recipe (image's dracut settings)", 0.5),
    "motd_vs_first": ("rebuild after changing /etc/motd / first build (same process)", 0.15),
    "args_vs_first": ("rebuild after changing only kernel arguments / first build", 0.05),
    "warm_vs_cold": ("fresh process, unchanged image, warm cache / cold (first) build", 0.2),
    "fullos_vs_first": ("full-os rebuild after a one-file change / first full-os build", 0.5),
    "open_big_vs_fixture": ("open an image with 4x the data / open the fixture", 2.0),
}


def _steps(result: object) -> list[dict[str, object]]:
    steps = getattr(result, "steps", ())
    return [
        {"kind": str(s.kind), "product": s.product, "seconds": round(s.seconds, 3), "cached": s.cached}
        for s in steps
    ]


Row = dict[str, object]


def num(data: Row, key: str) -> float:
    """A number the children recorded."""
    value = data[key]
    assert isinstance(value, (int, float)), (key, value)
    return float(value)


def steps_of(data: Row, key: str) -> list[Row]:
    value = data[key]
    assert isinstance(value, list)
    return value


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed(out: dict[str, object], key: str, job: LiveOS, iso: Path) -> None:
    """Build ``iso`` from ``job``; record ``<key>_build`` seconds and ``<key>_steps``."""
    start = time.perf_counter()
    result = job.write_iso(iso)
    out[f"{key}_build"] = time.perf_counter() - start
    out[f"{key}_steps"] = _steps(result)


def child(scenario: str, image: Path, work: Path) -> dict[str, object]:
    """One scenario in this process (``LIVEOS_CACHE_DIR`` set by the parent)."""
    from liveos.live import LiveOS

    out: dict[str, object] = {"scenario": scenario}
    opened = time.perf_counter()
    with LiveOS.open(image, workdir=work) as live:
        if scenario.startswith("open"):
            out["os"] = live.rootfs.os_release().get("PRETTY_NAME", "")
            out["kernels"] = [str(k.version) for k in live.rootfs.kernels()]
        out["open"] = time.perf_counter() - opened
        if scenario.startswith("open"):
            out["liveos_rss_mb"] = _rss_mb()
            return out
        job = live.with_label(LABEL)
        if scenario == "full-os":
            job = job.full_os()
        start = time.perf_counter()
        first = job.write_iso(work / f"{scenario}-1.iso")
        out["first"] = time.perf_counter() - T0  # process start (before imports) to the first ISO
        out["first_build"] = time.perf_counter() - start
        out["first_steps"] = _steps(first)
        if scenario in ("loop", "full-os"):
            live.rootfs.write_text("/etc/motd", "rebuilt by the benchmark\n")
            _timed(out, "motd" if scenario == "loop" else "second", job, work / f"{scenario}-2.iso")
        if scenario == "loop":
            _timed(out, "args", job.with_kernel_args("quiet"), work / f"{scenario}-3.iso")
    out["liveos_rss_mb"] = _rss_mb()
    for iso in work.glob(f"{scenario}*.iso"):
        iso.unlink()
    return out


def run_child(scenario: str, image: Path, work: Path, cache: Path) -> dict[str, object]:
    result = work / f"{scenario}.json"
    result.unlink(missing_ok=True)
    os.sync()
    argv = [sys.executable, "-m", "benchmarks.bench_rebuild", "--child", scenario, "--image", str(image),
            "--work", str(work), "--result", str(result)]  # fmt: skip
    sample = run_once(argv, cwd=REPO, env={"LIVEOS_CACHE_DIR": str(cache)})
    data: dict[str, object] = json.loads(result.read_text())
    result.unlink()
    left = leftovers(work)
    if left:
        raise RuntimeError(f"{scenario} left mounts/loop devices behind: {left}")
    data.update(wall=sample.wall, cpu=sample.cpu, rss_mb=sample.rss_mb, other_cpu=sample.other_cpu)
    return data


def one_round(image: Path, big: Path, work: Path) -> dict[str, Row]:
    caches = work / "caches"
    shutil.rmtree(caches, ignore_errors=True)
    caches.mkdir()
    opened = run_child("open", image, work, caches / "open")
    opened_big = run_child("open-big", big, work, caches / "open")
    hand = run_candidate("hand-bootstrap", image, work)
    loop = run_child("loop", image, work, caches / "loop")
    warm = run_child("warm", image, work, caches / "loop")  # the cache the loop left
    full = run_child("full-os", image, work, caches / "full-os")
    shutil.rmtree(caches, ignore_errors=True)
    return {
        "hand": hand,
        "loop": loop,
        "warm": warm,
        "full-os": full,
        "open": opened,
        "open-big": opened_big,
    }


def ratios(rounds: list[dict[str, Row]]) -> dict[str, dict[str, float]]:
    """Each target's ratio per round, and the ratio of the minima."""

    def values(scenario: str, key: str) -> list[float]:
        return [num(r[scenario], key) for r in rounds]

    pairs = {
        "first_vs_hand": (values("loop", "first"), values("hand", "wall")),
        "motd_vs_first": (values("loop", "motd_build"), values("loop", "first_build")),
        "args_vs_first": (values("loop", "args_build"), values("loop", "first_build")),
        "warm_vs_cold": (values("warm", "first"), values("loop", "first")),
        "fullos_vs_first": (values("full-os", "second_build"), values("full-os", "first_build")),
        "open_big_vs_fixture": (values("open-big", "open"), values("open", "open")),
    }
    out = {}
    for name, (a, b) in pairs.items():
        out[name] = {
            "value_min": min(a),
            "reference_min": min(b),
            "ratio_of_minima": min(a) / min(b),
            "ratio_median": statistics.median(x / y for x, y in zip(a, b, strict=True)),
            "target": TARGETS[name][1],
        }
    return out


def _step_table(title: str, steps: list[dict[str, object]]) -> list[str]:
    lines = [f"**{title}**\n", "| step | product | s | reused |", "|---|---|---|---|"]
    for s in steps:
        reused = "yes" if s["cached"] else ""
        lines.append(f"| {s['kind']} | {s['product']} | {num(s, 'seconds'):.2f} | {reused} |")
    return [*lines, ""]


def markdown(rounds: list[dict[str, Row]], summary: dict[str, dict[str, float]]) -> str:
    lines = [
        "| loop | this s (min) | reference s (min) | ratio of minima (median of ratios) | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        met = "yes" if row["ratio_of_minima"] <= row["target"] else "**no**"
        lines.append(
            f"| {TARGETS[name][0]} | {row['value_min']:.2f} | {row['reference_min']:.2f} "
            f"| {row['ratio_of_minima']:.3f} ({row['ratio_median']:.3f}) | <= {row['target']} | {met} |"
        )
    rss = {k: max(num(r[k], "liveos_rss_mb") for r in rounds) for k in ("loop", "warm", "full-os")}
    lines.append("")
    lines.append(
        "Peak RSS of liveos' own process (MB, max over rounds): "
        + ", ".join(f"{k} {v:.0f}" for k, v in rss.items())
        + " (limit 64 MiB = 67 MB).\n"
    )
    last = rounds[-1]
    lines += _step_table("cold bootstrap build (loop, first)", steps_of(last["loop"], "first_steps"))
    lines += _step_table("after changing /etc/motd", steps_of(last["loop"], "motd_steps"))
    lines += _step_table("after changing only kernel arguments", steps_of(last["loop"], "args_steps"))
    lines += _step_table("fresh process, warm cache", steps_of(last["warm"], "first_steps"))
    lines += _step_table("cold full-os build", steps_of(last["full-os"], "first_steps"))
    lines += _step_table("full-os after a one-file change", steps_of(last["full-os"], "second_steps"))
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    ap.add_argument("--quick", action="store_true", help="1 round")
    ap.add_argument("--image", type=Path, help="disk image (default: the azl qcow2 fixture)")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "rebuild.json")
    ap.add_argument("--big-image", type=Path, help="image with 4x the data (default: benchmarks.bigimage)")
    ap.add_argument(
        "--child", choices=("loop", "warm", "full-os", "open", "open-big"), help=argparse.SUPPRESS
    )
    ap.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        args.result.write_text(json.dumps(child(args.child, args.image, args.work)))
        return 0
    image = (args.image or fixture_image()).resolve()
    big = (args.big_image or big_image("qcow2", 4).path).resolve()
    count = 1 if args.quick else args.rounds
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    rounds = []
    for index in range(count):
        rounds.append(one_round(image, big, args.work))
        r = rounds[-1]
        print(
            f"round {index + 1}/{count}: hand {num(r['hand'], 'wall'):.1f} s, "
            f"first {num(r['loop'], 'first'):.1f} s, "
            f"motd {num(r['loop'], 'motd_build'):.2f} s, args {num(r['loop'], 'args_build'):.2f} s, "
            f"warm {num(r['warm'], 'first'):.2f} s, full-os {num(r['full-os'], 'first_build'):.1f} -> "
            f"{num(r['full-os'], 'second_build'):.2f} s, open {num(r['open'], 'open'):.2f} s, "
            f"open 4x {num(r['open-big'], 'open'):.2f} s",
            flush=True,
        )
    summary = ratios(rounds)
    table = markdown(rounds, summary)
    print("\n" + table)
    write_results(
        args.json,
        {
            "benchmark": "rebuild",
            "image": str(image),
            "image_bytes": image.stat().st_size,
            "big_image": str(big),
            "big_image_bytes": big.stat().st_size,
            "rounds": count,
            "statistic": "ratio of the minima over rounds (median of per-round ratios recorded too)",
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "summary": summary,
            "samples": rounds,
            "markdown": table,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
