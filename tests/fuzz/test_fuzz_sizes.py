"""Hostile sizes that once were quadratic, bounded in CPU time and memory (not wall time: the
machine is shared).

Each case is a regression: a shape of input from an image that took seconds to minutes before
its parser was made linear. The unit tests check what these inputs *mean*; this module checks
what they *cost*, with the fuzz suite's budget per input (:func:`tests.fuzz.fuzzkit.bounded`).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from liveos.errors import ImageError
from liveos.grub import BlsEntry, GrubConfig, KernelArgs
from liveos.grub.kernelargs import ArgSyntax
from liveos.grub.lexer import tokenize
from liveos.image.partitions import read_partition_table
from tests.fuzz.fuzzkit import MIB, bounded
from tests.unit.test_image_partitions import SECTOR, gpt_bytes, write_disk


@pytest.mark.parametrize(
    "body",
    ["x" * (1 << 20), "\\$" * (1 << 19), "a\\\nb" * (1 << 18)],
    ids=["plain", "escapes", "continuations"],
)
def test_a_long_quoted_word(body: str) -> None:
    """A 1 MiB double-quoted word made one Part per character and joined them quadratically: 23 s
    (without tracemalloc, which slows these quarter million allocations down several times)."""
    with bounded(256 * MIB, seconds=10.0, what="a 1 MiB quoted word"):
        (word,) = tokenize(f'"{body}"')
    assert word.literal is not None and len(word.literal) <= len(body)


CONFIGS: list[tuple[str, str, Callable[[GrubConfig], object]]] = [
    ("commands on one line", "search -u x;" * 20_000 + "\n", lambda c: c.remove_search()),
    (
        "initrds of one entry",
        "menuentry x {\nlinux /k\n" + "initrd /i\n" * 20_000 + "}\n",
        lambda c: c.kernel_lines(),
    ),
    ("initrd paths", "".join(f"initrd /i{i}\n" for i in range(20_000)), lambda c: c.initrd_paths()),
    ("kernel arguments", "linux /k " + "a " * 4000 + "\n", lambda c: c.set_root_live(label="L").render()),
]


@pytest.mark.parametrize(("text", "action"), [c[1:] for c in CONFIGS], ids=[c[0] for c in CONFIGS])
def test_grub_configs_of_hostile_size(text: str, action: Callable[[GrubConfig], object]) -> None:
    # 20,000 commands: ~0.4 s of CPU, 2-3 s under tracemalloc; quadratic code took minutes.
    with bounded(256 * MIB, seconds=8.0, what="a hostile grub.cfg"):
        action(GrubConfig.parse(text))


def test_too_many_tokens_are_refused_cheaply() -> None:
    with bounded(256 * MIB, what="half a million tokens"), pytest.raises(ImageError, match="liveos refuses"):
        GrubConfig.parse("a;" * (1 << 19), "/boot/grub/grub.cfg")


def test_kernelopts_inlining() -> None:
    kernelopts = KernelArgs.parse(" ".join(f"a{i}" for i in range(4000)), ArgSyntax.KERNEL)
    entry = BlsEntry.parse("linux /k\noptions $kernelopts\n")
    with bounded(what="inlining 4000 kernelopts"):
        entry.inline_kernelopts(kernelopts)


@pytest.mark.parametrize(("field", "value"), [("count", 0xFFFFFFFF), ("entry_size", 0xFFFFFFF8)])
def test_absurd_gpt_headers(tmp_path: Path, field: str, value: int) -> None:
    data = gpt_bytes([(100, 199)], backup=False, count=4, entry_size=128)
    struct.pack_into("<I", data, SECTOR + {"count": 80, "entry_size": 84}[field], value)
    struct.pack_into("<I", data, SECTOR + 16, 0)
    struct.pack_into("<I", data, SECTOR + 16, zlib.crc32(data[SECTOR : SECTOR + 92]))
    disk = write_disk(tmp_path / "gpt", data)
    with (
        bounded(what="an absurd GPT header"),
        pytest.raises(ImageError, match="no readable partition table"),
    ):
        read_partition_table(disk)
