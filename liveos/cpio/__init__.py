"""newc CPIO: the format (:mod:`.format`), a streaming writer (:mod:`.writer`) with in-process
compression (:mod:`.sinks`), and a streaming reader/extractor (:mod:`.reader`)."""

from __future__ import annotations

from liveos.cpio.format import MAX_FILE_SIZE, NEWC_MAGIC, TRAILER, CpioEntry, CpioHeader
from liveos.cpio.reader import CpioMember, ExtractStats, extract, iter_entries, read_entries
from liveos.cpio.writer import CpioStats, write_newc, write_newc_paths

__all__ = [
    "MAX_FILE_SIZE",
    "NEWC_MAGIC",
    "TRAILER",
    "CpioEntry",
    "CpioHeader",
    "CpioMember",
    "CpioStats",
    "ExtractStats",
    "extract",
    "iter_entries",
    "read_entries",
    "write_newc",
    "write_newc_paths",
]
