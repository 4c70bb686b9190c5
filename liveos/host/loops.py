"""Loop devices: a byte range of a file as a read-only block device, always detached after.

If a signal lands while ``losetup`` runs, the device may be attached without us knowing its
name: the cleanup then detaches every new device associated with the file.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from liveos.errors import CommandError, HostError
from liveos.host.privilege import require_root
from liveos.run import output, run


def _loops_of(file: Path) -> set[str]:
    text = output(["losetup", "--noheadings", "--output", "NAME", "--associated", file], check=False)
    return {line.strip() for line in text.splitlines() if line.strip()}


@contextlib.contextmanager
def loop_device(
    file: Path, *, offset: int = 0, size: int | None = None, read_only: bool = True
) -> Iterator[Path]:
    """Attach ``size`` bytes of ``file`` at ``offset`` to a free loop device; always detached after."""
    require_root("attaching a loop device")
    if not Path("/dev/loop-control").exists():
        raise HostError("no loop device support (/dev/loop-control is missing)", hint="modprobe loop")
    argv: list[str | Path] = ["losetup", "--find", "--show", "--offset", str(offset)]
    if size is not None:
        argv += ["--sizelimit", str(size)]
    if read_only:
        argv.append("--read-only")
    before = _loops_of(file)
    device: str | None = None
    try:
        try:
            device = output(
                [*argv, file], step=f"attaching {file} at offset {offset} to a loop device"
            ).strip()
        except CommandError as exc:
            raise HostError(
                f"could not attach {file} to a loop device: {exc.stderr.strip()}",
                path=file,
                hint="free loop devices (losetup -D) or load the loop module with more devices",
            ) from exc
        yield Path(device)
    finally:
        # If interrupted while losetup ran, the device may be attached without us knowing its name.
        leftovers = {device} if device else _loops_of(file) - before
        for dev in leftovers:
            run(["losetup", "--detach", dev], step=f"detaching {dev}", check=False)
