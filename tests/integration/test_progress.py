"""Progress of real builds: the fixture image built as a bootstrap ISO and as a full-os ISO with a
recording callback, then again by ``liveos iso --json`` in a subprocess whose stderr is a pipe.

Two real builds (a cache of the module's own, cold): every step of each result reports STARTED
and FINISHED; mksquashfs, the CPIO writer and the ISO writer report intermediate counts that
only grow and stay within their totals; the OS steps, running side by side, interleave. The
command line run reuses the bootstrap build's products (so it is quick) and prints plain lines
on stderr while stdout stays pure JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.live import LiveOS
from liveos.progress import Phase, ProgressEvent, Unit
from liveos.result import BuildResult
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]


class Recorder:
    """A progress callback that keeps every event, with the thread it came from."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def of(self, product: str) -> list[ProgressEvent]:
        return [e for e in self.events if e.product == product]


@dataclass(frozen=True)
class Built:
    image: FixtureImage
    cache: Path
    results: dict[str, tuple[BuildResult, Recorder]]


@pytest.fixture(scope="module")
def built(fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    image = fixture_image("azl", "qcow2")
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("out")
    saved = os.environ["LIVEOS_CACHE_DIR"]
    os.environ["LIVEOS_CACHE_DIR"] = str(cache)  # cold: every step really runs
    try:
        results = {}
        with LiveOS.open(image.path) as live:
            for mode in ("bootstrap", "full-os"):
                seen = Recorder()
                result = live.with_mode(mode).write_iso(out / f"{mode}.iso", progress=seen)
                assert not any(s.cached for s in result.steps), result.describe()
                results[mode] = (result, seen)
        yield Built(image, cache, results)
    finally:
        os.environ["LIVEOS_CACHE_DIR"] = saved


def check_counts(events: list[ProgressEvent], unit: Unit) -> None:
    """Intermediate counts that only grow, within their totals, and a finish that completes them."""
    advanced = [e for e in events if e.phase is Phase.ADVANCED]
    assert all(e.unit is unit and e.done is not None and e.total is not None for e in advanced)
    assert any(0 < (e.done or 0) < (e.total or 0) for e in advanced), advanced
    assert all((e.done or 0) <= (e.total or 0) for e in advanced)
    dones = [e.done or 0 for e in advanced]
    assert dones == sorted(dones)
    finished = events[-1]
    assert finished.phase is Phase.FINISHED and finished.done == finished.total
    assert (finished.done or 0) >= dones[-1]  # the last count may have been held back (throttled)


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_every_step_starts_and_finishes_and_the_writers_count(built: Built, mode: str) -> None:
    result, seen = built.results[mode]
    assert {(e.step, e.product) for e in seen.events} == {(s.kind.value, s.product) for s in result.steps}
    for step in result.steps:
        phases = [e.phase for e in seen.of(step.product)]
        assert phases[0] is Phase.STARTED and phases[-1] is Phase.FINISHED, (step.product, phases)
        assert set(phases[1:-1]) <= {Phase.ADVANCED}
        assert not seen.of(step.product)[-1].reused
    check_counts(seen.of("iso"), Unit.BYTES)
    assert (seen.of("iso")[-1].done or 0) <= (result.step("iso").size or 0)  # + the USB tables
    if mode == "bootstrap":
        check_counts(seen.of("rootfs.img"), Unit.ITEMS)  # mksquashfs's own bar
        dracut = next(s.product for s in result.steps if s.kind.value == "dracut")
        assert [e.phase for e in seen.of(dracut)] == [Phase.STARTED, Phase.FINISHED]  # indeterminate
        # dracut and mksquashfs ran side by side: each started before the other finished
        order = [(e.product, e.phase) for e in seen.events]
        for one, other in ((dracut, "rootfs.img"), ("rootfs.img", dracut)):
            assert order.index((one, Phase.STARTED)) < order.index((other, Phase.FINISHED))
    else:
        check_counts(seen.of("initrd.img"), Unit.BYTES)  # the CPIO writer's bytes
        assert seen.of("initrd.img")[-1].done == result.step("initrd.img").size


def test_the_command_line_prints_plain_progress_and_clean_json(built: Built, tmp_path: Path) -> None:
    env = {**os.environ, "LIVEOS_CACHE_DIR": str(built.cache)}
    out = tmp_path / "cli.iso"
    proc = subprocess.run(
        [sys.executable, "-m", "liveos", "iso", str(built.image.path), "-o", str(out), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["output"] == str(out)
    lines = proc.stderr.splitlines()
    assert "\r" not in proc.stderr and "\x1b" not in proc.stderr  # lines, not a redrawn bar
    for step in data["steps"]:
        name = step["kind"] if step["product"] == step["kind"] else f"{step['kind']} {step['product']}"
        assert f"liveos: {name}: started" in lines, proc.stderr
        ends = [line for line in lines if line.startswith(f"liveos: {name}: ") and "started" not in line]
        if step["cached"]:
            assert ends[-1].startswith(f"liveos: {name}: reused"), proc.stderr
        else:
            assert ends[-1].startswith(f"liveos: {name}: done in"), proc.stderr
    assert any(s["cached"] for s in data["steps"])  # dracut and mksquashfs were not run again
