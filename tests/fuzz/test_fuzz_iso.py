"""Fuzzing the ISO 9660 reader (every byte of an ISO is hostile input).

Small valid ISOs come from liveos' own writer (``IsoWriter``) and, when installed, from
``xorriso`` (continuation areas, another layout); their bytes are then mutated: anywhere in the
metadata, around each System Use entry, and in a targeted way in the Rock Ridge entries --
names (NM) overwritten with ``..``, ``/``, NUL, names copied onto other entries, symlink
components (SL) and file modes (PX) changed. Whatever the input, opening, walking, reading and
extracting must give results or a liveos error, in bounded CPU time and memory, and never change
anything outside the extraction target (a canary directory that the ISO's symlinks point at).
Run with ``pytest -s`` to see how many examples each test ran.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from liveos.errors import LiveOSError
from liveos.image.isofs import EntryKind, IsoReader
from liveos.iso import IsoWriter
from tests.fuzz.fuzzkit import bounded, fuzz_settings, make_canary, runs, tree_state

RUNS = runs(__name__)
FUZZ = fuzz_settings()
#: Rock Ridge names of the length of the evil ones the mutations write over them.
EVIL = [b"..", b".", b"/", b"a/b", b"\0", b"../x", b"../../canary/pwned", b"x\0y"]
SIGNATURES = (b"NM", b"SL", b"PX", b"TF", b"CE", b"RE", b"CL", b"PL", b"SP", b"ER", b"RR", b"PN", b"CD001")


@dataclass(frozen=True)
class Base:
    """A valid ISO and where its Rock Ridge entries are."""

    name: str
    data: bytes
    nm: tuple[tuple[int, int], ...]  # (offset of the name, its length)
    sl: tuple[tuple[int, int], ...]  # (offset of the components, their length)
    px: tuple[int, ...]  # offset of the mode (both-endian, 8 bytes)
    hot: tuple[int, ...]  # every System Use signature and volume descriptor

    @classmethod
    def of(cls, name: str, data: bytes) -> Base:
        def entries(sig: bytes) -> list[tuple[int, int]]:
            found = []
            for m in re.finditer(re.escape(sig), data):
                size, version = data[m.start() + 2], data[m.start() + 3]
                if version == 1 and 5 <= size <= 255:
                    found.append((m.start(), size))
            return found

        nm = tuple((at + 5, size - 5) for at, size in entries(b"NM") if size > 5)
        sl = tuple((at + 5, size - 5) for at, size in entries(b"SL") if size > 5)
        px = tuple(at + 4 for at, size in entries(b"PX") if size >= 36)
        hot = sorted({m.start() for sig in SIGNATURES for m in re.finditer(re.escape(sig), data)})
        return cls(name, data, nm, sl, px, tuple(hot))


@dataclass(frozen=True)
class Sandbox:
    root: Path
    bases: tuple[Base, ...]

    @property
    def canary(self) -> Path:
        return self.root / "canary"


def _populate(
    add_file: Callable[[str, bytes], None], add_link: Callable[[str, str], None], canary: Path
) -> None:
    """The tree of both base ISOs: awkward names, deep dirs, links out of the target."""
    add_file("boot/grub2/grub.cfg", b"search --label X\n")
    add_file("boot/vmlinuz", os.urandom(3000))
    for size in sorted({len(evil) for evil in EVIL}):  # names the mutations can replace in place
        add_file("boot/" + "z" * size, b"renamed\n")
        add_file("d" * size + "/f", b"in a dir\n")
    add_file("/".join(f"level{i}" for i in range(10)) + "/deep.txt", b"deep\n")
    add_file("n" * 200, b"long name\n")
    add_file("unicode-é", b"u\n")
    add_link("boot/abs", str(canary / "secret"))
    add_link("boot/up", "../../../canary")  # from dest/boot: the sandbox's canary
    add_link("boot/dirlink", str(canary))
    add_link("dangling", "does/not/exist")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Sandbox:
    root = tmp_path_factory.mktemp("fuzz-iso")
    canary = make_canary(root)
    bases = []

    writer = IsoWriter("FUZZ")
    _populate(
        lambda path, data: writer.add_bytes("/" + path, data),
        lambda path, target: writer.add_symlink("/" + path, target),
        canary,
    )
    iso = root / "base-liveos.iso"
    writer.write(iso, hybrid=False)
    bases.append(Base.of("liveos", iso.read_bytes()))

    if shutil.which("xorriso"):
        tree = root / "base-tree"

        def add_file(path: str, data: bytes) -> None:
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_bytes(data)

        def add_link(path: str, target: str) -> None:
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, tree / path)

        _populate(add_file, add_link, canary)
        iso = root / "base-xorriso.iso"
        cmd = ["xorriso", "-as", "mkisofs", "-R", "-J", "-no-pad", "-quiet", "-o", str(iso), str(tree)]
        subprocess.run(cmd, check=True, capture_output=True)
        bases.append(Base.of("xorriso", iso.read_bytes()))
        shutil.rmtree(tree)
    return Sandbox(root, tuple(bases))


# ---------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------
def _read_everything(iso: Path, out: Path) -> str:
    """Everything a caller can do with an ISO; extractions go below ``out``."""
    with IsoReader(iso) as reader:
        _ = reader.label, reader.joliet_label
        entries = list(reader.walk())
        for entry in entries:
            assert reader.entry(entry.path) == entry
            if entry.kind is EntryKind.FILE:
                data = reader.read_bytes(entry.path)
                assert len(data) == entry.size == sum(n for _, n in reader.extents(entry.path))
        reader.extract("/", out / "dest")
        (out / "single").mkdir()
        for entry in entries:  # entry by entry to paths built from ISO names, as live_iso does
            if entry.kind is not EntryKind.DIR:
                reader.extract(entry.path, out / "single" / entry.path[1:], within=out / "single")
    return f"ok ({len(entries)} entries)"


def exercise(sandbox: Sandbox, data: bytes, *, name: str) -> None:
    """Open, walk, read and extract ``data``: results or a liveos error, bounded, and nothing
    changed outside the extraction targets."""
    RUNS[name] += 1
    work = Path(tempfile.mkdtemp(prefix="work-", dir=sandbox.root))
    try:
        iso = work / "fuzz.iso"
        iso.write_bytes(data)
        out = work / "out"
        out.mkdir()
        before = tree_state(sandbox.root, skip=out)
        with bounded(what="one ISO"):
            try:
                outcome = _read_everything(iso, out)
            except LiveOSError as exc:
                outcome = f"{type(exc).__name__}: {exc.message.split(':')[0][:40]}"
        assert tree_state(sandbox.root, skip=out) == before, "something outside the target changed"
        if outcome.startswith("ok"):
            for path in (out / "dest").rglob("*"):  # what was made is inside, links not followed
                assert path.is_symlink() or path.resolve().is_relative_to(out)
    finally:
        shutil.rmtree(work)
    event(outcome.encode("utf-8", "backslashreplace").decode() if not outcome.startswith("ok") else "ok")


# ---------------------------------------------------------------------------------------------
# Mutations.
# ---------------------------------------------------------------------------------------------
Op = tuple[str, int, int, bytes]
raw_ops = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "random", "zero", "ff"]),
        st.integers(0, 2**24),
        st.integers(-48, 48),
        st.binary(min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)


def apply_raw(base: Base, ops: list[Op], *, near_entries: bool) -> bytes:
    """Byte mutations near a System Use entry / volume descriptor, or anywhere in the metadata."""
    buf = bytearray(base.data)
    metadata_end = min(len(buf), max(base.hot) + 2048)
    for op, where, delta, blob in ops:
        if near_entries:
            pos = base.hot[where % len(base.hot)] + delta
        else:
            pos = 16 * 2048 + where % (metadata_end - 16 * 2048)
        pos = max(0, min(len(buf) - 1, pos))
        if op == "flip":
            buf[pos] ^= 1 << (where % 8)
        elif op == "set":
            buf[pos] = blob[0]
        elif op == "random":
            buf[pos : pos + len(blob)] = blob
        elif op == "zero":
            buf[pos] = 0
        else:
            buf[pos] = 0xFF
    return bytes(buf)


NAME_BYTES = st.sampled_from([b".", b"/", b"\0", b"a", b"\xff", b"\xc3", b" "])
name_ops = st.lists(
    st.tuples(
        st.sampled_from(["evil", "bytes", "copy", "flags", "length"]),
        st.integers(0, 2**16),
        st.lists(NAME_BYTES, min_size=1, max_size=20),
    ),
    min_size=1,
    max_size=3,
)


def apply_names(base: Base, ops: list[tuple[str, int, list[bytes]]]) -> bytes:
    """Rock Ridge name mutations: evil names, odd bytes, duplicates, NM flags and lengths."""
    buf = bytearray(base.data)
    for op, which, chars in ops:
        at, size = base.nm[which % len(base.nm)]
        if op == "evil":
            fitting = [e for e in EVIL if len(e) == size] or [(b"../" * size)[:size]]
            buf[at : at + size] = fitting[which % len(fitting)]
        elif op == "bytes":
            buf[at : at + size] = (b"".join(chars) * size)[:size]
        elif op == "copy":  # another entry's name of the same length: duplicates
            same = [(a, s) for a, s in base.nm if s == size and a != at]
            if same:
                src, _ = same[which % len(same)]
                buf[at : at + size] = base.data[src : src + size]
        elif op == "flags":  # CONTINUE, CURRENT, PARENT, reserved bits
            buf[at - 1] = [0x01, 0x02, 0x04, 0x06, 0x20, 0xFF][which % 6]
        else:  # the NM entry's length byte
            buf[at - 3] = [0, 1, 4, 5, 6, size + 4, size + 6, 255][which % 8]
    return bytes(buf)


def apply_links_and_modes(base: Base, ops: list[tuple[bool, int, int, bytes]]) -> bytes:
    """SL component bytes (flags, lengths, NUL, '/') and PX file modes (type bits too)."""
    buf = bytearray(base.data)
    modes = [0o040755, 0o100644, 0o120777, 0o020666, 0o010644, 0o140755, 0o000000, 0o177777]
    for on_link, which, delta, blob in ops:
        if on_link and base.sl:
            at, size = base.sl[which % len(base.sl)]
            pos = at + abs(delta) % size
            buf[pos : pos + len(blob)] = blob
        elif base.px:
            at = base.px[which % len(base.px)]
            mode = (
                modes[abs(delta) % len(modes)] if delta else int.from_bytes(blob.ljust(4, b"\0"), "little")
            )
            buf[at : at + 8] = mode.to_bytes(4, "little") + mode.to_bytes(4, "big")
    return bytes(buf)


link_ops = st.lists(
    st.tuples(
        st.booleans(),
        st.integers(0, 2**16),
        st.integers(-8, 64),
        st.sampled_from([b"\0", b"/", b"..", b"\x02", b"\x04", b"\x08", b"\x01\xff", b"\x00\x00", b"\xff"]),
    ),
    min_size=1,
    max_size=3,
)


# ---------------------------------------------------------------------------------------------
# The fuzzers.
# ---------------------------------------------------------------------------------------------
@settings(FUZZ, max_examples=150)
@given(which=st.integers(0, 1), ops=raw_ops, near=st.booleans())
def test_byte_mutations_give_results_or_liveos_errors(
    sandbox: Sandbox, which: int, ops: list[Op], near: bool
) -> None:
    base = sandbox.bases[which % len(sandbox.bases)]
    exercise(sandbox, apply_raw(base, ops, near_entries=near), name="byte_mutations")


@settings(FUZZ, max_examples=200)
@given(which=st.integers(0, 1), ops=name_ops)
def test_rock_ridge_name_mutations_never_escape(
    sandbox: Sandbox, which: int, ops: list[tuple[str, int, list[bytes]]]
) -> None:
    base = sandbox.bases[which % len(sandbox.bases)]
    exercise(sandbox, apply_names(base, ops), name="name_mutations")


@settings(FUZZ, max_examples=100)
@given(which=st.integers(0, 1), ops=link_ops)
def test_symlink_and_mode_mutations_never_escape(
    sandbox: Sandbox, which: int, ops: list[tuple[bool, int, int, bytes]]
) -> None:
    base = sandbox.bases[which % len(sandbox.bases)]
    exercise(sandbox, apply_links_and_modes(base, ops), name="link_mode_mutations")


def test_unmutated_bases_read_fully(sandbox: Sandbox) -> None:
    for base in sandbox.bases:
        with tempfile.TemporaryDirectory(dir=sandbox.root) as tmp:
            iso = Path(tmp) / "base.iso"
            iso.write_bytes(base.data)
            assert _read_everything(iso, Path(tmp)).startswith("ok"), base.name
            assert os.readlink(Path(tmp) / "dest" / "boot" / "up") == "../../../canary"
        assert base.nm and base.px, base.name
