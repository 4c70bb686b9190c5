"""Interrupted builds leave nothing behind: no mount, no loop device, no partial output, no scratch.

Two ways to interrupt:

* a real ``liveos iso`` build of the Azure-Linux-layout fixture in a subprocess, signalled with
  SIGTERM or SIGINT (to the process alone, or to its whole process group as Ctrl-C does) once it
  has mounted the image, while dracut runs in the chroot, and while mksquashfs runs;
* fault injection in-process on a small crafted image: after *each* external command liveos runs
  (the command really ran: its mount or loop device exists but may not be recorded yet) and in
  place of each Python step of the pipeline, an exception is raised.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import liveos.initramfs
import liveos.media.stage
import liveos.run
from liveos.errors import CommandError
from liveos.live import LiveOS
from tests.conftest import FixtureImageFactory
from tests.imagekit import comm, descendants, sha256
from tests.liveimagekit import leftovers, live_image

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="loop devices and mounts need root"),
]
REPO = Path(__file__).resolve().parent.parent.parent
#: Generous bound for "promptly": cleanup is seconds; this only keeps a hung build from hanging CI.
EXIT_BOUND = 120.0


# -- signals to a real build --------------------------------------------------------------------
@pytest.fixture(scope="module")
def azl(fixture_image: FixtureImageFactory) -> tuple[Path, str]:
    image = fixture_image("azl", "qcow2").path
    return image, sha256(image)


def mountinfo(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/mountinfo").read_text()
    except OSError:
        return ""


def loops_of(*paths: Path) -> list[str]:
    """Attached loop devices whose backing file lies in ``paths`` (``losetup -a``)."""
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if any(str(p) in line for p in paths)]


def running(name: str) -> Callable[[int, Path], bool]:
    return lambda pid, work: any(comm(child) == name for child in descendants(pid))


def overlay_mounted(pid: int, work: Path) -> bool:
    """The build's overlay exists -- in its own mount namespace, not in the host's."""
    return any(" - overlay " in line and str(work) in line for line in mountinfo(pid).splitlines())


def cpio_growing(pid: int, work: Path) -> bool:
    """The full-os CPIO is being written (its temporary name) or done (its name)."""
    out = work.parent / "out"
    found = [*out.glob("liveos-media-*/initrd.img"), *out.glob("liveos-media-*/.initrd.img.tmp-*")]
    return any(_size(p) > 1 << 20 for p in found)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed or removed meanwhile
        return 0


#: Points of a build to signal it at: (mode, predicate on (liveos pid, work dir)).
POINTS: dict[str, tuple[str, Callable[[int, Path], bool]]] = {
    "mounted": ("bootstrap", overlay_mounted),
    "dracut": ("bootstrap", running("dracut")),
    "mksquashfs": ("bootstrap", running("mksquashfs")),
    "cpio": ("full-os", cpio_growing),
}


@pytest.mark.parametrize(
    ("point", "signum", "group"),
    [
        ("mounted", signal.SIGTERM, False),
        ("mounted", signal.SIGKILL, False),
        ("dracut", signal.SIGINT, False),
        ("dracut", signal.SIGKILL, False),
        ("dracut", signal.SIGINT, True),
        ("mksquashfs", signal.SIGTERM, False),
        ("mksquashfs", signal.SIGKILL, False),
        ("cpio", signal.SIGINT, False),
        ("cpio", signal.SIGKILL, False),
    ],
    ids=lambda v: v.name.removeprefix("SIG") if isinstance(v, signal.Signals) else str(v),
)
def test_signal_mid_build(
    azl: tuple[Path, str], tmp_path: Path, point: str, signum: signal.Signals, group: bool
) -> None:
    """A signal to the liveos process alone (as a build system or timeout sends it): within
    seconds no process it started runs, no loop device of it is attached, its mounts were never
    in the host's mount table; after SIGINT/SIGTERM its scratch is gone too, after SIGKILL the
    next run sweeps it."""
    image, digest = azl
    workdir, outdir = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    outdir.mkdir()
    out = outdir / "live.iso"
    stderr_path = tmp_path / "stderr.log"
    mode, reached = POINTS[point]
    argv = [sys.executable, "-m", "liveos", "-v", "iso", str(image), "-o", str(out)]
    argv += ["--workdir", str(workdir), "--mode", mode, "--no-cache"]  # every step must run
    if point == "mksquashfs":
        argv += ["--preset", "small"]  # the slowest squashfs: a wide window to signal mksquashfs in
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    seen: set[int] = set()
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 600
            while not reached(proc.pid, workdir):
                seen |= descendants(proc.pid)
                assert proc.poll() is None, (
                    f"the build ended before {point}: {stderr_path.read_text()[-2000:]}"
                )
                assert time.monotonic() < deadline, f"the build never reached {point}"
                time.sleep(0.05)
            seen |= descendants(proc.pid)
            assert str(workdir) not in Path("/proc/1/mountinfo").read_text(), "mounts leaked to the host"
            if group:
                os.killpg(proc.pid, signum)
            else:
                os.kill(proc.pid, signum)
            code = proc.wait(timeout=EXIT_BOUND)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log = stderr_path.read_text()
    expected = -signum if signum == signal.SIGKILL else 128 + signum
    assert code == expected, f"exit code {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    settle = time.monotonic() + 10
    while (alive := [p for p in seen if comm(p)]) or loops_of(workdir, image):
        left = f"processes {[comm(p) for p in alive]}, loop devices {loops_of(workdir, image)}"
        assert time.monotonic() < settle, f"left behind 10 s after the signal: {left}"
        time.sleep(0.2)
    assert sha256(image) == digest, "the input image changed"
    if signum != signal.SIGKILL:
        assert leftovers(image, workdir, out) == []
        assert list(outdir.iterdir()) == [], "the output directory is not empty"
        return
    # SIGKILL: scratch files may remain (nothing can catch it); the next run sweeps them.
    assert not out.exists()
    subprocess.run(
        [sys.executable, "-m", "liveos", "plan", str(image), "--workdir", str(workdir), "--mode", mode],
        cwd=REPO, env=env, capture_output=True, check=True,
    )  # fmt: skip
    assert list(workdir.iterdir()) == [], "the next run did not sweep the killed build's scratch"


# -- fault injection at every step, in-process --------------------------------------------------
class Injected(Exception):
    """The fault the test injects."""


@pytest.fixture(scope="module")
def crafted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return live_image(tmp_path_factory.mktemp("crafted"))


def build(
    image: Path, workdir: Path, out: Path, *, bootstrap: bool, written: Callable[[], None] = lambda: None
) -> None:
    """Open, customise, write the ISO; ``written`` is called once the ISO is complete."""
    with LiveOS.open(image, workdir=workdir) as live:
        live.rootfs.write_text("/etc/motd", "customised\n")
        live = live.with_cache(False)  # the same commands run on every build
        (live.bootstrap() if bootstrap else live.full_os("none")).write_iso(out)
        written()


class FaultySubprocess(SimpleNamespace):
    """``subprocess`` for liveos.run: every command runs for real; after the ``fail_at``-th, raise."""

    Popen: type[subprocess.Popen[bytes]]

    def __init__(self, fail_at: int | None, exc: BaseException) -> None:
        names = [k for k in dir(subprocess) if not k.startswith("__") and k != "Popen"]
        super().__init__(**{k: getattr(subprocess, k) for k in names})
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.exc = exc

        recorder = self

        class Popen(subprocess.Popen[bytes]):
            """A real process; once it has finished, the fault is raised if it is the chosen one."""

            def communicate(self, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
                result = super().communicate(*args, **kwargs)
                recorder.calls.append(" ".join(map(str, self.args)))  # type: ignore[arg-type]
                if len(recorder.calls) - 1 == recorder.fail_at:
                    raise recorder.exc
                return result

        self.Popen = Popen


@pytest.mark.parametrize("bootstrap", [True, False], ids=["bootstrap", "full-os"])
def test_fault_after_every_command(
    crafted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bootstrap: bool
) -> None:
    digest = sha256(crafted)
    recorder = FaultySubprocess(None, Injected())
    monkeypatch.setattr(liveos.run, "subprocess", recorder)
    clean_work = tmp_path / "clean"
    clean_work.mkdir()
    written_at: list[int] = []
    build(
        crafted, clean_work, tmp_path / "clean.iso", bootstrap=bootstrap,
        written=lambda: written_at.append(len(recorder.calls)),
    )  # fmt: skip
    calls = recorder.calls
    assert len(calls) > 10, calls
    failures = []
    for index, command in enumerate(calls):
        exc: BaseException = KeyboardInterrupt() if index % 2 else Injected(command)
        monkeypatch.setattr(liveos.run, "subprocess", FaultySubprocess(index, exc))
        workdir, out = tmp_path / f"work{index}", tmp_path / f"out{index}" / "live.iso"
        workdir.mkdir()
        out.parent.mkdir()
        with pytest.raises(type(exc)):
            build(crafted, workdir, out, bootstrap=bootstrap)
        monkeypatch.setattr(liveos.run, "subprocess", subprocess)
        if index >= written_at[0]:  # the fault hit the unwinding after a complete ISO was written
            assert out.is_file()
            out.unlink()
        left = leftovers(crafted, workdir, out) + [f"output dir: {p}" for p in out.parent.iterdir()]
        if left:
            failures.append(f"after command {index} ({command}): {left}")
    assert not failures, "\n".join(failures)
    assert sha256(crafted) == digest


#: (module, name) of each Python step of a build, in the order they run.
STEPS = [
    ("liveos.media.plan", "find_boot_files"),
    ("liveos.media.plan", "render_bls"),
    ("liveos.media.plan", "edit_grub_config"),
    ("liveos.media.plan", "media_state"),
    ("liveos.iso.output", "plan_media"),
    ("liveos.iso.output", "check_tools"),
    ("liveos.iso.output", "build_os_products"),
    ("liveos.media.stage", "make_squashfs"),
    ("liveos.iso.output", "build_efiboot"),
    ("liveos.iso.output", "IsoWriter"),
]


@pytest.mark.parametrize("step", STEPS, ids=lambda s: s[1])
@pytest.mark.parametrize("raised", [Injected, KeyboardInterrupt, SystemExit])
def test_fault_in_python_step(
    crafted: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: tuple[str, str],
    raised: type[BaseException],
) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise raised()

    module, name = step
    monkeypatch.setattr(importlib.import_module(module), name, fail)
    workdir, out = tmp_path / "work", tmp_path / "out" / "live.iso"
    workdir.mkdir()
    out.parent.mkdir()
    with pytest.raises(raised):
        build(crafted, workdir, out, bootstrap=True)
    assert leftovers(crafted, workdir, out) == []
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize("mode", ["bootstrap", "full-os"])
def test_fault_in_initramfs_builder(
    crafted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """The initrd builder fails half-way: its partial output and the chroot mounts are gone."""
    real = liveos.initramfs.Initramfs

    class Failing:
        @staticmethod
        def bootstrap(rootfs: Any, version: str, out: Path, **kwargs: Any) -> Any:
            real.bootstrap(rootfs, version, out, **kwargs)
            raise CommandError(["dracut"], 1, "injected")

        @staticmethod
        def full_os(rootfs: Any, out: Path, **kwargs: Any) -> Any:
            real.full_os(rootfs, out, **kwargs)
            raise KeyboardInterrupt

    monkeypatch.setattr(liveos.media.stage, "Initramfs", Failing)
    workdir, out = tmp_path / "work", tmp_path / "out" / "live.iso"
    workdir.mkdir()
    out.parent.mkdir()
    with pytest.raises((CommandError, KeyboardInterrupt)):
        build(crafted, workdir, out, bootstrap=mode == "bootstrap")
    assert leftovers(crafted, workdir, out) == []
    assert list(out.parent.iterdir()) == []
