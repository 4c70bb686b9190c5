"""grub.cfg, BLS entries and grubenv as lossless, editable models (see :mod:`liveos.grub.config`)."""

from liveos.grub.bls import (
    BlsEntry,
    GrubEnv,
    boot_order,
    inline_bls,
    load_entries,
    parse_env_vars,
    render_menu,
    rpmvercmp,
)
from liveos.grub.config import Command, GrubConfig, MenuEntry, Splice
from liveos.grub.kernelargs import ArgSyntax, KernelArg, KernelArgs
from liveos.grub.lexer import Token, TokenKind, quote, tokenize

__all__ = [
    "ArgSyntax",
    "BlsEntry",
    "Command",
    "GrubConfig",
    "GrubEnv",
    "KernelArg",
    "KernelArgs",
    "MenuEntry",
    "Splice",
    "Token",
    "TokenKind",
    "boot_order",
    "inline_bls",
    "load_entries",
    "parse_env_vars",
    "quote",
    "render_menu",
    "rpmvercmp",
    "tokenize",
]
