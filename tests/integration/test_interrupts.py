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
from collections.abc import Callable, Sequence
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
from tests.imagekit import our_mounts, sha256
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


def chrooted_pids(workdir: Path) -> list[int]:
    """Processes whose root directory is inside ``workdir`` (dracut and its children)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/root").startswith(str(workdir) + "/"):
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def tool_running(name: str, workdir: Path) -> bool:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(name.encode()) and str(workdir).encode() in b" ".join(argv):
                return True
    return False


def overlay_mounted(workdir: Path) -> bool:
    return any(" - overlay " in line for line in our_mounts(str(workdir)))


POINTS: dict[str, Callable[[Path], bool]] = {
    "mounted": overlay_mounted,
    "dracut": lambda work: bool(chrooted_pids(work)),
    "mksquashfs": lambda work: tool_running("mksquashfs", work),
}


@pytest.mark.parametrize(
    ("point", "signum", "group"),
    [
        ("mounted", signal.SIGTERM, False),
        ("mounted", signal.SIGINT, False),
        ("dracut", signal.SIGTERM, False),
        ("dracut", signal.SIGINT, True),
        ("mksquashfs", signal.SIGTERM, False),
    ],
    ids=[
        "mounted-TERM",
        "mounted-INT",
        "dracut-TERM",
        "dracut-INT-group",
        "mksquashfs-TERM",
    ],
)
def test_signal_mid_build(
    azl: tuple[Path, str], tmp_path: Path, point: str, signum: signal.Signals, group: bool
) -> None:
    image, digest = azl
    workdir, outdir = tmp_path / "work", tmp_path / "out"
    workdir.mkdir()
    outdir.mkdir()
    out = outdir / "live.iso"
    stderr_path = tmp_path / "stderr.log"
    argv = [
        sys.executable,
        "-m",
        "liveos",
        "-v",
        "iso",
        str(image),
        "-o",
        str(out),
        "--workdir",
        str(workdir),
    ]
    argv += ["--squashfs", "small"]  # the slowest preset: a wide window to signal mksquashfs in
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            stderr=stderr, start_new_session=True,
        )  # fmt: skip
        try:
            reached = POINTS[point]
            deadline = time.monotonic() + 600
            while not reached(workdir):
                assert proc.poll() is None, (
                    f"the build ended before {point}: {stderr_path.read_text()[-2000:]}"
                )
                assert time.monotonic() < deadline, f"the build never reached {point}"
                time.sleep(0.05)
            if group:
                os.killpg(proc.pid, signum)
            else:
                os.kill(proc.pid, signum)
            code = proc.wait(timeout=EXIT_BOUND)
        finally:
            if proc.poll() is None:  # the test failed: SIGKILL leaves mounts, scrub them off the host
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                scrub(workdir)
    log = stderr_path.read_text()
    assert code == 128 + signum, f"exit code {code}\n{log[-3000:]}"
    assert "Traceback" not in log, log[-3000:]
    assert chrooted_pids(workdir) == [], "a process still runs in the image's chroot"
    assert leftovers(image, workdir, out) == []
    assert list(outdir.iterdir()) == [], "the output directory is not empty"
    assert sha256(image) == digest, "the input image changed"


def scrub(workdir: Path) -> None:
    """Lazily unmount everything below ``workdir`` (deepest first) and detach its loop devices."""
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if str(workdir) in line.split()[4]]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False)
    for line in subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout.splitlines():
        if str(workdir) in line:
            subprocess.run(["losetup", "-d", line.split(":", 1)[0]], check=False)


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
        (live.bootstrap() if bootstrap else live.full_os("none")).write_iso(out)
        written()


class FaultySubprocess(SimpleNamespace):
    """``subprocess`` for liveos.run: every command runs for real; after the ``fail_at``-th, raise."""

    def __init__(self, fail_at: int | None, exc: BaseException) -> None:
        names = [k for k in dir(subprocess) if not k.startswith("__") and k != "run"]
        super().__init__(**{k: getattr(subprocess, k) for k in names})
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.exc = exc

    def run(self, args: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(args, **kwargs)
        self.calls.append(" ".join(map(str, args)))
        if len(self.calls) - 1 == self.fail_at:
            raise self.exc
        return result


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
        def bootstrap(rootfs: Any, version: str, out: Path) -> Any:
            real.bootstrap(rootfs, version, out)
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
