"""Fuzzing the initrd reader and extractor (every byte of an initrd is hostile input).

Valid archives come from liveos' own writer (``write_newc`` on a small tree, ``CpioEntry.pack``
on random entry lists), plain, compressed (gzip, zstd, xz, lzma, bzip2) or several segments;
then bytes are flipped, cut, inserted, header fields replaced by odd or giant values, before or
after compression. Whatever the input, ``iter_entries``/``read_entries``/``extract`` must give
entries or a liveos error, in bounded CPU time and memory, and extraction must create nothing
outside its target (a canary directory next to it, reachable through the archive's symlinks,
must not change). Run with ``pytest -s`` to see how many examples each test ran.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyzstd
from hypothesis import event, given, settings
from hypothesis import strategies as st

from liveos.cpio import TRAILER, CpioEntry, CpioHeader, extract, iter_entries, read_entries, write_newc
from liveos.errors import ImageError, LiveOSError
from liveos.settings import Compression
from tests.fuzz.fuzzkit import MAX_PEAK, bounded, fuzz_settings, make_canary, runs, tree_state
from tests.unit.test_cpio import ODD_FIELDS as NOT_HEX_FIELDS

ROOT = os.geteuid() == 0
RUNS = runs(__name__)
#: Peak Python allocations for one input (all are under 64 KiB) are bounded by ``MAX_PEAK``, except
#: that an xz/lzma header may ask for a dictionary up to the reader's decoder limit.
MAX_PEAK_LZMA = (80 << 20) + (16 << 20)
FUZZ = fuzz_settings()


# ---------------------------------------------------------------------------------------------
# The sandbox: a canary next to every extraction target.
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sandbox:
    root: Path  # holds canary/ and one work dir per example

    @property
    def canary(self) -> Path:
        return self.root / "canary"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    root = tmp_path_factory.mktemp("fuzz-cpio")
    canary = make_canary(root)
    (canary / "sub").chmod(0o700)
    os.symlink("secret", canary / "link")
    return Sandbox(root)


def exercise(
    sandbox: Sandbox, data: bytes | Callable[[Path], bytes], *, name: str, limit: int = MAX_PEAK
) -> str:
    """Read and extract ``data`` (or ``data(dest)``): entries or a liveos error, bounded in CPU
    time and memory, and nothing changed outside the extraction target."""
    RUNS[name] += 1
    work = Path(tempfile.mkdtemp(prefix="work-", dir=sandbox.root))
    try:
        dest = work / "dest"
        dest.mkdir()
        raw = data(dest) if callable(data) else data
        before = tree_state(sandbox.root, skip=dest)
        outcome = []
        with bounded(limit):
            for step in (_drain, _read_all, lambda d: _extract(d, dest)):
                try:
                    step(raw)
                    outcome.append("ok")
                except LiveOSError as exc:
                    outcome.append(type(exc).__name__)
        assert tree_state(sandbox.root, skip=dest) == before, "something outside dest changed"
    finally:
        _remove_tree(work)
    event("iter/read/extract: " + "/".join(outcome))  # see --hypothesis-show-statistics
    return "/".join(outcome)


def _drain(data: bytes) -> None:
    for member in iter_entries(io.BytesIO(data)):
        member.read()


def _read_all(data: bytes) -> None:
    read_entries(io.BytesIO(data))


def _extract(data: bytes, dest: Path) -> None:
    extract(io.BytesIO(data), dest)


def _remove_tree(top: Path) -> None:
    """rm -rf that copes with what an archive leaves (0000 directories, fifos)."""
    for dirpath, dirnames, _ in os.walk(top, followlinks=False):
        for name in dirnames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o700)
    for dirpath, dirnames, filenames in os.walk(top, topdown=False, followlinks=False):
        for name in filenames:
            (Path(dirpath) / name).unlink()
        for name in dirnames:
            path = Path(dirpath) / name
            if path.is_symlink():
                path.unlink()
            else:
                path.rmdir()
    top.rmdir()


# ---------------------------------------------------------------------------------------------
# Valid archives.
# ---------------------------------------------------------------------------------------------
COMPONENTS = ["a", "b", "dd", "é", "x y", "L" * 40]


@st.composite
def entry_lists(draw: st.DrawFn) -> list[CpioEntry]:
    """A small valid archive's entries: dirs, files, symlinks, fifos, hard-link pairs."""
    entries: list[CpioEntry] = []
    ino = 100
    for _ in range(draw(st.integers(1, 10))):
        name = "/".join(draw(st.lists(st.sampled_from(COMPONENTS), min_size=1, max_size=3)))
        kind = draw(st.sampled_from(["dir", "file", "file", "symlink", "fifo", "hardlink"]))
        mode = draw(st.sampled_from([0o755, 0o644, 0o600, 0o4755, 0o1777, 0]))
        mtime = draw(st.integers(0, 2**32 - 1))
        if kind == "dir":
            entries.append(CpioEntry(name, stat.S_IFDIR | mode, mtime=mtime, nlink=2))
        elif kind == "file":
            data = draw(st.binary(max_size=300))
            entries.append(CpioEntry(name, stat.S_IFREG | mode, mtime=mtime, data=data))
        elif kind == "symlink":
            target = draw(st.sampled_from(["a", "../a", "/canary", "dd/../..", "é"]))
            entries.append(CpioEntry.symlink(name, target))
        elif kind == "fifo":
            entries.append(CpioEntry.fifo(name, mode=mode & 0o777))
        else:
            ino += 1
            data = draw(st.binary(min_size=1, max_size=50))
            entries.append(CpioEntry(name, stat.S_IFREG | 0o644, nlink=2, ino=ino))
            entries.append(CpioEntry(name + "-2", stat.S_IFREG | 0o644, nlink=2, ino=ino, data=data))
    return entries


def pack(entries: list[CpioEntry]) -> bytes:
    body = b"".join(e.pack() for e in entries) + CpioEntry(TRAILER, 0).pack()
    return body + b"\0" * (-len(body) % 512)


COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "none": lambda d: d,
    "gzip": lambda d: gzip.compress(d, 1),
    "zstd": lambda d: pyzstd.compress(d, 3),
    "xz": lambda d: lzma.compress(d, check=lzma.CHECK_CRC32, preset=1),
    "lzma": lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE, preset=1),
    "bzip2": lambda d: bz2.compress(d, 1),
    "multi": lambda d: d + b"\0" * 512 + pyzstd.compress(d) + lzma.compress(d, check=lzma.CHECK_CRC32),
}


def peak_limit(compression: str) -> int:
    return MAX_PEAK_LZMA if compression in ("xz", "lzma", "multi") else MAX_PEAK


# ---------------------------------------------------------------------------------------------
# Mutations.
# ---------------------------------------------------------------------------------------------
ODD_FIELDS = [
    *NOT_HEX_FIELDS,  # the unit tests' malformed fields: signs, spaces, "0x", non-hex, non-ASCII
    b"\xff\xfe0000000"[:8],
    b"FFFFFFFF",  # 4 GiB - 1: a giant name size or file size
    b"7FFFFFFF",
    b"00001000",  # name size PATH_MAX
    b"00001001",  # name size PATH_MAX + 1
    b"00000000",
    b"00000001",
    b"0000A1FF",  # a symlink's mode
    b"000041ED",  # a directory's mode
    b"000021B6",  # a character device's mode
    b"00010000",
]

Mutation = tuple[str, int, int, bytes]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "delete", "insert", "truncate", "field", "repeat"]),
        st.integers(0, 2**20),
        st.integers(0, 255),
        st.one_of(st.sampled_from(ODD_FIELDS), st.binary(min_size=1, max_size=16)),
    ),
    max_size=4,
)


def mutate(data: bytes, ops: list[Mutation]) -> bytes:
    buf = bytearray(data)
    for op, where, small, blob in ops:
        pos = where % (len(buf) + 1)
        if op == "flip" and pos < len(buf):
            buf[pos] ^= 1 << (small % 8)
        elif op == "set" and pos < len(buf):
            buf[pos] = small
        elif op == "delete":
            del buf[pos : pos + 1 + small % 16]
        elif op == "insert":
            buf[pos:pos] = blob
        elif op == "truncate":
            del buf[pos:]
        elif op == "repeat":
            buf[pos:pos] = buf[pos : pos + 1 + small]
        elif op == "field":
            headers = [i for i in range(len(buf)) if buf[i : i + 5] == b"07070"]
            if headers:
                start = headers[where % len(headers)] + 6 + 8 * (small % 13)
                buf[start : start + 8] = (blob + b"00000000")[:8]
    return bytes(buf)


# ---------------------------------------------------------------------------------------------
# The fuzzers.
# ---------------------------------------------------------------------------------------------
hex_fields = st.one_of(
    st.integers(0, 2**32 - 1).map(lambda n: b"%08x" % n),
    st.integers(0, 2**32 - 1).map(lambda n: b"%08X" % n),
    st.sampled_from(ODD_FIELDS),
    st.binary(min_size=8, max_size=8),
)


@settings(FUZZ, max_examples=1000)
@given(fields=st.lists(hex_fields, min_size=13, max_size=13), magic=st.sampled_from([b"070701", b"070702"]))
def test_header_parse_accepts_exactly_eight_hex_digits(fields: list[bytes], magic: bytes) -> None:
    RUNS["header_parse"] += 1
    raw = magic + b"".join(fields)
    valid = all(len(f) == 8 and all(c in b"0123456789abcdefABCDEF" for c in f) for f in fields)
    if not valid:
        with pytest.raises(ImageError):
            CpioHeader.parse(raw)
        return
    header = CpioHeader.parse(raw)
    assert header.pack()[6:] == raw[6:].upper()
    assert CpioHeader.parse(header.pack()) == header


@settings(FUZZ, max_examples=600)
@given(
    entries=entry_lists(),
    compression=st.sampled_from(sorted(COMPRESSORS)),
    before=mutations,
    after=mutations,
)
def test_mutated_archives_give_entries_or_liveos_errors(
    sandbox: Sandbox,
    entries: list[CpioEntry],
    compression: str,
    before: list[Mutation],
    after: list[Mutation],
) -> None:
    data = mutate(COMPRESSORS[compression](mutate(pack(entries), before)), after)
    assert len(data) < 64 * 1024
    outcome = exercise(sandbox, data, name="mutated_archives", limit=peak_limit(compression))
    if not before and not after:
        assert outcome.startswith("ok/ok/")  # unmutated archives always read (names may clash)


@pytest.fixture(scope="module")
def writer_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[Compression, bytes]:
    """``write_newc`` of a small tree (hard links, symlinks, a fifo, odd modes), per compressor."""
    src = tmp_path_factory.mktemp("fuzz-cpio-src")
    (src / "etc" / "sub").mkdir(parents=True)
    (src / "etc" / "hostname").write_text("live\n")
    (src / "etc" / "secret").write_bytes(os.urandom(700))
    (src / "etc" / "secret").chmod(0o600)
    os.link(src / "etc" / "hostname", src / "etc" / "sub" / "hardlink")
    os.symlink("../hostname", src / "etc" / "sub" / "up")
    os.symlink("/etc/passwd", src / "abs")
    os.mkfifo(src / "fifo")
    (src / "ro").mkdir(mode=0o555)
    out = {}
    for compression in Compression:
        buf = io.BytesIO()
        write_newc(src, buf, compression=compression, level=1)
        out[compression] = buf.getvalue()
    return out


@settings(FUZZ, max_examples=300)
@given(compression=st.sampled_from(list(Compression)), ops=mutations, late=st.booleans())
def test_mutated_writer_output_gives_entries_or_liveos_errors(
    sandbox: Sandbox,
    writer_archives: dict[Compression, bytes],
    compression: Compression,
    ops: list[Mutation],
    late: bool,
) -> None:
    data = writer_archives[compression]
    if late:  # mutate the cpio stream, then compress it again
        plain = writer_archives[Compression.NONE]
        data = COMPRESSORS[compression.value](mutate(plain, ops))
    else:
        data = mutate(data, ops)
    exercise(sandbox, data, name="writer_output", limit=peak_limit(compression.value))


# -- hostile entry sequences: names, replacements, links out of the target ---------------------
GOOD_NAMES = ["a", "b", "a/b", "b/c", "./a", "a//b", "a/./b"]
EVIL_NAMES = [
    "..",
    "../x",
    "a/../../x",
    "/abs",
    ".",
    "n" * 256,
    "a/" + "n" * 255,
    "x\udcff",
]


@st.composite
def hostile_entries(draw: st.DrawFn) -> list[tuple[str, str, int, str]]:
    """(kind, name, mode, symlink target placeholder) -- targets are resolved per sandbox.

    Names are mostly valid so that the attacks are reached: an entry often reuses an earlier
    entry's name with another kind (a directory turned into a symlink to the canary, a link
    group's first name replaced, a file through a symlinked parent)."""
    kinds = st.sampled_from(["dir", "file", "symlink", "fifo", "hardlink", "chr"])
    out: list[tuple[str, str, int, str]] = []
    for _ in range(draw(st.integers(1, 10))):
        reuse = draw(st.booleans())
        if out and reuse:
            name = draw(st.sampled_from([n for _, n, _, _ in out]))
            if draw(st.booleans()):
                name = name + "/" + draw(st.sampled_from(["x", "secret", "sub/file"]))
        else:
            name = draw(st.sampled_from(GOOD_NAMES * 8 + EVIL_NAMES))
        kind = draw(kinds)
        mode = draw(st.sampled_from([0o777, 0o4777, 0o000, 0o555, 0o644]))
        target = draw(st.sampled_from(["CANARY", "CANARY/secret", "CANARY/sub", "REL", "a", "/", ".."]))
        out.append((kind, name, mode, target))
    return out


def build_hostile(sandbox: Sandbox, spec: list[tuple[str, str, int, str]], dest: Path) -> bytes:
    entries = []
    for i, (kind, name, mode, target) in enumerate(spec):
        where = (dest / name).parent if not name.startswith("/") else dest
        link = {
            "CANARY": str(sandbox.canary),
            "CANARY/secret": str(sandbox.canary / "secret"),
            "CANARY/sub": str(sandbox.canary / "sub"),
            "REL": os.path.relpath(sandbox.canary, where),
        }.get(target, target)
        if kind == "dir":
            entries.append(CpioEntry(name, stat.S_IFDIR | mode, uid=1234, gid=1234, mtime=7, nlink=2))
        elif kind == "file":
            entries.append(CpioEntry(name, stat.S_IFREG | mode, uid=1234, mtime=7, data=b"pwned"))
        elif kind == "symlink":
            entries.append(CpioEntry.symlink(name, link, uid=1234, gid=1234))
        elif kind == "fifo":
            entries.append(CpioEntry(name, stat.S_IFIFO | mode, uid=1234, mtime=7))
        elif kind == "chr" and ROOT:
            entries.append(CpioEntry(name, stat.S_IFCHR | mode, rdevmajor=1, rdevminor=3))
        else:
            entries.append(CpioEntry(name, stat.S_IFREG | mode, nlink=2, ino=1 + i % 2, data=b"linked"))
    return pack(entries)


@settings(FUZZ, max_examples=500)
@given(spec=hostile_entries(), compression=st.sampled_from(["none", "zstd"]))
def test_hostile_entry_sequences_never_touch_anything_outside_dest(
    sandbox: Sandbox, spec: list[tuple[str, str, int, str]], compression: str
) -> None:
    """Directories replaced by symlinks to the canary, links through links, '..', absolute and
    over-long names, hard links to replaced names: never a change outside the target."""
    exercise(
        sandbox,
        lambda dest: COMPRESSORS[compression](build_hostile(sandbox, spec, dest)),
        name="hostile_sequences",
    )
