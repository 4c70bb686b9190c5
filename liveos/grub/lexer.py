"""Tokenizer for GRUB's shell-like script language, keeping every token's byte span.

Follows the GRUB manual ("Shell-like scripting") and grub-core/script/yylex.l: words are made of
unquoted text, ``'single'`` (no escapes), ``"double"`` (``\\$ \\" \\\\ \\<newline>`` escapes) and
``$var`` / ``${var}`` expansions; ``#`` starts a comment only at the start of a word;
``{ } | & ; < >`` and newline are metacharacters. Spans index the original text, so an edit can
splice exactly the bytes it changes and leave every other byte (comments, spacing) as it was.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from liveos.errors import ImageError


class TokenKind(enum.StrEnum):
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
_BLANKS = " \t\r"
_PLAIN = re.compile(r"[^ \t\r\n;{}|&<>'\"$\\]+")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[?#*@]")


@dataclass(frozen=True)
class Part:
    """One piece of a word: its kind, its decoded text (the variable name for VAR kinds), its span."""

    kind: PartKind
    text: str
    start: int
    end: int

    @property
    def is_var(self) -> bool:
        return self.kind in (PartKind.VAR, PartKind.DQUOTED_VAR)


@dataclass(frozen=True)
class Token:
    """A metacharacter or a word. ``source`` is the exact original text of the span."""

    kind: TokenKind
    start: int
    end: int
    source: str
    parts: tuple[Part, ...] = ()

    @property
    def has_vars(self) -> bool:
        return any(part.is_var for part in self.parts)

    @property
    def literal(self) -> str | None:
        """The word's value when it contains no variable expansion, else None."""
        if self.kind is not TokenKind.WORD or self.has_vars:
            return None
        return "".join(part.text for part in self.parts)

    @property
    def keyword(self) -> str | None:
        """The word if it is plain unquoted text (how grub recognises commands and keywords)."""
        if self.kind is TokenKind.WORD and len(self.parts) == 1 and self.parts[0].kind is PartKind.TEXT:
            return self.parts[0].text
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


def position(text: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a character offset: what error messages show."""
    line = text.count("\n", 0, offset) + 1
    column = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return line, column


def syntax_error(text: str, offset: int, message: str, path: str | None) -> ImageError:
    line, column = position(text, offset)
    where = f"{path}:{line}:{column}" if path else f"line {line}, column {column}"
    return ImageError(
        f"grub config syntax error at {where}: {message}",
        path=path,
        hint="fix the grub config in the image (grub itself would refuse it too)",
    )


class _Lexer:
    def __init__(self, text: str, path: str | None) -> None:
        self.text = text
        self.path = path
        self.pos = 0
        self.tokens: list[Token] = []

    def error(self, offset: int, message: str) -> ImageError:
        return syntax_error(self.text, offset, message, self.path)

    def run(self) -> list[Token]:
        text = self.text
        while self.pos < len(text):
            char = text[self.pos]
            if char in _BLANKS:
                self.pos += 1
            elif char == "\\" and text.startswith("\\\n", self.pos):
                self.pos += 2  # line continuation between words
            elif char in _METACHARS:
                self.tokens.append(Token(_METACHARS[char], self.pos, self.pos + 1, char))
                self.pos += 1
            elif char == "#":
                end = text.find("\n", self.pos)
                self.pos = len(text) if end < 0 else end
            else:
                self.word()
        return self.tokens

    def word(self) -> None:
        text = self.text
        start = self.pos
        parts: list[Part] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char in _BLANKS or char in _METACHARS:
                break
            if char == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error(self.pos, "unexpected end of file in a single-quoted string")
                parts.append(Part(PartKind.SQUOTED, text[self.pos + 1 : end], self.pos, end + 1))
                self.pos = end + 1
            elif char == '"':
                parts.extend(self.double_quoted())
            elif char == "$":
                parts.append(self.variable(PartKind.VAR, PartKind.TEXT))
            elif char == "\\":
                if self.pos + 1 >= len(text):
                    raise self.error(self.pos, "unexpected end of file after '\\'")
                nxt = text[self.pos + 1]
                if nxt != "\n":  # \<newline> inside a word joins the lines
                    parts.append(Part(PartKind.TEXT, nxt, self.pos, self.pos + 2))
                self.pos += 2
            else:
                match = _PLAIN.match(text, self.pos)
                assert match is not None
                parts.append(Part(PartKind.TEXT, match.group(), self.pos, match.end()))
                self.pos = match.end()
        self.tokens.append(Token(TokenKind.WORD, start, self.pos, text[start : self.pos], _merge(parts)))

    def double_quoted(self) -> list[Part]:
        text = self.text
        opening = self.pos
        self.pos += 1
        parts: list[Part] = []
        while True:
            if self.pos >= len(text):
                raise self.error(opening, "unexpected end of file in a double-quoted string")
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return parts
            if char == "$":
                parts.append(self.variable(PartKind.DQUOTED_VAR, PartKind.DQUOTED))
            elif char == "\\" and self.pos + 1 < len(text) and text[self.pos + 1] in '$"\\\n':
                if text[self.pos + 1] != "\n":
                    parts.append(Part(PartKind.DQUOTED, text[self.pos + 1], self.pos, self.pos + 2))
                self.pos += 2
            else:
                parts.append(Part(PartKind.DQUOTED, char, self.pos, self.pos + 1))
                self.pos += 1

    def variable(self, kind: PartKind, literal_kind: PartKind) -> Part:
        text = self.text
        start = self.pos
        if text.startswith("${", start):
            close = text.find("}", start + 2)
            if close < 0:
                raise self.error(start, "missing '}' in variable expansion")
            name = text[start + 2 : close]
            if not _NAME.fullmatch(name):
                raise self.error(start, f"invalid variable name {name!r} in ${{...}}")
            self.pos = close + 1
            return Part(kind, name, start, self.pos)
        match = _NAME.match(text, start + 1)
        if match is None:  # a lone '$' is literal
            self.pos += 1
            return Part(literal_kind, "$", start, self.pos)
        self.pos = match.end()
        return Part(kind, match.group(), start, self.pos)


def _merge(parts: list[Part]) -> tuple[Part, ...]:
    """Join adjacent literal pieces of the same kind (one part per quoted run, for readability)."""
    merged: list[Part] = []
    for part in parts:
        last = merged[-1] if merged else None
        if last is not None and not part.is_var and last.kind is part.kind and last.end == part.start:
            merged[-1] = Part(part.kind, last.text + part.text, last.start, part.end)
        else:
            merged.append(part)
    return tuple(merged)


def tokenize(text: str, path: str | None = None) -> list[Token]:
    """Split ``text`` into tokens; raise :class:`ImageError` with file, line and column on bad syntax."""
    return _Lexer(text, path).run()


_NEEDS_QUOTES = re.compile(r"[{}|&;<>\s\"'$\\]")


def quote(value: str) -> str:
    """Write ``value`` as ONE grub word: bare if safe, else double-quoted with ``$ " \\`` escaped."""
    if value and not value.startswith("#") and not _NEEDS_QUOTES.search(value):
        return value
    return '"' + re.sub(r'([$"\\])', r"\\\1", value) + '"'
