"""Outputs are regular files or new names; scratch a killed build left behind is swept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from liveos.atomic import atomic_output, check_output_file, scratch_dir, sweep_stale
from liveos.errors import UsageError

REPO = Path(__file__).resolve().parent.parent.parent


def dead_pid() -> int:
    """The pid of a process that has exited (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
def test_a_device_or_fifo_is_not_an_output(tmp_path: Path) -> None:
    os.mknod(tmp_path / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mkfifo(tmp_path / "fifo")
    for name in ("null", "fifo"):
        with pytest.raises(UsageError, match="not a regular file"):
            check_output_file(tmp_path / name)
        with pytest.raises(UsageError, match="not a regular file"), atomic_output(tmp_path / name):
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "null"], "something was created"
    assert (tmp_path / "null").is_char_device()


def test_output_paths(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        check_output_file(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        check_output_file(tmp_path / "file" / "live.iso")
    assert (
        check_output_file(tmp_path / "new" / "live.iso", create_parent=False)
        == tmp_path / "new" / "live.iso"
    )
    assert not (tmp_path / "new").exists()
    check_output_file(tmp_path / "new" / "live.iso")
    assert (tmp_path / "new").is_dir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    with atomic_output(tmp_path / "link") as fp:  # replaces the link, never writes through it
        fp.write(b"new")
    assert (tmp_path / "file").read_text() == "x" and not (tmp_path / "link").is_symlink()


def test_stale_scratch_of_dead_processes_is_swept(tmp_path: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    for name in (
        f"liveos-image-{dead}-0",
        f"liveos-image-{dead}-3",
        f"liveos-image-{alive}-1",
        "liveos-image-x",
    ):
        (tmp_path / name / "upper").mkdir(parents=True)
    (tmp_path / f".live.iso.tmp-{dead}").write_text("partial")
    (tmp_path / "unrelated").mkdir()
    removed = sweep_stale(tmp_path, "liveos-image-") + sweep_stale(tmp_path, ".live.iso.tmp-")
    assert sorted(p.name for p in removed) == sorted(
        [f"liveos-image-{dead}-0", f"liveos-image-{dead}-3", f".live.iso.tmp-{dead}"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        f"liveos-image-{alive}-1",
        "liveos-image-x",
        "unrelated",
    ]
    with scratch_dir(tmp_path, "liveos-image-") as fresh:  # making scratch sweeps first, too
        assert fresh.is_dir()


def test_cli_checks_settings_before_opening_the_image(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "liveos", "iso", str(tmp_path / "in.qcow2"), "-o", str(tmp_path / "o.iso"),
         "--label", ""],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "invalid ISO volume label ''" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []
