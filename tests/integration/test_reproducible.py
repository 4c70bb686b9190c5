"""Reproducible builds: with ``SOURCE_DATE_EPOCH`` set, two builds of the same image are
bit-identical -- ISO and PXE ``.tar.gz``, bootstrap and full-os.

Each build runs in a process of its own (fresh caches, scratch dir, loop devices and mounts) with
the product cache off, and varies what must not matter: umask, ``TMPDIR``, the scratch workdir,
the output directory's name, the working directory, and the time the tree was customised (the
customised file's mtime is "now"). A difference is reported by where it lies: the ISO file or
El Torito image or tar member (and, for an ISO inside a tar, the file inside that ISO), with its
first differing offset, so a failure points at the writer to fix.

A different ``SOURCE_DATE_EPOCH`` must give a different ISO: the epoch is really used. With the
cache on and holding products of an earlier state of the tree, the ISO is the one a build
without the cache writes (no cached root image + ``/updates``). 11 builds: ~10 minutes on a busy
2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pycdlib
import pytest

from liveos.image.isofs import EntryKind, IsoReader
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
EPOCH = 1_700_000_000  # 2023-11-14: most files of the fixture image are newer (clamped)
OTHER_EPOCH = EPOCH + 86_400
BASE_URL = "http://192.0.2.1/live/"
SECTOR = 2048
#: How many differing places a failure lists.
SHOWN_REGIONS = 12

#: The build of one case, run by a fresh interpreter: argv = image mode output workdir cache text.
BUILD = """
import sys, time
from pathlib import Path
from liveos.live import LiveOS
image, mode, out, workdir, cache, text = sys.argv[1:]
start = time.monotonic()
with LiveOS.open(image, workdir=Path(workdir)) as live:
    live.rootfs.write_text("/etc/liveos-reproducible", text)
    live = live.with_cache(cache == "on").with_mode(mode)
    if out.endswith(".iso"):
        live.write_iso(out)
    else:
        live.write_pxe(out, base_url=BASE_URL if mode == "bootstrap" else None)
print(time.monotonic() - start)
"""

#: (mode, output name) per case.
CASES = {
    "bootstrap-iso": ("bootstrap", "live.iso"),
    "bootstrap-pxe": ("bootstrap", "pxe.tar.gz"),
    "full-os-iso": ("full-os", "live.iso"),
    "full-os-pxe": ("full-os", "pxe.tar.gz"),
}
#: The customisation every build makes (its mtime is "now": clamped to the epoch).
TEXT = "customised now, clamped to the epoch\n"


@dataclass(frozen=True)
class Variant:
    """How one build differs from another: what must not matter (umask, names, the cache)."""

    name: str  #: also names its directories
    umask: int
    cache: bool = False  #: the module's own cache, shared by every build that uses it
    text: str = TEXT


FIRST = Variant("first", 0o022)
SECOND = Variant("second-build.d", 0o077)
#: Fills the cache from another state of the tree (a cached root image + /updates would fit).
EARLIER = Variant("earlier", 0o022, cache=True, text="an earlier state of the tree\n")
CACHED = Variant("cached", 0o022, cache=True)


@dataclass(frozen=True)
class Built:
    """One build's output and its wall time."""

    path: Path
    seconds: float


class Builds:
    """Builds of the azl fixture, each in its own process, memoised by (case, epoch, variant)."""

    def __init__(self, image: FixtureImage, root: Path) -> None:
        self.image = image
        self.root = root
        self.done: dict[tuple[str, int, str], Built] = {}

    def get(self, case: str, epoch: int, variant: Variant) -> Built:
        key = (case, epoch, variant.name)
        if key not in self.done:
            self.done[key] = self._build(case, epoch, variant)
        return self.done[key]

    def _build(self, case: str, epoch: int, variant: Variant) -> Built:
        mode, name = CASES[case]
        base = self.root / f"{case}-{epoch}-{variant.name}"
        tmp, work, out_dir = base / "tmp", base / "work", base / f"out-{variant.name}"
        for d in (tmp, work, out_dir):
            d.mkdir(parents=True)
        out = out_dir / name
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "TMPDIR": str(tmp)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["LIVEOS_CACHE_DIR"] = str(self.root / "cache")
        script = f"BASE_URL = {BASE_URL!r}\n{BUILD}"
        cache = "on" if variant.cache else "off"
        argv = [
            sys.executable,
            "-c",
            script,
            str(self.image.path),
            mode,
            str(out),
            str(work),
            cache,
            variant.text,
        ]
        done = subprocess.run(
            argv,
            cwd=base,
            env=env,
            capture_output=True,
            text=True,
            preexec_fn=lambda: os.umask(variant.umask),
        )
        assert done.returncode == 0, f"{case} build failed:\n{done.stderr[-4000:]}"
        return Built(out, float(done.stdout.split()[-1]))


@pytest.fixture(scope="module")
def builds(fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Builds]:
    builds = Builds(fixture_image("azl", "qcow2"), tmp_path_factory.mktemp("reproducible"))
    yield builds
    timings = {f"{c} {e} {v}": round(b.seconds, 1) for (c, e, v), b in builds.done.items()}
    print("\nreproducible build times (s):", json.dumps(timings, indent=1))


@pytest.mark.parametrize("case", CASES)
def test_two_builds_are_bit_identical(builds: Builds, case: str) -> None:
    first, second = builds.get(case, EPOCH, FIRST), builds.get(case, EPOCH, SECOND)
    assert_identical(first.path, second.path, case)


def test_the_epoch_is_used(builds: Builds) -> None:
    """Another SOURCE_DATE_EPOCH, another ISO (its dates), everything else equal."""
    first, other = builds.get("bootstrap-iso", EPOCH, FIRST), builds.get("bootstrap-iso", OTHER_EPOCH, FIRST)
    assert first.path.read_bytes() != other.path.read_bytes()
    with IsoReader(first.path) as a, IsoReader(other.path) as b:
        assert a.label != b.label, "the default label derives from the epoch"


def test_the_cache_changes_nothing(builds: Builds) -> None:
    """With the cache on, holding products of an earlier state of the tree (a root image that
    /updates could bring up to date), the ISO is the one a build without the cache writes."""
    builds.get("bootstrap-iso", EPOCH, EARLIER)
    cached = builds.get("bootstrap-iso", EPOCH, CACHED)
    assert_identical(builds.get("bootstrap-iso", EPOCH, FIRST).path, cached.path, "cached bootstrap-iso")
    with IsoReader(cached.path) as reader:
        assert not reader.exists("/updates"), "a reproducible build took a cached root image + /updates"


def assert_identical(first: Path, second: Path, what: str) -> None:
    """``first`` and ``second`` have the same bytes; else say where they differ."""
    regions = differing_regions(first.read_bytes(), second.read_bytes())
    assert not regions, f"{what}: the two builds differ\n" + describe(first, second, regions)


# -- where two files differ -----------------------------------------------------------------------
def differing_regions(a: bytes, b: bytes) -> list[tuple[int, int]]:
    """(offset, length) runs of differing 2 KiB sectors (a size difference is one more run)."""
    if a == b:
        return []
    regions: list[tuple[int, int]] = []
    common = min(len(a), len(b))
    for offset in range(0, common, SECTOR):
        if a[offset : offset + SECTOR] != b[offset : offset + SECTOR]:
            first = offset + next(
                i
                for i, (x, y) in enumerate(
                    zip(a[offset : offset + SECTOR], b[offset : offset + SECTOR], strict=False)
                )
                if x != y
            )
            if regions and regions[-1][0] + regions[-1][1] >= offset:
                start, _ = regions[-1]
                regions[-1] = (start, offset + SECTOR - start)
            else:
                regions.append((first, offset + SECTOR - first))
    if len(a) != len(b):
        regions.append((common, abs(len(a) - len(b))))
    return regions


def describe(a: Path, b: Path, regions: list[tuple[int, int]]) -> str:
    """Name what each differing region of ``a`` and ``b`` falls in."""
    sizes = f"sizes {a.stat().st_size} / {b.stat().st_size}; {len(regions)} differing region(s)"
    lines = [f"{a}\n{b}\n{sizes}"]
    if a.name.endswith(".tar.gz"):
        lines.append(tar_difference(a, b))
    else:
        extents, seen = iso_extents(a), set[str]()
        for offset, length in regions:
            where = locate_iso(extents, offset, length)
            if where not in seen and len(seen) < SHOWN_REGIONS:
                seen.add(where)
                lines.append(f"  offset {offset} (+{length} bytes): {where}")
    return "\n".join(lines)


def iso_extents(path: Path) -> list[tuple[int, int, str]]:
    """(offset, size, name) of every file, the El Torito images and the volume descriptors."""
    extents: list[tuple[int, int, str]] = [(0, 16 * SECTOR, "system area (MBR/GPT/hybrid)")]
    extents.append((16 * SECTOR, 4 * SECTOR, "volume descriptors"))
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        catalog = iso.eltorito_boot_catalog
        if catalog is not None:
            entries = [catalog.initial_entry] + [e for s in catalog.sections for e in s.section_entries]
            for i, boot in enumerate(entries):
                size = max(boot.sector_count * 512, SECTOR)
                extents.append(
                    (boot.load_rba * SECTOR, size, f"El Torito image {i} (as far as its count says)")
                )
    finally:
        iso.close()
    with IsoReader(path) as reader:
        for entry in reader.walk():
            if entry.kind is EntryKind.FILE and entry.size:
                extents.extend((start, size, entry.path) for start, size in reader.extents(entry.path))
    return extents


def locate_iso(extents: list[tuple[int, int, str]], offset: int, length: int) -> str:
    """What of the ISO lies in ``length`` bytes at ``offset`` (each part by its first byte)."""
    hits = [
        (max(start, offset), start, name)
        for start, size, name in extents
        if start < offset + length and offset < start + max(size, SECTOR)
    ]
    if not hits:
        return "ISO metadata (directory records, path tables, boot catalog) or GPT backup"
    return "; ".join(f"{name} at +{first - start}" for first, start, name in sorted(hits))


def tar_difference(a: Path, b: Path) -> str:
    """Where the decompressed tar streams of ``a`` and ``b`` differ, by member (an ISO member:
    by the file inside it)."""
    raw_a, raw_b = (zlib.decompress(p.read_bytes(), wbits=31) for p in (a, b))
    regions = differing_regions(raw_a, raw_b)
    if not regions:
        return "  the decompressed tars are identical: only the gzip stream differs (header: bytes 4-9)"
    lines = []
    with tarfile.open(a, "r:gz") as tar:
        members = tar.getmembers()
    for offset, length in regions[:SHOWN_REGIONS]:
        where = []
        for m in members:
            if m.offset <= offset < m.offset_data:
                where.append(f"{m.name} (tar header)")
            elif m.offset_data <= offset < m.offset_data + m.size:
                where.append(f"{m.name} data at +{offset - m.offset_data}")
                if m.name.endswith(".iso"):
                    where.append(iso_member_difference(a, b, m.name, raw_a, raw_b, m))
        lines.append(f"  tar offset {offset} (+{length}): {', '.join(where) or 'tar padding/end'}")
    return "\n".join(lines)


def iso_member_difference(
    a: Path, b: Path, name: str, raw_a: bytes, raw_b: bytes, member: tarfile.TarInfo
) -> str:
    """Describe how the ISO ``name`` inside both tars differs."""
    with tarfile.open(b, "r:gz") as tar:
        other = tar.getmember(name)
    isos = []
    for raw, m, side in ((raw_a, member, a), (raw_b, other, b)):
        iso = side.with_name(side.name + ".member.iso")
        iso.write_bytes(raw[m.offset_data : m.offset_data + m.size])
        isos.append(iso)
    regions = differing_regions(isos[0].read_bytes(), isos[1].read_bytes())
    return "\n    inside the ISO:\n" + describe(isos[0], isos[1], regions)
