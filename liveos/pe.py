"""PE/COFF (UEFI binaries) and ELF headers, read from untrusted bytes with bounds checks.

The EFI architecture of an image comes from its own shim/grub (the machine field of the PE
header), never from the host; a grub's built-in modules live in its ``mods`` PE section.
"""

from __future__ import annotations

import struct
from pathlib import Path

from liveos.settings import Arch

#: PE/COFF machine types of UEFI binaries.
PE_MACHINES = {0x8664: Arch.X64, 0xAA64: Arch.AA64}
#: ELF e_machine values.
ELF_MACHINES = {0x3E: Arch.X64, 0xB7: Arch.AA64}
_HEAD = 4096


def _pe_header(data: bytes) -> int | None:
    """Offset of the ``PE\\0\\0`` signature, or None if ``data`` does not start a PE file."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    offset: int = struct.unpack_from("<I", data, 0x3C)[0]
    if offset + 24 > len(data) or data[offset : offset + 4] != b"PE\0\0":
        return None
    return offset


def pe_machine_arch(head: bytes) -> Arch | None:
    """The EFI architecture named by a PE header (the first KiBs of the file), if one we know."""
    offset = _pe_header(head)
    if offset is None:
        return None
    (machine,) = struct.unpack_from("<H", head, offset + 4)
    return PE_MACHINES.get(machine)


def pe_arch(path: Path) -> Arch | None:
    """EFI architecture of the PE/COFF binary at ``path`` (None: not one we know, or unreadable)."""
    try:
        with path.open("rb") as f:
            return pe_machine_arch(f.read(_HEAD))
    except OSError:
        return None


def pe_section(data: bytes, wanted: bytes) -> bytes | None:
    """The raw bytes of the section named ``wanted`` (e.g. ``b"mods"``), None if absent."""
    offset = _pe_header(data)
    if offset is None:
        return None
    count = struct.unpack_from("<H", data, offset + 6)[0]
    optional = struct.unpack_from("<H", data, offset + 20)[0]
    table = offset + 24 + optional
    for index in range(count):
        entry = table + 40 * index
        if entry + 40 > len(data):
            return None
        name, _vsize, _vaddr, raw_size, raw_ptr = struct.unpack_from("<8sIIII", data, entry)
        if name.rstrip(b"\0") == wanted:
            return data[raw_ptr : raw_ptr + raw_size]
    return None


def elf_arch(path: Path) -> Arch | None:
    """Architecture of an ELF binary (None: not ELF, not known, unreadable)."""
    try:
        with path.open("rb") as f:
            head = f.read(20)
    except OSError:
        return None
    if head[:4] != b"\x7fELF" or len(head) < 20:
        return None
    endian = "<" if head[5] == 1 else ">"
    (machine,) = struct.unpack_from(endian + "H", head, 18)
    return ELF_MACHINES.get(machine)
