"""A file of more than 4 GiB on the ISO, in every run: sparse input, sparse ISO, independent readers.

ISO 9660 stores a file's size in 32 bits, so a root image of 4 GiB or more is written as several
extents (interchange level 3, "multi-extent"). The input is a 4 GiB hole with a few markers;
the writer neither reads its holes nor writes them (``_SparseSource``/``_SparseOutput`` in
:mod:`liveos.iso.writer`), so the ISO takes a few MiB of disk. What remains is hashing 4 GiB
(the writer's SHA-256 and implanted MD5) and reading it back: 10-30 s, no root needed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import libarchive

from liveos.image.isofs import IsoReader
from liveos.iso import IsoWriter
from liveos.run import output

#: Where the test plants data in the sparse input: the start, mid-block, across pycdlib's first
#: extent boundary (0xfffff800), across 4 GiB and the last bytes; every other byte is zero.
BIG_SIZE = 4 * 1024**3 + 4096 + 123
BIG_MARKERS = {
    offset: hashlib.sha256(str(offset).encode()).digest() * 3
    for offset in (0, 1024**2 + 7, 0xFFFFF800 - 40, 2**32 - 50)
} | {BIG_SIZE - 5: b"tail!"}


def big_expected(offset: int, size: int) -> bytes:
    """The bytes ``[offset, offset + size)`` of the sparse input: zeros and the markers."""
    chunk = bytearray(size)
    for at, marker in BIG_MARKERS.items():
        lo, hi = max(at, offset), min(at + len(marker), offset + size)
        if lo < hi:
            chunk[lo - offset : hi - offset] = marker[lo - at : hi - at]
    return bytes(chunk)


def test_file_over_4gib_is_multi_extent_and_sparse(tmp_path: Path) -> None:
    big = tmp_path / "big.img"
    with open(big, "wb") as fp:
        fp.truncate(BIG_SIZE)
        for offset, marker in BIG_MARKERS.items():
            fp.seek(offset)
            fp.write(marker)
    writer = IsoWriter("BIG")
    writer.add_file("/liveos/rootfs.img", big)
    writer.add_bytes("/zz-after.txt", b"after the big file\n")
    iso = tmp_path / "big.iso"
    written = writer.write(iso, hybrid=False)
    st = iso.stat()
    assert written.size == st.st_size > BIG_SIZE
    assert st.st_blocks * 512 < 64 * 1024**2, "the ISO should keep the input's holes"
    # xorriso: two sections (ISO 9660 level 3 multi-extent) adding up to the full size
    sections = output(["xorriso", "-indev", iso, "-find", "/liveos/rootfs.img", "-exec", "report_sections"])
    assert sections.count("/liveos/rootfs.img") == 2, sections
    listing = output(["xorriso", "-indev", iso, "-lsl", "/liveos/rootfs.img"])
    assert f" {BIG_SIZE} " in listing, listing
    # libarchive: every byte of the stream in order, and the file stored after it
    found: dict[str, tuple[int, bytes]] = {}
    with libarchive.file_reader(str(iso)) as archive:
        for entry in archive:
            offset, head = 0, b""
            for block in entry.get_blocks(1024**2):
                if entry.pathname == "liveos/rootfs.img":
                    assert block == big_expected(offset, len(block)), f"wrong bytes at {offset}"
                else:
                    head += block
                offset += len(block)
            found[entry.pathname] = (offset, head)
    assert found["liveos/rootfs.img"] == (BIG_SIZE, b"")
    assert found["zz-after.txt"] == (19, b"after the big file\n")
    with IsoReader(iso) as reader:
        assert reader.entry("/liveos/rootfs.img").size == BIG_SIZE
