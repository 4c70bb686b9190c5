"""grub.cfg, BLS entries and grubenv as lossless, editable models.

:mod:`.lexer` (GRUB's shell grammar) -> :mod:`.parser` (commands, blocks, menu entries) ->
:mod:`.splice` (exact byte edits, kernel-argument edits) -> :mod:`.config` (:class:`GrubConfig`)
and :mod:`.bls` (:class:`BlsEntry`); :mod:`.env` reads grubenv; :mod:`.kernelargs` is a
command line as a value.
"""

from liveos.grub.bls import BlsEntry, boot_order, inline_bls, render_menu
from liveos.grub.config import GrubConfig
from liveos.grub.env import GrubEnv, parse_env_vars
from liveos.grub.kernelargs import ArgSyntax, KernelArg, KernelArgs
from liveos.grub.lexer import Token, TokenKind, quote, tokenize
from liveos.grub.parser import Command, MenuEntry
from liveos.grub.splice import Splice

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
    "parse_env_vars",
    "quote",
    "render_menu",
    "tokenize",
]
