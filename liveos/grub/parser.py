"""grub.cfg's command structure: simple commands, ``if``/``for`` branches, menu entries and blocks.

The parser checks that blocks open and close the way grub's script parser requires and keeps each
command's token spans, so :mod:`liveos.grub.splice` can edit exactly the bytes it changes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from liveos.errors import ImageError
from liveos.grub.lexer import Part, Token, TokenKind, syntax_error

LINUX_COMMANDS = frozenset({"linux", "linuxefi", "linux16"})
INITRD_COMMANDS = frozenset({"initrd", "initrdefi", "initrd16"})
#: ``search`` and its fixed-mode aliases (``search.fs_uuid UUID [VAR]`` etc.).
SEARCH_COMMANDS = frozenset({"search", "search.fs_uuid", "search.fs_label", "search.file"})


class Command(NamedTuple):
    """A simple command: its words (name first), where it sits, and what ended it."""

    words: tuple[Token, ...]
    menu: tuple[str, ...]  #: titles of the enclosing menuentry/submenu blocks, outermost first
    terminator: Token | None  #: the newline/';'/'}' after it, None at end of file
    branch: int  #: id of the command list it belongs to (an if branch, a block body, the top level)
    condition: bool  #: it is the condition of an ``if``/``while``
    needs_command: bool  #: its branch must keep at least one command (grub's grammar)

    @property
    def name(self) -> str | None:
        """The command's name; None when the first word is not a plain keyword."""
        return self.words[0].keyword

    @property
    def args(self) -> tuple[Token, ...]:
        """The words after the command name."""
        return self.words[1:]

    @property
    def start(self) -> int:
        """Offset of the command's first character in the config."""
        return self.words[0].start

    @property
    def end(self) -> int:
        """Offset just past the command's last word."""
        return self.words[-1].end


@dataclass(frozen=True)
class MenuEntry:
    """A ``menuentry`` or ``submenu`` block."""

    kind: str  #: "menuentry" or "submenu"
    title: str
    parents: tuple[str, ...]  #: titles of enclosing submenus
    start: int  #: offset of the ``menuentry`` word
    end: int  #: offset just past the closing ``}``
    #: every command of the parse, and which of them are this block's: a nested block shares the
    #: list instead of copying it (a copy per level is quadratic in the nesting).
    all_commands: Sequence[Command] = field(default=(), repr=False, compare=False)
    span: tuple[int, int] = field(default=(0, 0), repr=False, compare=False)

    @property
    def commands(self) -> tuple[Command, ...]:
        """The commands inside this menu entry's braces."""
        first, last = self.span
        return tuple(self.all_commands[first:last])

    @property
    def path(self) -> tuple[str, ...]:
        """Titles of the enclosing submenus and this entry, outermost first."""
        return (*self.parents, self.title)


#: Deepest block nesting accepted (real configs nest menuentries in a submenu or two).
MAX_NESTING = 64
#: Most words and separators (newline, ``;``, braces) in a config: every token is a Python object,
#: and an edit reads them all again. A grub.cfg that grub-mkconfig writes for a hundred kernels
#: has some 40000; a hostile 1 MiB config of one-letter commands has a million.
MAX_TOKENS = 100_000
#: How much more an edited config may have: the edits add a few arguments to every ``linux`` line
#: (a config of nothing but short ``linux`` lines grows 2.5 times), BLS entries become menu entries.
EDITED_MAX_TOKENS = 4 * MAX_TOKENS


@dataclass
class _Frame:
    kind: str  # top, menuentry, submenu, function, if, loop
    opener: Token | None
    menu: tuple[str, ...] = ()  #: titles of the menu blocks open here, outermost first
    branch: int = 0
    condition: bool = False
    start: int = 0
    first: int = 0  #: index of its first command


_BLOCK_OPENERS = ("menuentry", "submenu", "function")
_KEYWORDS = frozenset({"if", "while", "until", "elif", "else", "then", "do", "fi", "done", "for", "!"})


class _Parser:
    """Splits tokens into commands and blocks, checking that blocks open and close properly."""

    def __init__(self, text: str, tokens: list[Token], path: str | None) -> None:
        self.text = text
        self.tokens = tokens
        self.path = path
        self.branches = 0
        self.frame = _Frame("top", None)
        self.stack = [self.frame]
        self.commands: list[Command] = []
        self.entries: list[MenuEntry] = []
        self.words: list[Token] = []
        self.skip_words = False  # after 'for': 'x in a b c' is not a command

    def error(self, token: Token | None, message: str) -> ImageError:
        return syntax_error(self.text, token.start if token else len(self.text), message, self.path)

    def push(self, frame: _Frame) -> None:
        """Open a block; a hostile config nested thousands deep would take minutes to parse."""
        if len(self.stack) > MAX_NESTING:
            raise syntax_error(
                self.text,
                frame.opener.start if frame.opener else 0,
                f"blocks nested more than {MAX_NESTING} deep",
                self.path,
            )
        frame.first = len(self.commands)
        self.stack.append(frame)
        self.frame = frame

    def pop(self) -> _Frame:
        frame = self.stack.pop()
        self.frame = self.stack[-1]
        return frame

    def new_branch(self, frame: _Frame, *, condition: bool) -> None:
        self.branches += 1
        frame.branch = self.branches
        frame.condition = condition

    def run(self) -> tuple[list[Command], list[MenuEntry]]:
        word_kind, newline, semi = TokenKind.WORD, TokenKind.NEWLINE, TokenKind.SEMI
        for token in self.tokens:
            kind = token.kind
            if kind is word_kind:
                if self.words:  # an argument: the common case, kept short
                    self.words.append(token)
                else:
                    self.word(token)
            elif kind is newline or kind is semi:
                if kind is newline and self.opens_block():
                    continue  # 'menuentry x' NEWLINE '{' is allowed
                self.end_command(token)
            elif kind is TokenKind.LBRACE:
                self.open_block(token)
            elif kind is TokenKind.RBRACE:
                self.end_command(token)
                self.close_block(token)
            else:
                raise self.error(token, f"'{token.source}' is not supported by grub's script parser")
        self.end_command(None)
        frame = self.frame
        if frame.kind != "top":
            closer = {"if": "fi", "loop": "done"}.get(frame.kind, "}")
            raise self.error(
                frame.opener, f"'{frame.opener.source if frame.opener else ''}' has no matching '{closer}'"
            )
        return self.commands, self.entries

    def opens_block(self) -> bool:
        return bool(self.words) and self.words[0].keyword in _BLOCK_OPENERS

    def word(self, token: Token) -> None:
        """The first word of a command (or a word after ``for``)."""
        if self.skip_words:
            return
        keyword = token.keyword
        if keyword not in _KEYWORDS:
            self.words.append(token)
            return
        frame = self.frame
        if keyword in ("if", "while", "until"):
            new = _Frame("if" if keyword == "if" else "loop", token, frame.menu, start=token.start)
            self.push(new)
            self.new_branch(new, condition=True)
        elif keyword == "elif" or keyword == "else":
            if frame.kind != "if" or frame.condition:
                raise self.error(token, f"'{keyword}' without a matching 'if ...; then'")
            self.new_branch(frame, condition=keyword == "elif")
        elif keyword == "then":
            if frame.kind != "if" or not frame.condition:
                raise self.error(token, "'then' without a matching 'if'")
            self.new_branch(frame, condition=False)
        elif keyword == "do":
            if frame.kind != "loop" or not frame.condition:
                raise self.error(token, "'do' without a matching 'for'/'while'")
            self.new_branch(frame, condition=False)
        elif keyword in ("fi", "done"):
            want = "if" if keyword == "fi" else "loop"
            if frame.kind != want or frame.condition:
                raise self.error(token, f"unexpected '{keyword}'")
            self.pop()
        elif keyword == "for":
            new = _Frame("loop", token, frame.menu, start=token.start)
            self.push(new)
            self.new_branch(new, condition=True)
            self.skip_words = True
        # '!' negates the command that follows: it is not a word of it

    def end_command(self, terminator: Token | None) -> None:
        self.skip_words = False
        words = self.words
        if not words:
            return
        if words[0].keyword in _BLOCK_OPENERS:
            raise self.error(words[0], f"'{words[0].source}' needs a '{{' block")
        frame = self.frame
        self.commands.append(
            Command(tuple(words), frame.menu, terminator, frame.branch, frame.condition, frame.kind != "top")
        )
        self.words = []

    def open_block(self, token: Token) -> None:
        if not self.opens_block():
            raise self.error(token, "'{' outside of a menuentry, submenu or function")
        opener = self.words[0]
        kind = opener.keyword or ""
        menu = self.frame.menu
        if kind != "function":
            menu = (*menu, _entry_title(self.words[1:]))
        frame = _Frame(kind, opener, menu, start=opener.start)
        self.words = []
        self.push(frame)
        self.new_branch(frame, condition=False)

    def close_block(self, token: Token) -> None:
        frame = self.frame
        if frame.kind not in _BLOCK_OPENERS:
            raise self.error(token, "unexpected '}'")
        self.pop()
        if frame.kind == "function":
            return
        self.entries.append(
            MenuEntry(
                frame.kind,
                frame.menu[-1],
                self.frame.menu,
                frame.start,
                token.end,
                self.commands,
                (frame.first, len(self.commands)),
            )
        )


def _entry_title(args: Sequence[Token]) -> str:
    """The first non-option argument of ``menuentry``/``submenu`` (options like --class take a value)."""
    skip = False
    for word in args:
        if skip:
            skip = False
            continue
        literal = word.literal
        if literal is None and word.parts and word.parts[0].is_var:  # $menuentry_id_option 'id'
            skip = True
            continue
        if literal is not None and literal.startswith("--"):
            skip = "=" not in literal
            continue
        return word.template()
    return ""


def split_assignment(word: Token) -> tuple[str, list[Part]] | None:
    """``name=value`` of a ``set`` argument: the name and the parts forming the value."""
    for i, part in enumerate(word.parts):
        if part.is_var:
            return None
        if "=" in part.text:
            name_tail, _, value_head = part.text.partition("=")
            name = "".join(p.text for p in word.parts[:i]) + name_tail
            rest = list(word.parts[i + 1 :])
            if value_head:
                rest.insert(0, Part(part.kind, value_head, part.end - len(value_head), part.end))
            return name, rest
    return None


UNKNOWN = "\x00"


def expand_parts(parts: Iterable[Part], variables: Mapping[str, str]) -> str:
    """A word's text with the known ``variables`` substituted (unknown ones stay visibly marked)."""
    return "".join(
        (variables.get(p.text, UNKNOWN + p.text + UNKNOWN) if p.is_var else p.text) for p in parts
    )


DEVICE = re.compile(r"^\([^)]*\)")


def parse_commands(
    text: str, tokens: list[Token], path: str | None
) -> tuple[list[Command], list[MenuEntry]]:
    """The commands and menu entries of a tokenized grub.cfg; ImageError on bad block structure."""
    return _Parser(text, tokens, path).run()
