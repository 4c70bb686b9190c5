"""A kernel command line as a value: parse/render symmetry, order kept, edits that never duplicate.

Arguments come from two syntaxes (:class:`ArgSyntax`): grub words (``linux`` lines, BLS
``options``; quotes removed, ``$var`` kept verbatim as an opaque argument) and the kernel's own
(``/proc/cmdline``, grubenv ``kernelopts``; whitespace split, ``"`` groups). Every edit returns a
new :class:`KernelArgs`; arguments that were not touched keep their original spelling (``source``)
and their ``origin`` index, which is how :mod:`liveos.grub.config` splices only changed bytes.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from liveos.errors import ImageError, UsageError
from liveos.grub.lexer import Token, TokenKind, TooManyTokens, quote, tokenize

#: Most arguments one command line may have: the kernel keeps 2 KiB of its command line on x86
#: and arm64 (COMMAND_LINE_SIZE), 4 KiB on a few others; a longer line is hostile, not a boot.
MAX_KERNEL_ARGS = 4096
#: Written by grub2-mkconfig/BLS setups; new arguments go before it so the OS defaults stay last.
KERNELOPTS_SOURCES = ("$kernelopts", "${kernelopts}")
_SPACE = re.compile(r"\s")


class ArgSyntax(enum.StrEnum):
    """How a command line is quoted: in grub.cfg / BLS, or as the kernel reads it."""

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
        if not name or "=" in name or _SPACE.search(name):
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
        """The argument a grub word stands for (a word with ``$variables`` stays an opaque expansion)."""
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
        return text.partition("=")[0]

    @property
    def value(self) -> str | None:
        """Text after the first ``=``; None for a flag or an expanding argument."""
        if self.expands or "=" not in self.text:
            return None
        return self.text.split("=", 1)[1]

    @property
    def is_kernelopts(self) -> bool:
        """Whether this is the ``$kernelopts`` expansion (the grubenv command line)."""
        return self.expands and self.text in KERNELOPTS_SOURCES

    def render(self, syntax: ArgSyntax = ArgSyntax.GRUB) -> str:
        """The argument as written in ``syntax`` (its original spelling when it was parsed)."""
        if self.expands:
            return self.text
        if syntax is ArgSyntax.GRUB:
            return self.source if self.source is not None else quote(self.text)
        if not self.text:
            return '""'  # an empty argument stays one (the kernel reads "" as an empty word)
        if not _SPACE.search(self.text):
            return self.text
        name, eq, value = self.text.partition("=")
        return f'{name}="{value}"' if eq and not _SPACE.search(name) else f'"{self.text}"'

    def __str__(self) -> str:
        return self.render()


def _check_count(count: int, path: str | None) -> None:
    """Refuse a command line of more than :data:`MAX_KERNEL_ARGS` arguments."""
    if count > MAX_KERNEL_ARGS:
        raise _too_many(path)


def _too_many(path: str | None) -> ImageError:
    return ImageError(
        f"a kernel command line has more than {MAX_KERNEL_ARGS} arguments: the kernel keeps only "
        "its first few KiB",
        path=path,
        hint="fix the kernel command line in the image",
    )


def _as_arg(arg: str | KernelArg) -> KernelArg:
    return arg if isinstance(arg, KernelArg) else KernelArg.literal(arg)


@dataclass(frozen=True)
class KernelArgs:
    """An ordered kernel command line. Edits are idempotent: applying one twice equals once."""

    args: tuple[KernelArg, ...] = ()

    @classmethod
    def parse(cls, text: str, syntax: ArgSyntax = ArgSyntax.GRUB, *, path: str | None = None) -> KernelArgs:
        """The arguments of ``text``; :class:`ImageError` on bad grub syntax or absurdly many of them."""
        if syntax is ArgSyntax.KERNEL:
            words = _split_kernel(text)
            _check_count(len(words), path)
            return cls(tuple(KernelArg(word, origin=i) for i, word in enumerate(words)))
        try:
            tokens = tokenize(text, path, limit=MAX_KERNEL_ARGS)
        except TooManyTokens as exc:
            raise _too_many(path) from exc
        _check_count(len(tokens), path)
        return cls.from_tokens(tokens, path=path)

    @classmethod
    def from_tokens(cls, tokens: Iterable[Token], *, path: str | None = None) -> KernelArgs:
        """The arguments of a command's words (an operator among them is an ImageError)."""
        args = []
        for i, token in enumerate(tokens):
            if token.kind is not TokenKind.WORD:
                raise ImageError(f"unexpected {token.source!r} in a kernel command line", path=path)
            args.append(KernelArg.from_token(token, origin=i))
        return cls(tuple(args))

    @classmethod
    def of(cls, args: Iterable[str | KernelArg]) -> KernelArgs:
        """Arguments from strings (each one argument) or :class:`KernelArg` values."""
        return cls(tuple(_as_arg(a) for a in args))

    def render(self, syntax: ArgSyntax = ArgSyntax.GRUB) -> str:
        """The command line as written in ``syntax``."""
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
        """Every argument's text (unquoted)."""
        return [arg.text for arg in self.args]

    def _insert_index(self) -> int:
        """New arguments go before ``$kernelopts`` (so the OS defaults stay last), else at the end."""
        for i, arg in enumerate(self.args):
            if arg.expands and arg.text in KERNELOPTS_SOURCES:
                return i
        return len(self.args)

    def append(self, *args: str | KernelArg) -> KernelArgs:
        """Add arguments that are not already present verbatim (before ``$kernelopts``)."""
        out = list(self.args)
        present = {(a.text, a.expands) for a in out}  # what equality compares; one pass, no __eq__
        index = self._insert_index()
        for arg in map(_as_arg, args):
            key = (arg.text, arg.expands)
            if key not in present:
                present.add(key)
                out.insert(index, arg)
                if not arg.is_kernelopts:  # a new $kernelopts stays after what follows
                    index += 1
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
        key = (new_arg.text, new_arg.expands)
        hits = [i for i, arg in enumerate(self.args) if arg.name in names or (arg.text, arg.expands) == key]
        if not hits:
            return self.append(new_arg)
        keep = hits[0] if where == "first" else hits[-1]
        dropped = set(hits)
        out = []
        for i, arg in enumerate(self.args):
            if i == keep:
                out.append(arg if arg == new_arg else new_arg)
            elif i not in dropped:
                out.append(arg)
        return KernelArgs(tuple(out))


#: One argument as the kernel's ``next_arg`` reads it: a run of non-blanks in which ``"`` toggles
#: quoting (blanks inside quotes belong to the argument; an unclosed quote runs to the end).
_KERNEL_WORD = re.compile(r'(?:[^\s"]++|"[^"]*+"?)++')


def _split_kernel(text: str) -> list[str]:
    """Split like the kernel's ``next_arg``: blanks separate, ``"`` toggles quoting and is dropped."""
    return [word.replace('"', "") for word in _KERNEL_WORD.findall(text)]
