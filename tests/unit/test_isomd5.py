"""The implanted MD5 (liveos.iso.isomd5), checked against isomd5sum's own tools.

``implantisomd5`` is the reference for the format (byte for byte on images it handles) and
``checkisomd5`` -- what dracut's ``rd.live.check`` runs at boot -- the independent judge: it
accepts what liveos writes, hybrid or not, and rejects a damaged copy, as ``liveos verify`` does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from liveos.errors import ImageError
from liveos.image.isofs import IsoReader
from liveos.iso import IsoWriter
from liveos.iso.isomd5 import (
    APPDATA_OFFSET,
    APPDATA_SIZE,
    PVD_OFFSET,
    SECTOR,
    ImplantedMd5,
    check,
    compute,
    implant,
    read_implanted,
    volume_size,
)
from liveos.verification import CheckKind, verify

AREA = PVD_OFFSET + APPDATA_OFFSET
#: Big enough that every fragment is longer than isomd5sum's 32 KiB read (its tools agree there).
MID = 2_000_000
#: So small that fragments are shorter than a read (implantisomd5 writes sums its checker refuses).
TINY = 1000


def write_iso(tmp: Path, name: str, *, payload: int, hybrid: bool, implant_md5: bool = True) -> Path:
    writer = IsoWriter("MD5TEST")
    writer.add_bytes("/liveos/state.txt", b"hello\n")
    writer.add_bytes("/data.bin", os.urandom(payload))
    writer.add_bytes("/boot/efiboot.img", os.urandom(64 * 1024))  # structure only: never booted
    writer.set_efi_boot("/boot/efiboot.img")
    out = tmp / name
    written = writer.write(out, hybrid=hybrid, implant_md5=implant_md5)
    assert written.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()  # hashed after the implant
    return out


def checkisomd5(iso: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["checkisomd5", "--verbose", str(iso)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
    )


def accepted(iso: Path) -> bool:
    result = checkisomd5(iso)
    assert result.returncode in (0, 1), result
    return result.returncode == 0


def flip(iso: Path, offset: int) -> None:
    with iso.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def volume(iso: Path) -> int:
    with iso.open("rb") as f:
        return volume_size(f)


def ours(iso: Path) -> ImplantedMd5 | None:
    with iso.open("rb") as f:
        return check(f)


@pytest.fixture(autouse=True)
def _tools() -> None:
    if shutil.which("checkisomd5") is None or shutil.which("implantisomd5") is None:
        pytest.fail("isomd5sum is not installed (tools/setup-host.sh installs it)")


# ------------------------------------------------------------------------------ the format


def test_render_and_parse_are_inverses() -> None:
    sums = ImplantedMd5("0123456789abcdef" * 2, "a1b" * 20)
    area = sums.render()
    assert len(area) == APPDATA_SIZE and area.endswith(b" ")
    assert area.startswith(b"ISO MD5SUM = 0123456789abcdef0123456789abcdef;SKIPSECTORS = 15;")
    assert b";RHLISOSTATUS=0;FRAGMENT SUMS = " + b"a1b" * 20 + b";FRAGMENT COUNT = 20;THIS IS" in area
    assert ImplantedMd5.parse(area) == sums
    other = ImplantedMd5("f" * 32, "", skip_sectors=0, fragment_count=0, supported=True)
    assert ImplantedMd5.parse(other.render()) == other


def test_parse_finds_nothing_in_a_blank_or_foreign_area() -> None:
    assert ImplantedMd5.parse(b" " * APPDATA_SIZE) is None
    assert ImplantedMd5.parse(bytes(APPDATA_SIZE)) is None
    assert ImplantedMd5.parse(b"CD-XA001".ljust(APPDATA_SIZE)) is None


@pytest.mark.parametrize(
    "text, error",
    [
        ("ISO MD5SUM = 0123;SKIPSECTORS = 15;", "malformed"),
        ("ISO MD5SUM = " + "g" * 32 + ";SKIPSECTORS = 15;", "malformed"),
        ("ISO MD5SUM = " + "a" * 32 + ";RHLISOSTATUS=1;", "no SKIPSECTORS"),
        ("ISO MD5SUM = " + "a" * 32 + ";SKIPSECTORS = -3;", "not a number"),
        ("ISO MD5SUM = " + "a" * 32 + ";SKIPSECTORS = 15;FRAGMENT SUMS = abc;", "fragment sums"),
        ("ISO MD5SUM = " + "a" * 32 + ";SKIPSECTORS = 15;FRAGMENT COUNT = 7;", "does not divide"),
    ],
)
def test_a_malformed_area_is_an_image_error(text: str, error: str) -> None:
    with pytest.raises(ImageError, match=error):
        ImplantedMd5.parse(text.encode().ljust(APPDATA_SIZE))


# ------------------------------------------------------------------------------ against isomd5sum


@pytest.mark.parametrize("hybrid", [False, True], ids=["cd-only", "hybrid"])
def test_the_sums_are_what_implantisomd5_writes(tmp_path: Path, hybrid: bool) -> None:
    plain = write_iso(tmp_path, "plain.iso", payload=MID, hybrid=hybrid, implant_md5=False)
    theirs = tmp_path / "theirs.iso"
    shutil.copyfile(plain, theirs)
    subprocess.run(["implantisomd5", str(theirs)], check=True, capture_output=True)
    with plain.open("r+b") as f:
        implanted = implant(f)
    assert plain.read_bytes() == theirs.read_bytes()
    assert implanted.md5 in checkisomd5(theirs).stdout


@pytest.mark.parametrize("payload", [TINY, MID], ids=["tiny", "mid"])
@pytest.mark.parametrize("hybrid", [False, True], ids=["cd-only", "hybrid"])
def test_checkisomd5_accepts_liveos_isos_and_rejects_a_flipped_byte(
    tmp_path: Path, hybrid: bool, payload: int
) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=payload, hybrid=hybrid)
    implanted = ours(iso)
    assert implanted is not None and accepted(iso)
    report = verify(iso)
    assert report.check(CheckKind.MD5).ok and implanted.md5 in report.check(CheckKind.MD5).detail
    with IsoReader(iso) as reader:
        offset, size = reader.extent("/boot/efiboot.img")  # a file's data, before the skipped end
    flip(iso, offset + size // 2)
    assert not accepted(iso)
    with pytest.raises(ImageError, match="implanted one"):
        ours(iso)
    md5 = verify(iso).check(CheckKind.MD5)
    assert not md5.ok and implanted.md5 in md5.detail


def test_the_first_bad_fragment_bounds_the_damage(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=MID, hybrid=True)
    damage = volume(iso) // 2
    flip(iso, damage)
    with pytest.raises(ImageError, match=r"fragment sum \d+ differs: damage before byte \d+$") as exc:
        ours(iso)
    before = int(str(exc.value).rsplit(" ", 1)[1])
    assert damage < before < damage + 2 * volume(iso) // 21
    assert not accepted(iso)


def test_the_hybrid_system_area_is_covered_and_the_backup_gpt_is_not(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=MID, hybrid=True)
    assert iso.stat().st_size > volume(iso)  # the backup GPT lies after the volume
    outside = tmp_path / "outside.iso"
    shutil.copyfile(iso, outside)
    flip(outside, outside.stat().st_size - 512 + 8)  # the backup GPT header
    flip(outside, volume(outside) - 3 * SECTOR)  # in the 15 skipped sectors
    assert accepted(outside) and ours(outside) is not None
    flip(iso, 512 + 40)  # the primary GPT header, in the system area
    assert not accepted(iso)
    with pytest.raises(ImageError):
        ours(iso)


def test_a_damaged_implanted_sum_is_rejected(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=TINY, hybrid=False)
    flip(iso, AREA + len("ISO MD5SUM = "))  # the first hex digit: no longer a valid sum
    assert not accepted(iso)
    with pytest.raises(ImageError):
        ours(iso)


def test_damaged_fragment_sums_are_rejected_though_the_md5_matches(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=MID, hybrid=True)  # every fragment sum is checked
    with iso.open("rb") as f:
        implanted = read_implanted(f)
    assert implanted is not None
    first = AREA + implanted.render().index(b"FRAGMENT SUMS = ") + len("FRAGMENT SUMS = ")
    with iso.open("r+b") as f:
        f.seek(first)
        f.write(b"1" if implanted.fragment_sums[0] != "1" else b"2")
    assert not accepted(iso)
    with pytest.raises(ImageError, match="the MD5 matches but implanted fragment sum 1 does not"):
        ours(iso)


def test_without_an_implanted_sum_verify_passes_and_checkisomd5_does_not(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "plain.iso", payload=TINY, hybrid=True, implant_md5=False)
    with iso.open("rb") as f:
        assert read_implanted(f) is None and f.seek(AREA) and f.read(APPDATA_SIZE) == b" " * APPDATA_SIZE
    assert ours(iso) is None
    md5 = verify(iso).check(CheckKind.MD5)
    assert md5.ok and "no implanted MD5" in md5.detail
    assert not accepted(iso)


def test_implanting_again_gives_the_same_bytes(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=TINY, hybrid=True)
    before = iso.read_bytes()
    with iso.open("r+b") as f:
        implant(f)
    assert iso.read_bytes() == before


def test_foreign_data_in_the_area_is_not_overwritten(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "plain.iso", payload=TINY, hybrid=False, implant_md5=False)
    with iso.open("r+b") as f:
        f.seek(AREA)
        f.write(b"SOMEONE ELSE'S DATA")
        with pytest.raises(ImageError, match="other data"):
            implant(f)


def test_a_truncated_iso_is_an_image_error(tmp_path: Path) -> None:
    iso = write_iso(tmp_path, "live.iso", payload=MID, hybrid=False)
    with iso.open("r+b") as f:
        f.truncate(volume_size(f) // 2)
        with pytest.raises(ImageError, match=r"ends \d+ bytes before the end"):
            compute(f)
    assert not accepted(iso)
    with open(os.devnull, "rb") as empty, pytest.raises(ImageError, match="no ISO 9660 primary volume"):
        volume_size(empty)
