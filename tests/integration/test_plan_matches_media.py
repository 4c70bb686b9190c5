"""Building executes the plan: the media hold exactly the planned files, with the planned sizes
where the plan knew them and the result's sizes where it estimated -- for ISO and PXE, bootstrap
and full-os. Results describe one build each; ``liveos plan/iso --json`` print plain JSON.

The crafted image (tests/liveimagekit.py) runs the real pipeline in seconds: real mounts, the
image's (tiny) dracut in its chroot, mksquashfs, the CPIO writer, pycdlib.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from liveos.image.isofs import EntryKind, IsoReader
from liveos.live import LiveOS
from liveos.plan import BuildPlan
from liveos.result import BuildResult
from tests.conftest import FixtureImageFactory
from tests.liveimagekit import leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]
REPO = Path(__file__).resolve().parent.parent.parent
#: The crafted image's dracut knows a network module (bootstrap PXE needs one).
NETWORK = {"/usr/lib/dracut/modules.d/35network-legacy/module-setup.sh": "", "/usr/sbin/dhclient": ""}


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return live_image(tmp_path_factory.mktemp("crafted"), root=NETWORK)


@pytest.fixture
def live(image: Path, tmp_path: Path) -> Iterator[LiveOS]:
    work = tmp_path / "work"
    work.mkdir()
    with LiveOS.open(image, workdir=work) as opened:
        yield opened.with_label("PLANNED")
    assert leftovers(image, work) == []


def iso_files(iso: Path) -> dict[str, int]:
    with IsoReader(iso) as reader:
        return {
            e.path: e.size for e in reader.walk("/") if e.kind is EntryKind.FILE and e.path != "/boot.cat"
        }


def check_files(plan: BuildPlan, result: BuildResult, found: dict[str, int]) -> None:
    """The found files are the planned ones; exact sizes where planned, the result's where estimated."""
    planned = {str(f.path): f for f in plan.files}
    assert set(found) == set(planned)
    for path, f in planned.items():
        expected = result.step(f.source).size if f.estimated else f.size
        assert found[path] == expected, path


def check_result(plan: BuildPlan, result: BuildResult) -> None:
    assert result.plan is plan and result.label == plan.label == "PLANNED"
    assert result.entries == plan.entries and result.mode is plan.mode
    assert [s.product for s in result.steps] == [s.product for s in plan.steps]
    assert all(s.seconds >= 0 for s in result.steps) and result.seconds > 0
    assert json.loads(json.dumps(result.to_dict()))["sha256"] == result.sha256


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_iso_holds_what_the_plan_says(live: LiveOS, tmp_path: Path, mode: str) -> None:
    media = live.with_mode(mode)
    plan = media.plan()
    result = media.build(plan, tmp_path / "live.iso")
    check_files(plan, result, iso_files(result.output))
    check_result(plan, result)
    assert result.sha256 == hashlib.sha256(result.output.read_bytes()).hexdigest()
    assert result.size == result.output.stat().st_size
    with IsoReader(result.output) as reader:
        assert reader.read_bytes("/boot/grub2/grub.cfg") == plan.file("/boot/grub2/grub.cfg").data


def test_pxe_folder_holds_what_the_plan_says(live: LiveOS, tmp_path: Path) -> None:
    media = live.full_os()
    plan = media.plan("pxe")
    result = media.build(plan, tmp_path / "tftp")
    found = {
        "/" + p.relative_to(result.output).as_posix(): p.stat().st_size
        for p in result.output.rglob("*")
        if p.is_file()
    }
    check_files(plan, result, found)
    check_result(plan, result)
    assert result.size == sum(found.values()) and not result.archive


def test_pxe_archive_holds_what_the_plan_says(live: LiveOS, tmp_path: Path) -> None:
    plan = live.bootstrap().plan("pxe", base_url="http://10.0.2.100/pxe/")
    result = live.bootstrap().build(plan, tmp_path / "pxe.tar.gz")
    with tarfile.open(result.output) as tar:
        found = {"/" + m.name: m.size for m in tar.getmembers() if m.isfile()}
        tar.extract("live.iso", tmp_path, filter="data")
    check_files(plan, result, found)
    check_result(plan, result)
    assert result.archive and result.sha256 == hashlib.sha256(result.output.read_bytes()).hexdigest()
    assert plan.iso is not None
    inner = iso_files(tmp_path / "live.iso")
    assert set(inner) == {str(f.path) for f in plan.iso.files}


def test_results_are_per_build(live: LiveOS, tmp_path: Path) -> None:
    first = live.full_os("none").write_iso(tmp_path / "a.iso")
    second = live.full_os("none").write_iso(tmp_path / "b.iso")
    assert (
        [s.product for s in first.steps]
        == [s.product for s in second.steps]
        == [
            "initrd.img",
            "efiboot.img",
            "eltorito.img",
            "iso",
        ]
    )
    assert first.steps is not second.steps and first.step("initrd.img").compression == "none"


def test_cli_plan_and_build_print_json(image: Path, tmp_path: Path) -> None:
    def liveos(*args: str) -> dict[str, object]:
        proc = subprocess.run(
            [sys.executable, "-m", "liveos", *args, "--workdir", str(tmp_path), "--label", "PLANNED"],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        data: dict[str, object] = json.loads(proc.stdout)
        return data

    plan = liveos("plan", str(image), "--json", "--mode", "full-os", "--kernel-arg", "quiet")
    assert plan["mode"] == "full-os" and plan["label"] == "PLANNED"
    assert not (tmp_path / "out.iso").exists()
    built = liveos("iso", str(image), "-o", str(tmp_path / "out.iso"), "--json", "--mode", "full-os")
    assert built["output"] == str(tmp_path / "out.iso") and built["label"] == "PLANNED"
    steps = built["steps"]
    assert isinstance(steps, list) and [s["kind"] for s in steps] == ["cpio", "efiboot", "biosboot", "iso"]
    pxe_plan = liveos("plan", str(image), "--json", "--kind", "pxe", "--base-url", "http://h/p/")
    assert pxe_plan["bootstrap_url"] == "http://h/p/live.iso"


def test_plan_of_the_demo_image_takes_seconds_and_runs_nothing(
    fixture_image: FixtureImageFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The demo image (the azl fixture, as `nox -s demo` builds it): opening it runs tools,
    planning runs none -- no dracut, no mksquashfs, no compressor."""
    image = fixture_image("azl", "qcow2").path
    with LiveOS.open(image, workdir=tmp_path) as live:

        def refuse(*args: object, **kwargs: object) -> None:
            raise AssertionError(f"plan() started a process: {args[1:2]}")

        monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
        started = time.monotonic()
        plans = [live.plan(), live.full_os().plan(), live.plan("pxe", base_url="http://10.0.2.100/")]
        elapsed = time.monotonic() - started
        monkeypatch.undo()
    assert elapsed < 30, f"three plans took {elapsed:.1f} s"
    assert [p.output for p in plans] == ["iso", "iso", "pxe"]
    assert all(json.loads(json.dumps(p.to_dict())) for p in plans)
