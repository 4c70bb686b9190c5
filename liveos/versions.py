"""One way to compare versions: rpm's algorithm (kernels, BLS entries, dracut, packages).

rpmvercmp orders ``6.6.10 > 6.6.9``, ``1.0~rc1 < 1.0`` (Debian's tilde agrees) and ``1.0^git1 >
1.0``; that is what grub's blscfg, rpm and dpkg use to pick the newest kernel, so sorting with it
gives the order a user sees in their boot menu. :class:`DracutVersion` adds dracut's numbering.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from liveos.errors import ImageError

_SEGMENT = re.compile(r"[0-9]+|[A-Za-z]+")


def rpmvercmp(a: str, b: str) -> int:
    """rpm's version comparison (``~`` sorts before anything, ``^`` after the base): -1, 0 or 1."""
    if a == b:
        return 0
    i = j = 0
    while True:
        i = _skip_separators(a, i)
        j = _skip_separators(b, j)
        a_end, b_end = i >= len(a), j >= len(b)
        a_tilde, b_tilde = not a_end and a[i] == "~", not b_end and b[j] == "~"
        if a_tilde or b_tilde:
            if not a_tilde:
                return 1
            if not b_tilde:
                return -1
            i, j = i + 1, j + 1
            continue
        a_caret, b_caret = not a_end and a[i] == "^", not b_end and b[j] == "^"
        if a_caret or b_caret:
            if a_end:
                return -1
            if b_end:
                return 1
            if not a_caret:
                return 1
            if not b_caret:
                return -1
            i, j = i + 1, j + 1
            continue
        if a_end or b_end:
            break
        ma = _SEGMENT.match(a, i)
        mb = _SEGMENT.match(b, j)
        assert ma is not None and mb is not None
        sa, sb = ma.group(), mb.group()
        if sa.isdigit() != sb.isdigit():
            return 1 if sa.isdigit() else -1  # numeric segments are newer than alphabetic
        if sa.isdigit():  # compared as numbers, without int(): no digit-count limit, linear time
            na, nb = sa.lstrip("0"), sb.lstrip("0")
            if (len(na), na) != (len(nb), nb):
                return 1 if (len(na), na) > (len(nb), nb) else -1
        elif sa != sb:
            return 1 if sa > sb else -1
        i, j = ma.end(), mb.end()
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def _skip_separators(text: str, index: int) -> int:
    while (
        index < len(text)
        and not (text[index].isascii() and text[index].isalnum())
        and text[index] not in "~^"
    ):
        index += 1
    return index


@functools.total_ordering
class Version:
    """A version string ordered by :func:`rpmvercmp` (usable as a sort key)."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Version) and rpmvercmp(self.text, other.text) == 0

    def __lt__(self, other: Version) -> bool:
        return rpmvercmp(self.text, other.text) < 0

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Version({self.text!r})"

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, order=True)
class DracutVersion:
    """``059-4`` -> major 59, release "4"; ``102-11.azl3`` -> 102, "11.azl3"."""

    major: int
    release: str = ""

    @property
    def azure_linux(self) -> bool:
        """Azure Linux's patched dracut (release ``...azl3`` or CBL-Mariner's ``cm2``)."""
        return "azl" in self.release or "cm" in self.release.split(".")

    def __str__(self) -> str:
        return f"{self.major:03d}" + (f"-{self.release}" if self.release else "")

    @classmethod
    def parse(cls, text: str) -> DracutVersion:
        """Parse a dracut package/program version: ``059-4``, ``1:059-4``, ``102-11.azl3``, ``105``."""
        match = _DRACUT_VERSION.match(text.strip())
        if match is None:
            raise ImageError(
                f"cannot parse the dracut version {text!r}",
                hint="expected something like 059-4, 102-11.azl3 or 105",
            )
        return cls(int(match.group(1)), match.group(2) or "")


_DRACUT_VERSION = re.compile(r"^(?:\d+:)?(?:dracut(?:-ng)?[-_ ]?)?0*(\d+)(?:[-+.~_](.*))?$")
