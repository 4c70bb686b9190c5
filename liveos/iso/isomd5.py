"""An MD5 implanted in the ISO, in isomd5sum's format, so the medium can check itself.

``implantisomd5`` (isomd5sum, what lorax and livemedia-creator run after ``isohybrid``) writes
into the 512-byte application-use area of the primary volume descriptor (byte 883 of sector 16)::

    ISO MD5SUM = <32 hex>;SKIPSECTORS = 15;RHLISOSTATUS=0;FRAGMENT SUMS = <60 hex>;
    FRAGMENT COUNT = 20;THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!

padded with spaces. ``checkisomd5`` -- and dracut's ``rd.live.check``, which runs it on the boot
device -- recomputes it. What the sum covers (isomd5sum 1.2, ``libcheckisomd5.c``):

* the bytes ``[0, volume size - SKIPSECTORS * 2048)``, the volume size being the PVD's volume
  space size, not the file's: the system area (a hybrid ISO's MBR and primary GPT) is covered,
  the backup GPT after the volume is not, nor are the last 15 sectors of the volume;
* with the application-use area read as 512 spaces (the sum cannot cover itself);
* fragment sums: the region is cut into ``FRAGMENT COUNT + 1`` fragments; reading in 32 KiB
  chunks, after the first chunk that *starts* in fragment ``f`` (``f >= 1``) the MD5 state so far
  is finalised and the first hex digit of each of its first three bytes (``format(b, "x")[0]``) is
  fragment ``f``'s 3 characters, at ``(f - 1) * 3`` in the 60. They let a checker stop early.

``implantisomd5`` appends fragment sums in order, so on an image under ~700 KiB (fragments
shorter than a chunk, some skipped) its output fails its own checker. Here each sum is stored at
its fragment's position and fragments no chunk starts in are ``0``: the checker never looks at
them, and on larger images the text is byte for byte what ``implantisomd5`` writes.

Everything streams in one linear pass with bounded memory (one read buffer and an MD5 state).
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from liveos.errors import ImageError

SECTOR = 2048
PVD_OFFSET = 16 * SECTOR
#: ECMA-119 8.4.32: where the application-use field lies in a volume descriptor, and its size.
APPDATA_OFFSET = 883
APPDATA_SIZE = 512
SKIP_SECTORS = 15
FRAGMENT_COUNT = 20
FRAGMENT_SUM_SIZE = 60
#: isomd5sum's read size: fragment sums are taken at its boundaries, so the result depends on it.
_CHUNK = 16 * SECTOR
_READ = 32 * _CHUNK
_DIGEST = 16  #: bytes of an MD5: a fragment sum has at most this many digits that mean anything
_TRAILER = "THIS IS NOT THE SAME AS RUNNING MD5SUM ON THIS ISO!!"
_HEX = re.compile(r"[0-9a-f]+")


@dataclass(frozen=True)
class ImplantedMd5:
    """The sums in an ISO's application-use area (``render`` and ``parse`` are inverses)."""

    md5: str  #: 32 lower-case hex digits
    fragment_sums: str  #: FRAGMENT_SUM_SIZE hex digits ("" when the area has none)
    skip_sectors: int = SKIP_SECTORS
    fragment_count: int = FRAGMENT_COUNT
    supported: bool = False  #: RHLISOSTATUS: "a supported Red Hat ISO" (implantisomd5 --supported-iso)

    def render(self) -> bytes:
        """The 512 bytes of the application-use area, as implantisomd5 writes them."""
        text = (
            f"ISO MD5SUM = {self.md5};SKIPSECTORS = {self.skip_sectors};"
            f"RHLISOSTATUS={int(self.supported)};FRAGMENT SUMS = {self.fragment_sums};"
            f"FRAGMENT COUNT = {self.fragment_count};{_TRAILER}"
        )
        return text.encode("ascii").ljust(APPDATA_SIZE, b" ")

    @classmethod
    def parse(cls, appdata: bytes) -> ImplantedMd5 | None:
        """Read the area; None when it holds no implanted MD5 (blank, or another program's data).

        Fields are ``;``-separated in any order (as checkisomd5 reads them); an ``ISO MD5SUM``
        without ``SKIPSECTORS``, or a field with a malformed value, is an :class:`ImageError`.
        """
        text = appdata[:APPDATA_SIZE].decode("ascii", "replace")
        if "ISO MD5SUM = " not in text:
            return None
        fields: dict[str, str] = {}
        for part in text.split(";"):
            for key in (
                "ISO MD5SUM = ",
                "SKIPSECTORS = ",
                "RHLISOSTATUS=",
                "FRAGMENT SUMS = ",
                "FRAGMENT COUNT = ",
            ):
                if part.startswith(key):
                    fields[key] = part[len(key) :]
        md5 = fields.get("ISO MD5SUM = ", "")
        if len(md5) != 32 or not _HEX.fullmatch(md5):
            raise ImageError(f"the implanted MD5 is malformed: {md5[:40]!r}")
        skip = _number(fields, "SKIPSECTORS = ", None)
        count = _number(fields, "FRAGMENT COUNT = ", FRAGMENT_COUNT)
        sums = fields.get("FRAGMENT SUMS = ", "")
        if sums and (len(sums) != FRAGMENT_SUM_SIZE or not _HEX.fullmatch(sums)):
            raise ImageError(f"the implanted fragment sums are malformed: {sums[:70]!r}")
        if count > FRAGMENT_SUM_SIZE or (count and FRAGMENT_SUM_SIZE % count):
            raise ImageError(f"the implanted fragment count {count} does not divide {FRAGMENT_SUM_SIZE}")
        supported = _number(fields, "RHLISOSTATUS=", 0) == 1
        return cls(md5, sums, skip, count, supported)


def _number(fields: dict[str, str], key: str, default: int | None) -> int:
    value = fields.get(key)
    if value is None:
        if default is None:
            raise ImageError(f"the implanted MD5 has no {key.strip(' =')} field")
        return default
    if not value.isdigit() or len(value) > 9:
        raise ImageError(f"the implanted {key.strip(' =')} is not a number: {value[:20]!r}")
    return int(value)


def volume_size(fp: BinaryIO) -> int:
    """Bytes of the ISO 9660 volume in ``fp``: the primary volume descriptor's space size."""
    pvd = _read_at(fp, PVD_OFFSET, SECTOR)
    if len(pvd) < SECTOR or pvd[:7] != b"\x01CD001\x01":
        raise ImageError("no ISO 9660 primary volume descriptor in sector 16")
    little: int = struct.unpack_from("<I", pvd, 80)[0]
    big: int = struct.unpack_from(">I", pvd, 84)[0]
    if little != big:
        raise ImageError(f"the volume space size is inconsistent ({little} / {big} sectors)")
    return little * SECTOR


def read_implanted(fp: BinaryIO) -> ImplantedMd5 | None:
    """The MD5 implanted in the ISO in ``fp``, or None."""
    volume_size(fp)
    return ImplantedMd5.parse(_read_at(fp, PVD_OFFSET + APPDATA_OFFSET, APPDATA_SIZE))


def compute(
    fp: BinaryIO, *, skip_sectors: int = SKIP_SECTORS, fragment_count: int = FRAGMENT_COUNT
) -> ImplantedMd5:
    """The sums of the ISO in ``fp`` as it is now (its application-use area read as blank)."""
    total = volume_size(fp) - skip_sectors * SECTOR
    if total <= 0:
        raise ImageError(f"the ISO volume is not larger than the {skip_sectors} sectors the MD5 skips")
    width = FRAGMENT_SUM_SIZE // fragment_count if fragment_count else 0
    snapshots = _snapshots(total, fragment_count)
    sums = ["0" * width] * fragment_count
    md5 = hashlib.md5(usedforsecurity=False)
    blank = range(PVD_OFFSET + APPDATA_OFFSET, PVD_OFFSET + APPDATA_OFFSET + APPDATA_SIZE)
    pending = iter(sorted(snapshots))
    point = next(pending, None)
    fp.seek(0)
    pos = 0
    for data in _blocks(fp, total):
        if pos < blank.stop and pos + len(data) > blank.start:
            start, stop = max(blank.start - pos, 0), min(blank.stop - pos, len(data))
            data = data[:start] + b" " * (stop - start) + data[stop:]
        view, done = memoryview(data), 0
        while point is not None and point <= pos + len(view):
            md5.update(view[done : point - pos])
            done = point - pos
            digest = md5.copy().digest()
            for fragment in snapshots[point]:
                sums[fragment - 1] = "".join(format(b, "x")[0] for b in digest[:width]).ljust(width, "0")
            point = next(pending, None)
        md5.update(view[done:])
        pos += len(view)
    return ImplantedMd5(md5.hexdigest(), "".join(sums), skip_sectors, fragment_count)


def _snapshots(total: int, count: int) -> dict[int, list[int]]:
    """Byte position -> the fragments whose sum is the MD5 state there (see the module docs)."""
    points: dict[int, list[int]] = {}
    if not count:
        return points
    size = total // (count + 1)
    for fragment in range(1, count + 1):
        start = -(-fragment * size // _CHUNK) * _CHUNK  # the first chunk starting in the fragment
        if start < total:
            points.setdefault(min(start + _CHUNK, total), []).append(fragment)
    return points


def _blocks(fp: BinaryIO, total: int) -> Iterator[bytes]:
    """``total`` bytes of ``fp`` from where it is, in reads of at most ``_READ``."""
    left = total
    while left:
        data = fp.read(min(_READ, left))
        if not data:
            raise ImageError(f"the ISO ends {left} bytes before the end of the region its MD5 covers")
        left -= len(data)
        yield data


def implant(fp: BinaryIO) -> ImplantedMd5:
    """Compute the sums of the ISO in ``fp`` (opened read-write) and write them into its PVD.

    Do it last: every later change to the covered bytes (a partition table in the system area)
    breaks the sum. An earlier implanted sum is replaced; other data in the area is an error.
    """
    area = _read_at(fp, PVD_OFFSET + APPDATA_OFFSET, APPDATA_SIZE)
    if area.strip(b" \0") and read_implanted(fp) is None:
        raise ImageError("the ISO's application-use area holds other data; not implanting an MD5")
    implanted = compute(fp)
    fp.seek(PVD_OFFSET + APPDATA_OFFSET)
    fp.write(implanted.render())
    fp.flush()
    return implanted


def check(fp: BinaryIO) -> ImplantedMd5 | None:
    """Recompute the implanted sums of the ISO in ``fp`` as checkisomd5 does: None when there are
    none, an :class:`ImageError` naming the first bad fragment sum when they differ."""
    implanted = read_implanted(fp)
    if implanted is None:
        return None
    actual = compute(fp, skip_sectors=implanted.skip_sectors, fragment_count=implanted.fragment_count)
    bad = _first_bad(implanted, actual, volume_size(fp) - implanted.skip_sectors * SECTOR)
    if actual.md5 != implanted.md5:
        where = f"; fragment sum {bad[0]} differs: damage before byte {bad[1]}" if bad else ""
        raise ImageError(f"the ISO's MD5 is {actual.md5}, the implanted one {implanted.md5}{where}")
    if bad is not None:
        raise ImageError(
            f"the MD5 matches but implanted fragment sum {bad[0]} does not: the sums are damaged"
        )
    return implanted


def _first_bad(implanted: ImplantedMd5, actual: ImplantedMd5, total: int) -> tuple[int, int] | None:
    """(fragment, byte it was taken at) of the first fragment sum checkisomd5 compares and finds
    different: at each snapshot it checks the highest fragment, and at most 16 digits of it."""
    count = implanted.fragment_count
    if not count or not implanted.fragment_sums:
        return None
    width = FRAGMENT_SUM_SIZE // count
    for point, fragments in sorted(_snapshots(total, count).items()):
        f = max(fragments)
        span = slice((f - 1) * width, (f - 1) * width + min(width, _DIGEST))
        if implanted.fragment_sums[span] != actual.fragment_sums[span]:
            return f, point
    return None


def _read_at(fp: BinaryIO, offset: int, size: int) -> bytes:
    fp.seek(offset)
    return fp.read(size)
