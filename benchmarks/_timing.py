"""Whole-process timing for benchmarks: wall clock fork->reap, user+sys CPU and peak RSS.

The figures are what ``/usr/bin/time -v`` prints, from ``wait4()`` rusage: CPU includes every
descendant the command waited for (a shell pipeline counts all its stages), peak RSS is the
largest single process. Candidates run interleaved (A B C A B C ...) so that drifting machine
load hits all of them alike; medians are reported. ``other_cpu`` is the CPU time burnt by
*other* processes during the run (from ``/proc/stat``): the machine is shared, and a run with a
lot of it is suspect.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

_HZ = os.sysconf("SC_CLK_TCK")

Command = Sequence[str] | str  # argv, or a shell command line (pipelines)


@dataclass(frozen=True)
class Sample:
    """One run of one command."""

    wall: float
    user: float
    sys: float
    rss_mb: float
    other_cpu: float
    returncode: int

    @property
    def cpu(self) -> float:
        return self.user + self.sys


@dataclass
class Series:
    """All runs of one candidate, with medians."""

    name: str
    samples: list[Sample] = field(default_factory=list)
    extra: dict[str, object] = field(default_factory=dict)

    def median(self, attr: str) -> float:
        return float(statistics.median(getattr(s, attr) for s in self.samples))

    def span(self, attr: str) -> tuple[float, float]:
        values = [getattr(s, attr) for s in self.samples]
        return min(values), max(values)

    def summary(self) -> dict[str, object]:
        return {
            "name": self.name,
            "runs": len(self.samples),
            "wall_median": self.median("wall"),
            "wall_min_max": self.span("wall"),
            "cpu_median": self.median("cpu"),
            "user_median": self.median("user"),
            "sys_median": self.median("sys"),
            "rss_mb_max": max(s.rss_mb for s in self.samples),
            "other_cpu_median": self.median("other_cpu"),
            "samples": [asdict(s) | {"cpu": s.cpu} for s in self.samples],
            **self.extra,
        }


def _busy_seconds() -> float:
    """CPU seconds spent non-idle by the whole machine since boot."""
    with open("/proc/stat") as fp:
        fields = fp.readline().split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / _HZ


def run_once(cmd: Command, *, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Sample:
    """Run ``cmd`` once (stdout/stderr to /dev/null unless redirected by a shell command line)."""
    shell = isinstance(cmd, str)
    busy0 = _busy_seconds()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        shell=shell,
        cwd=cwd,
        env=None if env is None else {**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        executable="/bin/bash" if shell else None,
    )
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    busy = _busy_seconds() - busy0
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark command failed ({proc.returncode}): {cmd}\n{err.decode()[-2000:]}")
    cpu = ru.ru_utime + ru.ru_stime
    return Sample(
        wall=wall,
        user=ru.ru_utime,
        sys=ru.ru_stime,
        rss_mb=ru.ru_maxrss / 1024,
        other_cpu=max(0.0, busy - cpu),
        returncode=proc.returncode,
    )


def interleaved(
    candidates: Mapping[str, Command],
    *,
    rounds: int = 3,
    cwd: Path | None = None,
    before_each: Callable[[str], None] | None = None,
    after_each: Callable[[str, Sample], None] | None = None,
) -> dict[str, Series]:
    """Run every candidate ``rounds`` times, interleaved; ``before_each`` e.g. removes outputs + syncs."""
    series = {name: Series(name) for name in candidates}
    for _ in range(rounds):
        for name, cmd in candidates.items():
            if before_each is not None:
                before_each(name)
            sample = run_once(cmd, cwd=cwd)
            series[name].samples.append(sample)
            if after_each is not None:
                after_each(name, sample)
    return series


def markdown_table(series: Sequence[Series], *, reference: str | None = None, mb_input: float = 0.0) -> str:
    """A markdown table: medians, min-max, CPU, RSS, MB/s of input; ratios > 1: slower than ``reference``."""
    ref = next((s for s in series if s.name == reference), None)
    lines = [
        "| candidate | wall s median (min-max) | CPU s (user / sys) | peak RSS MB | MB/s | other CPU s "
        "| wall / ref wall | CPU / ref CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in series:
        wall = s.median("wall")
        lo, hi = s.span("wall")
        ratio = f"{wall / ref.median('wall'):.2f}" if ref else ""
        cpu_ratio = f"{s.median('cpu') / ref.median('cpu'):.2f}" if ref else ""
        mbs = f"{mb_input / wall:.0f}" if mb_input else ""
        label = s.name.replace("|", "\\|")
        lines.append(
            f"| {label} | {wall:.2f} ({lo:.2f}-{hi:.2f}) | {s.median('cpu'):.2f} "
            f"({s.median('user'):.2f} / {s.median('sys'):.2f}) | {max(x.rss_mb for x in s.samples):.0f} "
            f"| {mbs} | {s.median('other_cpu'):.2f} | {ratio} | {cpu_ratio} |"
        )
    return "\n".join(lines)


def write_results(path: Path, result: Mapping[str, object]) -> None:
    """Write one benchmark's results as JSON (the input of docs/performance.md's tables)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {path}")
