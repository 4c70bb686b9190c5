"""A bigger variant of the ``azl`` fixture: the same OS plus incompressible files, ``factor`` x its data.

    python3 -m benchmarks.bigimage [--format qcow2|raw] [--factor 4]    # prints the image's path

For benchmarks whose cost should (or should not) grow with the data an image holds, e.g. opening a
qcow2. Made from the cached fixture raw disk (``tests/fixtures/builder.py``): a sparse copy grown to
fit, the GPT's backup moved to the new end, the root partition grown in place (same start, type,
PARTUUID and name: the fixture's fstab and grub.cfg still match), ``e2fsck -f`` + ``resize2fs``,
then ``(factor - 1) x`` the root's used bytes written as random files to ``/var/lib/liveos-filler/``
through a read-write mount (in a private mount namespace), then converted like the fixture
(``qemu-img convert -c``). Cached next to the fixtures (``$LIVEOS_FIXTURE_CACHE/images``), keyed by
the fixture image, the factor and :data:`RECIPE`, with a JSON manifest like the fixtures'; built
under a file lock and renamed into place when complete. Needs root. The 4x image takes ~2-4 minutes
to build (most of it compressing-and-giving-up on random data) and ~4 GB of disk.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import logging
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from liveos.errors import LiveOSError  # noqa: E402
from liveos.host.namespace import private_mounts  # noqa: E402
from liveos.run import output, run  # noqa: E402
from tests.fixtures.builder import DiskFormat, FixtureImage, build_image, cache_dir  # noqa: E402

log = logging.getLogger("liveos.bench")

#: Bump when the recipe below changes: it is part of the cache key.
RECIPE = "1"
FILLER_DIR = "var/lib/liveos-filler"
FILE_BYTES = 64 << 20
GIB = 1 << 30
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class _Part:
    start: int  #: bytes
    size: int  #: bytes


def _root_partition(raw: Path) -> tuple[int, _Part]:
    """Number and extent of the last partition (the fixture's root) from ``sfdisk -J``."""
    table = json.loads(output(["sfdisk", "-J", raw], step="bigimage: read the partition table"))
    parts = table["partitiontable"]["partitions"]
    sector = int(table["partitiontable"].get("sectorsize", 512))
    last = parts[-1]
    number = int(str(last["node"]).removeprefix(str(raw)))
    return number, _Part(int(last["start"]) * sector, int(last["size"]) * sector)


@contextlib.contextmanager
def _loop(raw: Path, part: _Part) -> Iterator[str]:
    dev = output(
        ["losetup", "--find", "--show", f"--offset={part.start}", f"--sizelimit={part.size}", raw],
        step="bigimage: losetup",
    ).strip()
    try:
        yield dev
    finally:
        run(["losetup", "-d", dev], check=False)


@contextlib.contextmanager
def _mounted(dev: str, where: Path, *options: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    run(["mount", *(["-o", ",".join(options)] if options else []), dev, where], step="bigimage: mount")
    try:
        yield where
    finally:
        run(["umount", where], check=False)


def _used_bytes(raw: Path, part: _Part, work: Path) -> int:
    with _loop(raw, part) as dev, _mounted(dev, work / "ro", "ro", "noload") as mnt:
        st = os.statvfs(mnt)
        return (st.f_blocks - st.f_bfree) * st.f_frsize


def _fill(tree: Path, total: int) -> None:
    """``total`` bytes of random (incompressible) data in 64 MiB files."""
    filler = tree / FILLER_DIR
    filler.mkdir(parents=True, exist_ok=True)
    left, index = total, 0
    while left > 0:
        size = min(FILE_BYTES, left)
        with (filler / f"random-{index:04d}.bin").open("wb") as f:
            for _ in range(0, size, 4 * MIB):
                f.write(os.urandom(min(4 * MIB, size - f.tell())))
        left -= size
        index += 1
    os.sync()


def _grow(fixture: Path, target: Path, factor: int, work: Path) -> None:
    """Write the grown, filled raw disk to ``target``."""
    number, root = _root_partition(fixture)
    used = _used_bytes(fixture, root, work)
    extra = (factor - 1) * used
    disk = math.ceil((root.start + (used + extra) * 1.15 + 256 * MIB) / GIB) * GIB
    log.info("fixture root: %.2f GB used; adding %.2f GB, disk %d GiB", used / 1e9, extra / 1e9, disk // GIB)
    run(["cp", "--sparse=always", fixture, target], step="bigimage: copy the fixture")
    with target.open("r+b") as f:
        f.truncate(disk)
    run(["sfdisk", "--quiet", "--relocate", "gpt-bak-std", target], step="bigimage: move the backup GPT")
    run(
        ["sfdisk", "--quiet", "--no-reread", "-N", str(number), target],
        input=b", +\n",
        step="bigimage: grow the root partition",
    )
    _, grown = _root_partition(target)
    assert grown.start == root.start and grown.size > root.size, (root, grown)
    with _loop(target, grown) as dev:
        fsck = run(["e2fsck", "-f", "-y", dev], step="bigimage: e2fsck", check=False)
        if fsck.returncode not in (0, 1):
            raise RuntimeError(f"e2fsck {dev} failed ({fsck.returncode}): {fsck.stdout.decode()[-500:]}")
        run(["resize2fs", dev], step="bigimage: resize2fs")
        with _mounted(dev, work / "rw") as mnt:
            _fill(mnt, extra)


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    locks = cache_dir() / "locks"
    locks.mkdir(exist_ok=True)
    with (locks / f"{name}.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _publish(path: Path, facts: FixtureImage, fmt: DiskFormat) -> FixtureImage:
    image = dataclasses.replace(facts, path=path, format=fmt)
    manifest = path.with_name(path.name + ".json")
    tmp = manifest.with_name(f".{manifest.name}.tmp-{os.getpid()}")
    tmp.write_text(image.to_json())
    os.replace(tmp, manifest)
    return image


def _cached(path: Path) -> FixtureImage | None:
    manifest = path.with_name(path.name + ".json")
    if path.is_file() and manifest.is_file():
        return FixtureImage.from_json(manifest.read_text())
    return None


def big_image(fmt: str = "qcow2", factor: int = 4) -> FixtureImage:
    """The ``azl`` fixture with ``factor`` x its data (raw or qcow2), built once and cached."""
    if factor < 1:
        raise ValueError("factor must be >= 1")
    fixture = build_image("azl", "raw")
    key = f"{fixture.path.stem.removeprefix('disk-')}-x{factor}-r{RECIPE}"
    images = cache_dir() / "images"
    raw_path = images / f"big-{key}.raw"
    with _locked(raw_path.name):
        raw = _cached(raw_path)
        if raw is None:
            private_mounts()  # the temporary mounts never show in the host's mount table
            with tempfile.TemporaryDirectory(prefix="liveos-bigimage-", dir=images) as tmp:
                work = Path(tmp)
                _grow(fixture.path, work / "disk.raw", factor, work)
                os.replace(work / "disk.raw", raw_path)
            raw = _publish(raw_path, fixture, DiskFormat.RAW)
    if DiskFormat(fmt) is DiskFormat.RAW:
        return raw
    out = raw_path.with_suffix(f".{fmt}")
    with _locked(out.name):
        converted = _cached(out)
        if converted is None:
            tmp_out = out.with_name(f".{out.name}.tmp-{os.getpid()}")
            try:
                run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-c", raw_path, tmp_out],
                    step="bigimage: convert to qcow2")  # fmt: skip
                os.replace(tmp_out, out)
            finally:
                tmp_out.unlink(missing_ok=True)
            converted = _publish(out, raw, DiskFormat.QCOW2)
    return converted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m benchmarks.bigimage", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--format", choices=["raw", "qcow2"], default="qcow2")
    parser.add_argument("--factor", type=int, default=4, help="times the fixture's data (default 4)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if shutil.which("resize2fs") is None:
        print("error: resize2fs (e2fsprogs) is needed", file=sys.stderr)
        return 1
    try:
        image = big_image(args.format, args.factor)
    except LiveOSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(image.path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
