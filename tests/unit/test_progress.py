"""Progress events: the step reporter's guarantees (order, throttling, monotonic counts, threads),
what the real writers report through it, ``run(on_line=...)``, and the two reporters drawing
with real tqdm and plain lines into a StringIO.

Throttling is driven by a hand-moved clock, never by sleeping.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from liveos.cli import _parser
from liveos.cpio import write_newc
from liveos.errors import CommandError, InternalError
from liveos.iso import IsoWriter
from liveos.progress import Phase, Progress, ProgressEvent, Unit, current, ignore
from liveos.progress_display import BarReporter, LineReporter, reporter_for, reporting
from liveos.run import run
from liveos.settings import Compression, Preset
from liveos.squashfs import make_squashfs, progress_reader


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A callback keeping every event (the Progress lock serialises calls)."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def phases(self, product: str | None = None) -> list[Phase]:
        return [e.phase for e in self.events if product is None or e.product == product]

    def advanced(self, product: str | None = None) -> list[ProgressEvent]:
        return [
            e for e in self.events if e.phase is Phase.ADVANCED and (product is None or e.product == product)
        ]


def test_a_step_starts_and_finishes_and_its_count_becomes_its_total() -> None:
    seen, clock = Recorder(), Clock()
    progress = Progress(seen, clock=clock)
    with progress.step("cpio", "initrd.img", total=1000, unit=Unit.BYTES) as step:
        assert current() is step and step.active
        clock.now += 2.5
        step.advance(400)
        clock.now += 1.0
    assert not current().active
    assert seen.phases() == [Phase.STARTED, Phase.ADVANCED, Phase.FINISHED]
    started, advanced, finished = seen.events
    assert (started.step, started.product, started.done, started.total, started.seconds) == (
        "cpio", "initrd.img", None, 1000, 0.0,
    )  # fmt: skip
    assert (advanced.done, advanced.total, advanced.unit, advanced.fraction) == (400, 1000, Unit.BYTES, 0.4)
    assert advanced.seconds == pytest.approx(2.5)
    assert (finished.done, finished.total, finished.reused, finished.seconds) == (400, 400, False, 3.5)


def test_advanced_events_are_throttled_but_the_first_and_the_completing_one_always_go_out() -> None:
    seen, clock = Recorder(), Clock()
    progress = Progress(seen, clock=clock, interval=0.1)
    with progress.step("iso", "iso") as step:
        for done in range(0, 100, 10):  # all at the same instant
            step.advance(done, 100, Unit.BYTES)
        clock.now += 0.05
        step.advance(95)  # still within the interval
        clock.now += 0.06
        step.advance(96)  # one interval after the first: goes out
        step.advance(100)  # complete: goes out at once
        step.advance(100)  # nothing new: not repeated
    assert [e.done for e in seen.advanced()] == [0, 96, 100]
    assert seen.events[-1].phase is Phase.FINISHED and seen.events[-1].done == 100


def test_done_never_goes_down_and_never_exceeds_the_total() -> None:
    seen, clock = Recorder(), Clock()
    progress = Progress(seen, clock=clock)
    with progress.step("cpio", "initrd.img", total=100, unit=Unit.BYTES) as step:
        for done in (50, 30, 130, 120):  # an estimate that was too small, a tool that went back
            clock.now += 1
            step.advance(done)
    assert [(e.done, e.total) for e in seen.advanced()] == [(50, 100), (130, 130)]
    assert (seen.events[-1].done, seen.events[-1].total) == (130, 130)


def test_a_reused_step_says_so_when_it_finishes() -> None:
    seen = Recorder()
    with Progress(seen).step("dracut", "initrd-6.1") as step:
        step.reused = True
    assert [(e.phase, e.reused, e.done, e.total) for e in seen.events] == [
        (Phase.STARTED, False, None, None),
        (Phase.FINISHED, True, None, None),
    ]


def test_a_failing_step_reports_failed_and_a_failing_callback_does_not_hide_the_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen = Recorder()
    with pytest.raises(KeyError, match="boom"), Progress(seen).step("squashfs", "rootfs.img"):
        raise KeyError("boom")
    assert seen.phases() == [Phase.STARTED, Phase.FAILED]

    def broken(event: ProgressEvent) -> None:
        if event.phase is Phase.FAILED:
            raise RuntimeError("display broke")

    with pytest.raises(KeyError, match="boom"), Progress(broken).step("squashfs", "rootfs.img"):
        raise KeyError("boom")
    assert "display broke" in caplog.text


def test_a_callback_that_raises_stops_the_step_and_its_writer(tmp_path: Path) -> None:
    """Cancelling: the exception of the callback comes out of the real CPIO writer, which leaves
    no partial archive behind."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(8):
        (tree / f"f{i}").write_bytes(os.urandom(300_000))

    class Cancelled(Exception):
        pass

    def cancel(event: ProgressEvent) -> None:
        if event.phase is Phase.ADVANCED:
            raise Cancelled

    out = tmp_path / "initrd.img"
    with pytest.raises(Cancelled), Progress(cancel).step("cpio", "initrd.img"):
        write_newc(tree, out, compression=Compression.NONE)
    assert not out.exists()


def test_the_cpio_writer_reports_its_bytes_to_the_current_step(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "big").mkdir(parents=True)
    for i in range(6):
        (tree / "big" / f"f{i}").write_bytes(os.urandom(700_000))
    for i in range(200):
        (tree / f"small{i}").write_bytes(os.urandom(3000))
    seen = Recorder()
    out = tmp_path / "initrd.img"
    with Progress(seen, interval=0).step("cpio", "initrd.img", total=1_000_000, unit=Unit.BYTES):
        write_newc(tree, out, compression=Compression.ZSTD, level=1)
    advanced = seen.advanced()
    assert len(advanced) >= 3
    dones = [e.done or 0 for e in advanced]
    assert dones == sorted(dones) and all(e.unit is Unit.BYTES for e in advanced)
    assert all(e.done is not None and e.total is not None and e.done <= e.total for e in advanced)
    assert seen.events[-1].done == seen.events[-1].total == out.stat().st_size


def test_writers_outside_a_step_report_to_nobody(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "a").write_bytes(b"x" * 5000)
    assert not current().active
    current().advance(5)  # dropped, no error
    write_newc(tmp_path / "tree", tmp_path / "a.cpio", compression=Compression.NONE)
    assert (tmp_path / "a.cpio").stat().st_size > 5000


def test_the_iso_writer_reports_pycdlib_bytes(tmp_path: Path) -> None:
    payload = tmp_path / "payload"
    payload.write_bytes(os.urandom(3 * 1024 * 1024))
    writer = IsoWriter("PROGRESS")
    writer.add_file("/data/payload", payload)
    writer.add_bytes("/hello.txt", b"hi\n")
    seen = Recorder()
    with Progress(seen, interval=0).step("iso", "iso"):
        written = writer.write(tmp_path / "out.iso", hybrid=False)
    advanced = seen.advanced()
    assert len(advanced) >= 2 and advanced[0].done == 0
    assert all(e.unit is Unit.BYTES and (e.done or 0) <= (e.total or 0) for e in advanced)
    assert advanced[-1].done == advanced[-1].total == written.size


@pytest.mark.skipif(shutil.which("mksquashfs") is None, reason="needs squashfs-tools")
def test_mksquashfs_progress_is_read_from_its_own_bar(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(40):
        (tree / f"f{i}").write_bytes(os.urandom(200_000))
    seen = Recorder()
    with Progress(seen, interval=0).step("squashfs", "rootfs.img"):
        make_squashfs(tree, tmp_path / "rootfs.img", preset=Preset.FAST, excludes=(), processors=1)
    advanced = seen.advanced()
    assert advanced and all(e.unit is Unit.ITEMS for e in advanced)
    assert advanced[-1].done == advanced[-1].total and (advanced[-1].total or 0) >= 40
    assert seen.events[-1].phase is Phase.FINISHED


def test_the_mksquashfs_bar_parser() -> None:
    seen = Recorder()
    with Progress(seen, interval=0).step("squashfs", "rootfs.img") as step:
        read = progress_reader(step)
        for line in ("Parallel mksquashfs: Using 1 processor", "[/      ]   0/600   0%",
                     "[=====|  ] 500/600  83%", "Exportable Squashfs 4.0 filesystem"):  # fmt: skip
            read(line)
    assert [(e.done, e.total) for e in seen.advanced()] == [(0, 600), (500, 600)]


def test_steps_in_parallel_threads_each_report_to_their_own_step() -> None:
    seen = Recorder()
    progress = Progress(seen, interval=0)
    barrier = threading.Barrier(3)

    def work(product: str) -> None:
        with progress.step("dracut", product):
            barrier.wait()  # all three steps are running now
            for done in range(1, 51):
                current().advance(done, 50, Unit.ITEMS)
            barrier.wait()

    threads = [threading.Thread(target=work, args=(f"p{i}",)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(3):
        assert [e.done for e in seen.advanced(f"p{i}")] == list(range(1, 51))
        assert seen.phases(f"p{i}")[0] is Phase.STARTED and seen.phases(f"p{i}")[-1] is Phase.FINISHED
    first_finish = seen.phases().index(Phase.FINISHED)
    assert seen.phases()[:3] == [Phase.STARTED] * 3 and first_finish > 3  # they overlapped


def test_run_hands_stdout_records_to_on_line_and_keeps_its_error_path() -> None:
    lines: list[str] = []
    script = r"printf 'one\rtwo\nthree'; echo warning >&2"
    done = run(["sh", "-c", script], on_line=lines.append)
    assert lines == ["one", "two", "three"]
    assert done.stdout == b"one\rtwo\nthree" and done.stderr == b"warning\n"
    with pytest.raises(CommandError, match="it failed"):
        run(["sh", "-c", "echo 1; echo it failed >&2; exit 3"], on_line=lines.append)
    with pytest.raises(CommandError, match="timed out"):
        run(["sh", "-c", "echo start; exec sleep 30"], on_line=lines.append, timeout=0.5)
    with pytest.raises(InternalError):
        run(["true"], on_line=lines.append, input=b"x")


def test_run_can_give_a_tool_a_terminal_to_draw_on() -> None:
    lines: list[str] = []
    script = "test -t 1 && echo terminal; stty size <&1; echo to stderr >&2"
    done = run(["sh", "-c", script], on_line=lines.append, terminal=True)
    assert lines == ["terminal", "24 80"] and done.stdout == b"terminal\n24 80\n"  # no \r added
    assert done.stderr == b"to stderr\n"
    with pytest.raises(CommandError, match="it failed"):
        run(["sh", "-c", "echo it failed >&2; exit 1"], on_line=lines.append, terminal=True)
    with pytest.raises(InternalError):
        run(["true"], terminal=True)


def event(phase: Phase, seconds: float, done: int | None = None, total: int | None = None,
          unit: Unit | None = Unit.BYTES, reused: bool = False, product: str = "initrd.img",
          ) -> ProgressEvent:  # fmt: skip
    return ProgressEvent("cpio", product, phase, done, total, unit, reused=reused, seconds=seconds)


def test_plain_lines_at_start_end_each_tenth_or_every_five_seconds() -> None:
    out = io.StringIO()
    lines = LineReporter(out)
    lines(event(Phase.STARTED, 0))
    for i in range(1, 101):  # 1% every 0.1 s
        lines(event(Phase.ADVANCED, i / 10, i * 1_000_000, 100_000_000))
    lines(event(Phase.FINISHED, 10.2, 100_000_000, 100_000_000))
    text = out.getvalue().splitlines()
    assert text[0] == "liveos: cpio initrd.img: started"
    assert text[1] == "liveos: cpio initrd.img: 10% (10.0 MB of 100.0 MB)"
    assert len(text) == 1 + 10 + 1 and text[10] == "liveos: cpio initrd.img: 100% (100.0 MB of 100.0 MB)"
    assert text[-1] == "liveos: cpio initrd.img: done in 10.2 s, 100.0 MB"

    out = io.StringIO()
    lines = LineReporter(out)
    lines(event(Phase.STARTED, 0, product="slow"))
    for i in range(1, 121):  # 1 MB a second, no total: a line every five seconds
        lines(event(Phase.ADVANCED, float(i), i * 1_000_000, None, product="slow"))
    lines(event(Phase.STARTED, 0, product="cached"))
    lines(event(Phase.FINISHED, 0.3, reused=True, product="cached"))
    lines(event(Phase.FAILED, 121.0, product="slow"))
    text = out.getvalue().splitlines()
    assert len(text) == 1 + 24 + 3
    assert text[1] == "liveos: cpio slow: 5.0 MB" and text[24] == "liveos: cpio slow: 120.0 MB"
    assert text[-2:] == ["liveos: cpio cached: reused (0.3 s)", "liveos: cpio slow: failed after 121.0 s"]


def test_a_reporter_whose_stream_is_gone_stops_quietly() -> None:
    stream = io.StringIO()
    lines, bars = LineReporter(stream), BarReporter(stream)
    stream.close()
    for reporter in (lines, bars):
        reporter(event(Phase.STARTED, 0))
        reporter(event(Phase.FINISHED, 1))
        reporter.close()


def test_tqdm_bars_one_per_running_step() -> None:
    out = io.StringIO()
    bars = BarReporter(out)
    bars(ProgressEvent("dracut", "initrd-6.1", Phase.STARTED))
    bars(ProgressEvent("squashfs", "rootfs.img", Phase.STARTED))
    bars(ProgressEvent("squashfs", "rootfs.img", Phase.ADVANCED, 300, 600, Unit.ITEMS, seconds=1))
    bars(ProgressEvent("squashfs", "rootfs.img", Phase.FINISHED, 600, 600, Unit.ITEMS, seconds=2))
    bars(ProgressEvent("dracut", "initrd-6.1", Phase.FINISHED, seconds=3))
    bars(ProgressEvent("cpio", "initrd.img", Phase.STARTED))
    bars(ProgressEvent("cpio", "initrd.img", Phase.FINISHED, reused=True))
    bars(ProgressEvent("iso", "iso", Phase.STARTED))
    bars(ProgressEvent("iso", "iso", Phase.ADVANCED, 5 << 20, 10 << 20, Unit.BYTES))
    bars.close()  # the ISO step never ended: its bar is closed all the same
    text = out.getvalue()
    assert "squashfs rootfs.img:  50%" in text and "600/600" in text and "100%" in text
    assert "dracut initrd-6.1: 00:0" in text  # a step that cannot count shows its elapsed time
    assert "cpio initrd.img: 00:00, reused" in text
    assert "iso:  50%" in text and "5.00M/10.0M" in text


def test_reporter_for_picks_bars_for_a_terminal_and_lines_otherwise() -> None:
    assert isinstance(reporter_for(io.StringIO()), LineReporter)
    controller, terminal = os.openpty()
    try:
        with open(terminal, "w") as tty:
            assert isinstance(reporter_for(tty), BarReporter)
    finally:
        os.close(controller)
    with reporting(io.StringIO(), enabled=False) as nothing:
        assert nothing is None
    stream = io.StringIO()
    with reporting(stream) as reporter:
        assert reporter is not None
        reporter(event(Phase.STARTED, 0))
    assert stream.getvalue() == "liveos: cpio initrd.img: started\n"


def test_the_default_callback_does_nothing() -> None:
    callback: Callable[[ProgressEvent], None] = ignore
    callback(event(Phase.STARTED, 0))
    with Progress().step("efiboot", "efiboot.img") as step:
        assert not step.active


def test_the_build_commands_show_progress_unless_told_not_to() -> None:
    parser = _parser()
    for command in (["iso", "disk.qcow2", "-o", "out.iso"], ["pxe", "disk.qcow2", "-o", "tftp"]):
        assert parser.parse_args(command).progress is True
        assert parser.parse_args([*command, "--quiet"]).progress is False
        assert parser.parse_args([*command, "--no-progress", "--json"]).progress is False


def test_in_a_notebook_the_bars_are_widgets() -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    code = (
        "from liveos.progress import Progress, Unit\n"
        "from liveos.progress_display import BarReporter, reporter_for\n"
        "reporter = reporter_for()\n"
        "assert isinstance(reporter, BarReporter)\n"
        "with Progress(reporter).step('cpio', 'initrd.img', total=1000, unit=Unit.BYTES) as step:\n"
        "    step.advance(500)\n"
        "reporter.close()\n"
    )
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    nbclient.NotebookClient(notebook, kernel_name="python3", timeout=60).execute()
    outputs = notebook.cells[0].outputs
    assert [o["output_type"] for o in outputs] == ["display_data"], outputs
    assert "application/vnd.jupyter.widget-view+json" in outputs[0]["data"]
