"""Fuzzing the parsers of binary tables and small documents from images: the media state file,
GPT and MBR partition tables, the VHD footer and fstab.

Whatever the bytes, each ends in a result or an :class:`~liveos.errors.ImageError` naming the
file, in bounded time and memory; a result is sane (a state renders back to itself, partitions
lie inside the disk without sharing a byte). Partition tables are written by hand, valid, then
mutated -- overlapping, repeated and out-of-disk entries, absurd counts, EBR loops -- with their
CRCs recomputed, so the hostile content passes the checksums the way a crafted image would.

Each test counts the examples it ran; ``pytest -s`` prints the counts at the end of the module.
``LIVEOS_FUZZ_SCALE=N`` runs N times the examples.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import struct
import time
import zlib
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveos.errors import ImageError, LiveOSError
from liveos.image.formats import VHD_COOKIE, VHD_FOOTER_SIZE, VhdFooter
from liveos.image.fstab import FstabEntry, parse_fstab
from liveos.image.partitions import MAX_PARTITIONS, PartitionTable, read_partition_table
from liveos.settings import InitramfsMode
from liveos.state import MAX_STATE_BYTES, MediaState, SourceDigest
from tests.fuzz.fuzzkit import MIB, PER_INPUT_SECONDS, examples, fuzz_settings, measured, runs
from tests.unit.test_image_partitions import SECTOR, gpt_bytes, mbr_bytes
from tests.unit.test_state import STATE

RUNS = runs(__name__)
FUZZ = fuzz_settings(examples(500), deadline=timedelta(seconds=PER_INPUT_SECONDS))


# ---------------------------------------------------------------------- state.json
STATE_PATH = "media.iso:/liveos/state.json"
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(
        ["bootstrap", "full-os", "LIVEOS_X", "ab" * 32, "2023-11-14T22:13:20Z", "9999-12-31T23:59:59Z"]
    ),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_paths = st.sampled_from(
    [
        ("schema",),
        ("liveos_version",),
        ("mode",),
        ("label",),
        ("build_time",),
        ("kernel_args",),
        ("kernel_args", "live"),
        ("kernel_args", "user"),
        ("source",),
        ("source", "size"),
        ("source", "sha256"),
        ("source", "algorithm"),
        ("extra",),
    ]
)
#: Texts that break JSON decoders: numbers past int()'s digit limit, deep nesting, odd constants.
_HOSTILE = [
    "1" * 5000,
    "-" + "9" * 4301,
    "1e999999",
    "NaN",
    "-Infinity",
    "[" * 5000 + "]" * 5000,
    '{"a":' * 3000 + "1" + "}" * 3000,
    '"\\ud800"',
    '"' + "\\u0000" * 100 + '"',
    "9" * 19,
    str(2**63),
    "-1",
]


@st.composite
def _state_docs(draw: st.DrawFn) -> str | bytes:
    doc = json.loads(STATE.render())
    for _ in range(draw(st.integers(0, 3))):
        where = draw(_paths)
        node = doc
        for key in where[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else node
        if isinstance(node, dict):
            if draw(st.integers(0, 5)) == 0:
                node.pop(where[-1], None)
            else:
                node[where[-1]] = draw(_json)
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2])))
    if draw(st.booleans()):  # a raw hostile value in place of one the document has
        key = draw(st.sampled_from(['"size": 123', '"schema": 1', '"live": [']))
        text = text.replace(
            key, key.split(":")[0] + ": " + draw(st.sampled_from(_HOSTILE)) + ("," if "[" in key else ""), 1
        )
    if draw(st.integers(0, 3)) == 0:  # bytes changed anywhere
        at = draw(st.integers(0, len(text)))
        text = (
            text[:at]
            + draw(st.sampled_from(["{", "}", "[", "]", ",", '"', "\\", "\x00", "\u00e9", "\ufeff", ""]))
            + text[at + draw(st.integers(0, 3)) :]
        )
    if draw(st.booleans()):
        return text.encode("utf-8", "surrogatepass")
    return text


_arg = st.text(st.characters(min_codepoint=32, exclude_categories=["Cs"]), min_size=1, max_size=12)
_valid_states = st.builds(
    MediaState,
    liveos_version=st.text(max_size=12),
    mode=st.sampled_from(InitramfsMode),
    label=st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True),
    live_args=st.lists(_arg, max_size=4).map(tuple),
    user_args=st.lists(_arg, max_size=4).map(tuple),
    source=st.builds(
        SourceDigest,
        st.text(max_size=20),
        st.integers(0, 2**63 - 1),
        st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    ),
    build_time=st.integers(0, 253402300799),  # up to 9999-12-31T23:59:59Z
)


@FUZZ
@given(_valid_states)
def test_fuzz_media_state_round_trips(state: MediaState) -> None:
    RUNS["media_state_valid"] += 1
    text = state.render()
    assert MediaState.parse(text) == state
    assert MediaState.parse(text.encode()).render() == text


@FUZZ
@given(st.one_of(_state_docs(), st.binary(max_size=64), st.sampled_from(_HOSTILE)))
def test_fuzz_media_state(text: str | bytes) -> None:
    RUNS["media_state"] += 1
    started = time.process_time()
    try:
        state = MediaState.parse(text, path=STATE_PATH)
    except LiveOSError as error:
        assert isinstance(error, ImageError), error
        assert STATE_PATH in str(error) and len(str(error)) < 2000
        RUNS["media_state (an ImageError)"] += 1
    else:
        RUNS["media_state (a state)"] += 1
        assert MediaState.parse(state.render(), path=STATE_PATH) == state
        assert 0 <= state.source.size < 2**63
    assert time.process_time() - started < PER_INPUT_SECONDS


def test_media_state_limits() -> None:
    RUNS["media_state_limits"] += 1
    text = STATE.render()
    padded = text.replace('"schema"', " " * (MAX_STATE_BYTES - len(text)) + '"schema"')
    assert MediaState.parse(padded) == STATE  # up to the limit
    for hostile in (padded + " ", b" " * (64 * MIB), "[" * MAX_STATE_BYTES):
        started = time.process_time()
        with pytest.raises(ImageError, match=r"state\.json"):
            MediaState.parse(hostile)
        assert time.process_time() - started < 1.0
    for number in ("-1", str(2**63), "1" * 5000):
        with pytest.raises(ImageError, match=r"source\.size|digits"):
            MediaState.parse(text.replace('"size": 123', f'"size": {number}'))
    with pytest.raises(ImageError, match="twice"):
        MediaState.parse(text.replace('"mode": "bootstrap"', '"mode": "bootstrap", "mode": "full-os"'))
    with measured() as usage, pytest.raises(ImageError):
        MediaState.parse("[" * 20000 + "]" * 20000)
    assert usage.peak < 8 * MIB


# ---------------------------------------------------------------------- partition tables
def _check_table(table: PartitionTable, size: int) -> None:
    """What the opener relies on: a size, inside the disk, no shared byte, few, numbers unique."""
    parts = sorted(table.partitions, key=lambda p: p.start)
    assert len(parts) <= MAX_PARTITIONS  # none is possible: a GPT with every entry unused
    assert len({p.number for p in parts}) == len(parts)
    for part in parts:
        assert part.size > 0 and part.start >= 0 and part.end <= size
    for before, after in itertools.pairwise(parts):
        assert before.end <= after.start


def _read(path: Path, data: bytes | bytearray) -> PartitionTable | None:
    path.write_bytes(bytes(data))
    started = time.process_time()
    table: PartitionTable | None = None
    try:
        table = read_partition_table(path)
    except LiveOSError as error:
        assert isinstance(error, ImageError), error
        assert str(path) in str(error)
    else:
        _check_table(table, len(data))
    assert time.process_time() - started < PER_INPUT_SECONDS
    return table


SECTORS = 512  # a 256 KiB disk: room for tables, partitions and the backup GPT
_lba = st.one_of(
    st.integers(0, SECTORS + 8),
    st.sampled_from([33, 34, SECTORS - 34, SECTORS - 1, 2**32 - 1, 2**63, 2**64 - 1]),
)
_extent = st.tuples(_lba, _lba)


@dataclass(frozen=True)
class GptRecipe:
    """How to write a hostile GPT disk (drawn small: hypothesis keeps what it draws, not 256 KiB)."""

    parts: tuple[tuple[int, int], ...]
    count: int
    backup: bool
    header_field: tuple[int, str, int] | None  #: (offset, struct format, value), CRC recomputed
    damage: tuple[tuple[int, int], ...]  #: (offset, byte), CRC left wrong

    def disk(self) -> bytearray:
        data = gpt_bytes(self.parts, sectors=SECTORS, count=self.count, backup=self.backup)
        if self.header_field is not None:
            offset, fmt, value = self.header_field
            struct.pack_into(fmt, data, SECTOR + offset, value % (2**32 if fmt == "<I" else 2**64))
            struct.pack_into("<I", data, SECTOR + 16, 0)
            header_size = min(max(struct.unpack_from("<I", data, SECTOR + 12)[0], 92), SECTOR)
            struct.pack_into("<I", data, SECTOR + 16, zlib.crc32(bytes(data[SECTOR : SECTOR + header_size])))
        for offset, byte in self.damage:
            data[offset % len(data)] = byte
        return data


@st.composite
def _gpt_recipes(draw: st.DrawFn) -> GptRecipe:
    """A GPT with drawn (often hostile) entries and header fields, CRCs right; then maybe bytes
    changed without fixing the CRCs (the backup header should then be used)."""
    parts = draw(st.lists(_extent, max_size=8))
    if draw(st.integers(0, 4)) == 0:  # one entry many times (each would be a loop device)
        parts = parts[:1] * draw(st.integers(2, 64))
    count = draw(st.sampled_from([4, 16, 64, 128, 256]))
    header_field = None
    if draw(st.integers(0, 3)) == 0:
        offset, fmt = draw(
            st.sampled_from([(72, "<Q"), (80, "<I"), (84, "<I"), (12, "<I"), (24, "<Q"), (32, "<Q")])
        )
        value = draw(st.sampled_from([0, 1, 8, 92, 128, 129, 4096, 4097, 0xFFFFFFFF, 2**63, 2**64 - 1]))
        header_field = (offset, fmt, value)
    damage = draw(st.lists(st.tuples(st.integers(0, SECTORS * SECTOR - 1), st.integers(0, 255)), max_size=2))
    return GptRecipe(tuple(parts[:count]), count, draw(st.booleans()), header_field, tuple(damage))


@st.composite
def _mbr_recipes(
    draw: st.DrawFn,
) -> tuple[
    list[tuple[int, int, int]], list[tuple[int, tuple[int, int, int] | None, int | None]], int | None
]:
    """MBR slots, EBRs (hostile chains too) and maybe a boot flag byte of slot 1."""
    kinds = st.sampled_from([0x00, 0x83, 0x82, 0xEF, 0x05, 0x0F, 0x85, 0xEE])
    small = st.integers(0, SECTORS + 4)
    slots = draw(st.lists(st.tuples(kinds, small, small), max_size=4))
    extended = [(first, count) for kind, first, count in slots if kind in (0x05, 0x0F, 0x85)]
    ebrs = []
    if extended:
        base = extended[0][0]
        for _ in range(draw(st.integers(0, 6))):
            lba = draw(st.one_of(st.just(base), st.integers(base, base + 40)))
            logical = draw(st.one_of(st.none(), st.tuples(kinds, st.integers(0, 40), st.integers(0, 60))))
            link = draw(st.one_of(st.none(), st.integers(0, 40)))
            if lba < SECTORS:
                ebrs.append((lba, logical, link))
    flag = draw(st.one_of(st.none(), st.sampled_from([0x00, 0x80, 0x01, 0xFF])))
    return slots, ebrs, flag


@pytest.fixture(scope="module")
def disk_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-tables") / "disk.raw"


@FUZZ
@given(recipe=_gpt_recipes())
def test_fuzz_gpt(disk_file: Path, recipe: GptRecipe) -> None:
    RUNS["gpt"] += 1
    table = _read(disk_file, recipe.disk())
    RUNS["gpt (a table)" if table else "gpt (an ImageError)"] += 1


@FUZZ
@given(recipe=_mbr_recipes())
def test_fuzz_mbr(
    disk_file: Path,
    recipe: tuple[
        list[tuple[int, int, int]], list[tuple[int, tuple[int, int, int] | None, int | None]], int | None
    ],
) -> None:
    RUNS["mbr"] += 1
    slots, ebrs, flag = recipe
    data = mbr_bytes(slots, ebrs, sectors=SECTORS)
    if flag is not None:
        data[0x1BE] = flag
    table = _read(disk_file, data)
    RUNS["mbr (a table)" if table else "mbr (an ImageError)"] += 1


@settings(FUZZ, max_examples=examples(300))
@given(head=st.binary(min_size=0, max_size=2 * SECTOR), size=st.integers(0, 8 * SECTOR))
def test_fuzz_raw_bytes_as_disk(disk_file: Path, head: bytes, size: int) -> None:
    """Random bytes (with the MBR signature or a GPT header, often) as a disk of any size."""
    RUNS["raw_disk"] += 1
    data = bytearray(max(size, len(head)))
    data[: len(head)] = head
    if len(data) >= 512 and head[:1] != b"\0":
        data[510:512] = b"\x55\xaa"
    if len(data) >= 1024 and head[1:2] == b"G":
        data[512:520] = b"EFI PART"
    _read(disk_file, data)


def test_gpt_memory_is_bounded(disk_file: Path) -> None:
    """The largest entry array accepted is read; nothing is sized by a hostile field beyond it."""
    RUNS["gpt_memory"] += 1
    data = gpt_bytes([(100, 199)] * 2, sectors=4096, count=4096, entry_size=128)
    with measured() as usage:
        assert _read(disk_file, data) is None  # the two entries overlap
    assert usage.peak < 8 * MIB


# ---------------------------------------------------------------------- VHD footer
def _footer(fields: bytes) -> bytes:
    footer = bytearray(fields.ljust(VHD_FOOTER_SIZE, b"\0")[:VHD_FOOTER_SIZE])
    footer[:8] = VHD_COOKIE
    footer[64:68] = b"\0\0\0\0"
    struct.pack_into(">I", footer, 64, ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


@settings(FUZZ, max_examples=examples(1000))
@given(st.one_of(st.binary(max_size=600), st.binary(min_size=0, max_size=VHD_FOOTER_SIZE).map(_footer)))
def test_fuzz_vhd_footer(data: bytes) -> None:
    RUNS["vhd_footer"] += 1
    footer = VhdFooter.parse(data)
    if footer is not None:
        assert footer.geometry_size >= 0 and footer.current_size >= 0
        assert isinstance(footer.uses_geometry_size, bool)
    assert VhdFooter.parse(data[: VHD_FOOTER_SIZE - 1]) is None


# ---------------------------------------------------------------------- fstab
_field = st.one_of(
    st.sampled_from(
        ["UUID=x", "LABEL=a b", "/dev/sda1", "/", "/boot", "none", "ext4", "defaults", "0", "1", "2"]
    ),
    st.text(max_size=12),
    st.sampled_from(
        ["\\040", "\\000", "\\777", "\\", "#", "1" * 5000, "٣", "1_0", "-1", "+1", "\x00", "\x0c"]
    ),
)


@settings(FUZZ, max_examples=examples(1000))
@given(st.lists(st.lists(_field, max_size=8).map(" ".join), max_size=6).map("\n".join))
def test_fuzz_fstab(text: str) -> None:
    RUNS["fstab"] += 1
    try:
        entries = parse_fstab(text, path=Path("/etc/fstab"))
    except LiveOSError as error:
        assert isinstance(error, ImageError), error
        assert "/etc/fstab" in str(error) and len(str(error)) < 1000
        RUNS["fstab (an ImageError)"] += 1
        return
    RUNS["fstab (entries)"] += 1
    for entry in entries:
        assert 0 <= entry.freq < 10**9 and 0 <= entry.passno < 10**9
        assert "\0" not in entry.spec + str(entry.file)
        _ = (entry.kind, entry.value, entry.is_disk, entry.optional, entry.subvol)
        if entry.file.is_absolute() and "#" not in entry.spec and entry.spec.strip() == entry.spec:
            again = FstabEntry.parse(entry.line())
            assert again is not None and again.file == entry.file


def test_fstab_limits() -> None:
    RUNS["fstab_limits"] += 1
    for text in ("x" * MIB, "UUID=a / ext4 d 0 0\n" * (MIB // 20), "a / e d 0 " + "9" * MIB):
        started = time.process_time()
        with contextlib.suppress(ImageError):
            parse_fstab(text)
        assert time.process_time() - started < 2.0
    assert parse_fstab("UUID=a /srv/x\\040y ext4 d 1 2\n")[0].file == PurePosixPath("/srv/x y")
