"""Tokenizer for GRUB's shell-like script language, keeping every token's byte span.

Follows the GRUB manual ("Shell-like scripting") and grub-core/script/yylex.l: words are made of
unquoted text, ``'single'`` (no escapes), ``"double"`` (``\\$ \\" \\\\ \\<newline>`` escapes) and
``$var`` / ``${var}`` expansions; ``#`` starts a comment only at the start of a word;
``{ } | & ; < >`` and newline are metacharacters. Spans index the original text, so an edit can
splice exactly the bytes it changes and leave every other byte (comments, spacing) as it was.

The text comes from images made by others: tokenizing is linear in its length (literal runs are
consumed by regular expressions, never a character at a time, and every regular expression is
possessive, so none can backtrack), and bad syntax is an :class:`ImageError` with file, line and
column, whatever the bytes.
"""

from __future__ import annotations

import contextlib
import enum
import gc
import re
from collections.abc import Iterator
from typing import NamedTuple

from liveos.errors import ImageError


class TokenKind(enum.StrEnum):
    """What a grub.cfg token is: a word, or one of the shell-like operators."""

    WORD = "word"
    NEWLINE = "newline"
    SEMI = ";"
    LBRACE = "{"
    RBRACE = "}"
    PIPE = "|"
    AMP = "&"
    LT = "<"
    GT = ">"


class PartKind(enum.StrEnum):
    """How a piece of a word was written: it decides whether it is literal and how it expands."""

    TEXT = "text"  #: unquoted (backslash escapes already removed)
    SQUOTED = "squoted"  #: inside '...'
    DQUOTED = "dquoted"  #: literal text inside "..."
    VAR = "var"  #: $name or ${name}, unquoted (field-split by grub when expanded)
    DQUOTED_VAR = "dquoted_var"  #: $name inside "..."


_METACHARS = {
    "\n": TokenKind.NEWLINE,
    ";": TokenKind.SEMI,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
    "|": TokenKind.PIPE,
    "&": TokenKind.AMP,
    "<": TokenKind.LT,
    ">": TokenKind.GT,
}
_WORD_END = " \t\r\n;{}|&<>"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[?#*@]")
#: What may follow ``$`` for it to start an expansion (else the ``$`` is literal).
_NAME_START = r"[A-Za-z0-9_?#*@{]"

#: Between tokens: blanks, line continuations and comments; then one token. A word made only of
#: plain characters is the common case and is taken whole; any other word goes to ``_Lexer.word``.
_NEXT = re.compile(
    r"(?:[ \t\r]++|\\\n|#[^\n]*+)*+"
    r"(?:(?P<meta>[\n;{}|&<>])"
    r"|(?P<plain>[^ \t\r\n;{}|&<>'\"$\\]++)(?![^ \t\r\n;{}|&<>])"
    r"|(?P<end>\Z)"
    r"|(?P<word>))"
)
_META, _PLAIN, _END = (_NEXT.groupindex[name] for name in ("meta", "plain", "end"))
#: A run of unquoted literal text: plain characters, ``\\x`` escapes, lone ``$``.
_TEXT_RUN = re.compile(rf"(?:[^ \t\r\n;{{}}|&<>'\"$\\]++|\\[^\n]|\$(?!{_NAME_START}))++")
_TEXT_ESCAPE = re.compile(r"\\([^\n])")  #: split keeps the escaped characters: join decodes
#: A run of literal text inside double quotes (a ``\\<newline>`` ends it: it joins, adding nothing).
_DQ_RUN = re.compile(rf"(?:[^\"\\$]++|\\[$\"\\]|\\(?![$\"\\\n])|\$(?!{_NAME_START}))++")
_DQ_ESCAPE = re.compile(r"\\([$\"\\])")
#: Longest piece of hostile text quoted in an error message.
_SHOWN = 60


_VAR_KINDS = frozenset({PartKind.VAR, PartKind.DQUOTED_VAR})


class Part(NamedTuple):
    """One piece of a word: its kind, its decoded text (the variable name for VAR kinds), its span."""

    kind: PartKind
    text: str
    start: int
    end: int

    @property
    def is_var(self) -> bool:
        """Whether this part is a ``$variable`` expansion."""
        return self.kind in _VAR_KINDS


class Token(NamedTuple):
    """A metacharacter or a word. ``source`` is the exact original text of the span."""

    kind: TokenKind
    start: int
    end: int
    source: str
    parts: tuple[Part, ...] = ()

    @property
    def has_vars(self) -> bool:
        """Whether the word expands a ``$variable`` (its value is only known at boot)."""
        return any(part.kind in _VAR_KINDS for part in self.parts)

    @property
    def literal(self) -> str | None:
        """The word's value when it contains no variable expansion, else None."""
        parts = self.parts
        if len(parts) == 1:  # most words (read for every argument of every edit)
            return None if parts[0].kind in _VAR_KINDS else parts[0].text
        if self.kind is not TokenKind.WORD or self.has_vars:
            return None
        return "".join(part.text for part in parts)

    @property
    def keyword(self) -> str | None:
        """The word if it is plain unquoted text (how grub recognises commands and keywords)."""
        parts = self.parts
        if len(parts) == 1 and parts[0].kind is PartKind.TEXT:
            return parts[0].text
        return None

    def template(self) -> str:
        """The value with expansions written as ``${name}`` (quotes removed): for display and matching."""
        return "".join("${" + part.text + "}" if part.is_var else part.text for part in self.parts)

    def expand(self, variables: dict[str, str]) -> str | None:
        """The value with variables substituted, or None if a variable is unknown."""
        out = []
        for part in self.parts:
            if part.is_var:
                if part.text not in variables:
                    return None
                out.append(variables[part.text])
            else:
                out.append(part.text)
        return "".join(out)


class TooManyTokens(ImageError):
    """The text has more tokens than the ``limit`` given to :func:`tokenize`."""


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset: what error messages show."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def shown(text: str) -> str:
    """``text`` for an error message: repr'd, and cut short if it is long (hostile input is)."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} characters)"


def syntax_error(text: str, offset: int, message: str, path: str | None) -> ImageError:
    """The :class:`~liveos.errors.ImageError` for bad grub syntax at ``offset``, with line and column."""
    line, column = position(text, offset)
    where = f"{path}:{line}:{column}" if path else f"line {line}, column {column}"
    return ImageError(
        f"grub config syntax error at {where}: {message}",
        path=path,
        hint="fix the grub config in the image (grub itself would refuse it too)",
    )


_new = tuple.__new__  # a NamedTuple without its Python-level __new__: tokens are made by the million


class _Lexer:
    """Tokens of ``text[start:end]``; spans (and error positions) index the whole ``text``."""

    def __init__(self, text: str, path: str | None, start: int, end: int, limit: int | None) -> None:
        self.text = text
        self.path = path
        self.start = start
        self.end = end
        self.limit = end - start + 1 if limit is None else limit
        self.tokens: list[Token] = []

    def error(self, offset: int, message: str) -> ImageError:
        return syntax_error(self.text, offset, message, self.path)

    def run(self) -> list[Token]:
        text, end, tokens, limit = self.text, self.end, self.tokens, self.limit
        append = tokens.append
        match = _NEXT.match
        word, text_kind = TokenKind.WORD, PartKind.TEXT
        pos = self.start
        while True:
            if len(tokens) > limit:
                raise self.too_many(pos)
            found = match(text, pos, end)
            assert found is not None  # the last alternative matches the empty string
            group = found.lastindex
            if group == _PLAIN:
                start, pos = found.span(group)
                source = found.group(group)
                append(
                    _new(Token, (word, start, pos, source, (_new(Part, (text_kind, source, start, pos)),)))
                )
            elif group == _META:
                start = pos = found.start(group)
                char = text[pos]
                pos += 1
                append(_new(Token, (_METACHARS[char], start, pos, char, ())))
            elif group == _END:
                return tokens
            else:
                pos = self.word(found.end())

    def too_many(self, offset: int) -> ImageError:
        line, _ = position(self.text, offset)
        where = f"{self.path}:{line}" if self.path else f"line {line}"
        return TooManyTokens(
            f"grub script text has more than {self.limit} words and separators (at {where}): "
            "liveos refuses to read further",
            path=self.path,
            hint="fix the grub config in the image (real ones have a few thousand words)",
        )

    def word(self, start: int) -> int:
        """Read the word at ``start`` (not made of plain characters only); return where it ends."""
        text, end = self.text, self.end
        pos = start
        parts: list[Part] = []
        while pos < end:
            char = text[pos]
            if char in _WORD_END:
                break
            if char == "'":
                close = text.find("'", pos + 1, end)
                if close < 0:
                    raise self.error(pos, "unexpected end of file in a single-quoted string")
                parts.append(Part(PartKind.SQUOTED, text[pos + 1 : close], pos, close + 1))
                pos = close + 1
            elif char == '"':
                pos = self.double_quoted(pos, parts)
            elif char == "$" and (var := self.variable(pos, PartKind.VAR)) is not None:
                parts.append(var)
                pos = var.end
            elif char == "\\" and pos + 1 >= end:
                raise self.error(pos, "unexpected end of file after '\\'")
            elif char == "\\" and text[pos + 1] == "\n":
                pos += 2  # \<newline> inside a word joins the lines
            else:
                run = _TEXT_RUN.match(text, pos, end)
                assert run is not None  # char starts a run: it is plain, a lone '$' or an escape
                value = run.group()
                if "\\" in value:
                    value = "".join(_TEXT_ESCAPE.split(value))
                parts.append(Part(PartKind.TEXT, value, pos, run.end()))
                pos = run.end()
        self.tokens.append(Token(TokenKind.WORD, start, pos, text[start:pos], _merge(parts)))
        return pos

    def double_quoted(self, opening: int, parts: list[Part]) -> int:
        text, end = self.text, self.end
        pos = opening + 1
        while True:
            if pos >= end:
                raise self.error(opening, "unexpected end of file in a double-quoted string")
            char = text[pos]
            if char == '"':
                return pos + 1
            if char == "$" and (var := self.variable(pos, PartKind.DQUOTED_VAR)) is not None:
                parts.append(var)
                pos = var.end
            elif char == "\\" and pos + 1 < end and text[pos + 1] == "\n":
                pos += 2
            else:
                run = _DQ_RUN.match(text, pos, end)
                assert run is not None  # char is not '"', a variable or a line continuation
                value = run.group()
                if "\\" in value:
                    value = "".join(_DQ_ESCAPE.split(value))
                parts.append(Part(PartKind.DQUOTED, value, pos, run.end()))
                pos = run.end()

    def variable(self, start: int, kind: PartKind) -> Part | None:
        """The expansion at ``start`` (a ``$``), or None when the ``$`` is literal."""
        text, end = self.text, self.end
        if text.startswith("${", start, end):
            close = text.find("}", start + 2, end)
            if close < 0:
                raise self.error(start, "missing '}' in variable expansion")
            name = text[start + 2 : close]
            if not _NAME.fullmatch(name):
                raise self.error(start, f"invalid variable name {shown(name)} in ${{...}}")
            return Part(kind, name, start, close + 1)
        match = _NAME.match(text, start + 1, end)
        if match is None:
            return None
        return Part(kind, match.group(), start, match.end())


def _merge(parts: list[Part]) -> tuple[Part, ...]:
    """Join adjacent literal pieces of the same kind (one part per quoted run, for readability)."""
    merged: list[Part] = []
    run: list[Part] = []  # adjacent literal parts of one kind, not yet in merged

    def flush() -> None:
        if len(run) == 1:
            merged.append(run[0])
        elif run:
            first = run[0]
            merged.append(Part(first.kind, "".join(p.text for p in run), first.start, run[-1].end))
        run.clear()

    for part in parts:
        if part.is_var:
            flush()
            merged.append(part)
        else:
            if run and (run[-1].kind is not part.kind or run[-1].end != part.start):
                flush()
            run.append(part)
    flush()
    return tuple(merged)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a parse makes its objects (none forms a cycle).

    A 1 MiB config is hundreds of thousands of tokens; the collections their allocation triggers
    traverse all of them again and again, which otherwise costs as much as the parse itself.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def tokenize(
    text: str, path: str | None = None, *, start: int = 0, end: int | None = None, limit: int | None = None
) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`ImageError` with file, line and column on bad syntax.

    ``start``/``end`` tokenize a span of ``text`` as if it were the whole text (a BLS ``options``
    value): token spans and error positions still index ``text``. More than ``limit`` tokens is a
    :class:`TooManyTokens` (raised as soon as the limit is passed).
    """
    return _Lexer(text, path, start, len(text) if end is None else end, limit).run()


_NEEDS_QUOTES = re.compile(r"[{}|&;<>\s\"'$\\]")


def quote(value: str) -> str:
    """Write ``value`` as ONE grub word: bare if safe, else double-quoted with ``$ " \\`` escaped."""
    if value and not value.startswith("#") and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + re.sub(r'([$"\\])', r"\\\1", value) + '"'
