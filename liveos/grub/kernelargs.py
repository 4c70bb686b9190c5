"""A kernel command line as a value: parse/render symmetry, order kept, edits that never duplicate.

Arguments come from two syntaxes (:class:`ArgSyntax`): grub words (``linux`` lines, BLS
``options``; quotes removed, ``$var`` kept verbatim as an opaque argument) and the kernel's own
(``/proc/cmdline``, grubenv ``kernelopts``; whitespace split, ``"`` groups). Every edit returns a
new :class:`KernelArgs`; arguments that were not touched keep their original spelling (``source``)
and their ``origin`` index, which is how :mod:`liveos.grub.config` splices only changed bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from liveos.errors import ImageError, UsageError
from liveos.grub.lexer import Token, TokenKind, quote, tokenize

#: Written by grub2-mkconfig/BLS setups; new arguments go before it so the OS defaults stay last.
KERNELOPTS_SOURCES = ("$kernelopts", "${kernelopts}")


class ArgSyntax(enum.StrEnum):
    GRUB = "grub"  #: grub word syntax (quotes, escapes, $var)
    KERNEL = "kernel"  #: the kernel's: blanks split, double quotes group, nothing else special


@dataclass(frozen=True)
class KernelArg:
    """One argument: ``text`` as the kernel sees it, or, when ``expands``, the raw grub source."""

    text: str
    expands: bool = False
    source: str | None = field(default=None, compare=False)  #: original spelling, kept on render
    origin: int | None = field(default=None, compare=False)  #: index in the parsed line, if parsed

    @classmethod
    def of(cls, name: str, value: str | None = None) -> KernelArg:
        """``name`` (a flag) or ``name=value``."""
        if not name or "=" in name or any(c.isspace() for c in name):
            raise UsageError(f"invalid kernel argument name {name!r}")
        return cls(name if value is None else f"{name}={value}")

    @classmethod
    def literal(cls, text: str) -> KernelArg:
        """An argument given by a caller: taken verbatim as ONE argument (spaces, ``$`` and all)."""
        if not text or any(ord(c) < 32 for c in text):
            raise UsageError(
                f"invalid kernel argument {text!r}",
                hint="arguments must be non-empty and free of control characters (newline, tab)",
            )
        return cls(text)

    @classmethod
    def from_token(cls, token: Token, origin: int | None = None) -> KernelArg:
        literal = token.literal
        if literal is None:
            return cls(token.source, expands=True, source=token.source, origin=origin)
        return cls(literal, source=token.source, origin=origin)

    @property
    def name(self) -> str | None:
        """Text before ``=`` (or the whole flag); None for an opaque expansion like ``$kernelopts``."""
        text = self.text
        if self.expands:
            cut = text.find("$")
            eq = text.find("=", 0, cut)
            return text[:eq] if eq > 0 else None
        return text.split("=", 1)[0]

    @property
    def value(self) -> str | None:
        """Text after the first ``=``; None for a flag or an expanding argument."""
        if self.expands or "=" not in self.text:
            return None
        return self.text.split("=", 1)[1]

    @property
    def is_kernelopts(self) -> bool:
        return self.expands and self.text in KERNELOPTS_SOURCES

    def render(self, syntax: ArgSyntax = ArgSyntax.GRUB) -> str:
        if self.expands:
            return self.text
        if syntax is ArgSyntax.GRUB:
            return self.source if self.source is not None else quote(self.text)
        if not any(c.isspace() for c in self.text):
            return self.text
        name, eq, value = self.text.partition("=")
        return f'{name}="{value}"' if eq else f'"{self.text}"'

    def __str__(self) -> str:
        return self.render()


def _as_arg(arg: str | KernelArg) -> KernelArg:
    return arg if isinstance(arg, KernelArg) else KernelArg.literal(arg)


@dataclass(frozen=True)
class KernelArgs:
    """An ordered kernel command line. Edits are idempotent: applying one twice equals once."""

    args: tuple[KernelArg, ...] = ()

    @classmethod
    def parse(cls, text: str, syntax: ArgSyntax = ArgSyntax.GRUB, *, path: str | None = None) -> KernelArgs:
        if syntax is ArgSyntax.KERNEL:
            return cls(tuple(KernelArg(word, origin=i) for i, word in enumerate(_split_kernel(text))))
        return cls.from_tokens(tokenize(text, path), path=path)

    @classmethod
    def from_tokens(cls, tokens: Iterable[Token], *, path: str | None = None) -> KernelArgs:
        args = []
        for i, token in enumerate(tokens):
            if token.kind is not TokenKind.WORD:
                raise ImageError(f"unexpected {token.source!r} in a kernel command line", path=path)
            args.append(KernelArg.from_token(token, origin=i))
        return cls(tuple(args))

    @classmethod
    def of(cls, args: Iterable[str | KernelArg]) -> KernelArgs:
        return cls(tuple(_as_arg(a) for a in args))

    def render(self, syntax: ArgSyntax = ArgSyntax.GRUB) -> str:
        return " ".join(arg.render(syntax) for arg in self.args)

    def __str__(self) -> str:
        return self.render()

    def __iter__(self) -> Iterator[KernelArg]:
        return iter(self.args)

    def __len__(self) -> int:
        return len(self.args)

    def __contains__(self, name: object) -> bool:
        return any(arg.name == name for arg in self.args)

    def values(self, name: str) -> list[str | None]:
        """Every value of ``name`` in order (None for a bare flag or an expanding value)."""
        return [arg.value for arg in self.args if arg.name == name]

    def get(self, name: str) -> str | None:
        """The value the kernel/dracut honours: the last one (None if absent or a flag)."""
        values = self.values(name)
        return values[-1] if values else None

    def texts(self) -> list[str]:
        return [arg.text for arg in self.args]

    def _insert_index(self) -> int:
        """New arguments go before ``$kernelopts`` (so the OS defaults stay last), else at the end."""
        for i, arg in enumerate(self.args):
            if arg.is_kernelopts:
                return i
        return len(self.args)

    def append(self, *args: str | KernelArg) -> KernelArgs:
        """Add arguments that are not already present verbatim (before ``$kernelopts``)."""
        out = list(self.args)
        for arg in map(_as_arg, args):
            if arg not in out:
                index = KernelArgs(tuple(out))._insert_index()
                out.insert(index, arg)
        return KernelArgs(tuple(out))

    def remove(self, *names: str) -> KernelArgs:
        """Drop every argument whose name is one of ``names``."""
        return KernelArgs(tuple(arg for arg in self.args if arg.name not in names))

    def set(self, name: str, value: str | None = None) -> KernelArgs:
        """Exactly one ``name[=value]``: the first occurrence is replaced in place, the others removed."""
        return self.substitute([name], KernelArg.of(name, value), where="first")

    def substitute(self, names: Iterable[str], new: str | KernelArg, *, where: str = "last") -> KernelArgs:
        """Remove all ``names`` and put ``new`` where the ``first``/``last`` of them was (or append).

        An argument equal to ``new`` keeps its original spelling, so re-applying changes nothing.
        """
        new_arg = _as_arg(new)
        names = set(names)
        hits = [i for i, arg in enumerate(self.args) if arg.name in names or arg == new_arg]
        if not hits:
            return self.append(new_arg)
        keep = hits[0] if where == "first" else hits[-1]
        out = []
        for i, arg in enumerate(self.args):
            if i == keep:
                out.append(arg if arg == new_arg else new_arg)
            elif i not in hits:
                out.append(arg)
        return KernelArgs(tuple(out))


def _split_kernel(text: str) -> list[str]:
    """Split like the kernel's ``next_arg``: blanks separate, ``"`` toggles quoting and is dropped."""
    words: list[str] = []
    current: list[str] = []
    in_word = in_quotes = False
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
            in_word = True
        elif char.isspace() and not in_quotes:
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        else:
            current.append(char)
            in_word = True
    if in_word:
        words.append("".join(current))
    return words
