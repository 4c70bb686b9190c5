"""What the fuzz tests share: example counters, the example scale, hypothesis settings, CPU and
memory bounds, a canary directory and a snapshot of a directory tree (to see that nothing outside
an extraction target changed).

Each fuzz module counts the examples it ran in ``RUNS = runs(__name__)``; ``conftest.py`` prints
the counts at the end of the module (visible with ``pytest -s``). ``LIVEOS_FUZZ_SCALE=N`` runs N
times the examples of the tests that size themselves with :func:`examples`.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import stat
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, settings

MIB = 1 << 20
#: Seconds one small input may take (typically a few milliseconds).
PER_INPUT_SECONDS = 2.0
#: Peak Python allocations for one small input.
MAX_PEAK = 64 * MIB
SCALE = int(os.environ.get("LIVEOS_FUZZ_SCALE", "1"))

_RUNS: dict[str, collections.Counter[str]] = {}


def runs(module: str) -> collections.Counter[str]:
    """The examples each test of ``module`` actually ran, by name."""
    return _RUNS.setdefault(module, collections.Counter())


def report(module: str) -> str | None:
    """The line ``conftest.py`` prints at the end of ``module``, if it counts its examples."""
    if module not in _RUNS:
        return None
    counts = ", ".join(f"{name}={count}" for name, count in sorted(_RUNS[module].items()))
    return f"\n[{module.rpartition('.')[2]}] fuzz examples run: {counts}"


def examples(count: int) -> int:
    return count * SCALE


def fuzz_settings(max_examples: int | None = None, *, deadline: timedelta | None = None) -> settings:
    """Hypothesis settings for fuzzing: no health check for slow or large inputs."""
    base = settings(
        deadline=deadline, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
    )
    return base if max_examples is None else settings(base, max_examples=max_examples)


@dataclass
class Usage:
    """CPU seconds and peak Python allocations (bytes) of a :func:`measured` block."""

    seconds: float = 0.0
    peak: int = 0


@contextlib.contextmanager
def measured() -> Iterator[Usage]:
    """Measure the block's CPU time and peak Python allocations (set when the block ends)."""
    usage = Usage()
    tracemalloc.start()
    start = time.process_time()
    try:
        yield usage
    finally:
        usage.seconds = time.process_time() - start
        usage.peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()


@contextlib.contextmanager
def bounded(
    peak: int = MAX_PEAK, *, seconds: float = PER_INPUT_SECONDS, what: str = "one input"
) -> Iterator[None]:
    """Assert the block's CPU time and peak Python allocations."""
    with measured() as usage:
        yield
    assert usage.seconds < seconds, f"{usage.seconds:.2f} s of CPU for {what}"
    assert usage.peak < peak, f"{usage.peak >> 20} MiB peak for {what}"


def make_canary(root: Path) -> Path:
    """``root/canary``: host files (a secret, a subdirectory) that an extraction next to it, or
    the symlinks of a hostile image pointing at it, must never change."""
    canary = root / "canary"
    (canary / "sub").mkdir(parents=True)
    (canary / "secret").write_text("host secret\n")
    (canary / "secret").chmod(0o600)
    (canary / "sub" / "file").write_text("host file\n")
    return canary


def tree_state(top: Path, skip: Path | None = None) -> dict[str, tuple[object, ...]]:
    """Everything about ``top`` (but ``skip``) that a hostile extraction could change."""
    state: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        here = Path(dirpath)
        if skip is not None and here == skip:
            dirnames.clear()
            continue
        for name in [".", *dirnames, *filenames]:
            path = here / name
            if skip is not None and path == skip:
                continue
            st_ = path.lstat()
            item: tuple[object, ...] = (st_.st_mode, st_.st_uid, st_.st_gid, st_.st_mtime_ns, st_.st_nlink)
            if stat.S_ISREG(st_.st_mode):
                item += (hashlib.sha256(path.read_bytes()).hexdigest(),)
            elif stat.S_ISLNK(st_.st_mode):
                item += (os.readlink(path),)
            state[str(path.relative_to(top))] = item
    return state
