"""A lossless model of grub.cfg: menu entries, ``linux``/``initrd``/``search``/``set``, and exact edits.

The config is kept as its original text plus a parse (commands with token spans). Every edit
computes byte splices against the current parse, applies them all at once and re-parses, so
untouched bytes (comments, indentation, ``if`` blocks, functions) stay exactly as they were, and
``parse(text).render() == text``. All edits are idempotent: applying one twice equals once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Self

from liveos.errors import ImageError, InternalError, UsageError
from liveos.grub.kernelargs import KernelArg, KernelArgs
from liveos.grub.lexer import Part, PartKind, Token, TokenKind, quote, syntax_error, tokenize

LINUX_COMMANDS = frozenset({"linux", "linuxefi", "linux16"})
INITRD_COMMANDS = frozenset({"initrd", "initrdefi", "initrd16"})
#: ``search`` and its fixed-mode aliases (``search.fs_uuid UUID [VAR]`` etc.).
SEARCH_COMMANDS = frozenset({"search", "search.fs_uuid", "search.fs_label", "search.file"})
SELINUX_ARGS = ("security", "selinux", "enforcing")
#: Replaces a removed command where grub's grammar needs one (if/else branch, menuentry, function body).
NOOP_COMMAND = "true"


@dataclass(frozen=True)
class Splice:
    """Replace ``text[start:end]`` with ``replacement`` (an insertion when start == end)."""

    start: int
    end: int
    replacement: str


def apply_splices(text: str, splices: Iterable[Splice]) -> str:
    ordered = sorted(splices, key=lambda s: (s.start, s.end))
    out: list[str] = []
    cursor = 0
    for splice in ordered:
        if splice.start < cursor:
            raise InternalError(f"overlapping grub config edits at offset {splice.start}")
        out.append(text[cursor : splice.start])
        out.append(splice.replacement)
        cursor = splice.end
    out.append(text[cursor:])
    return "".join(out)


@dataclass(frozen=True)
class Command:
    """A simple command: its words (name first), where it sits, and what ended it."""

    words: tuple[Token, ...]
    menu: tuple[str, ...]  #: titles of the enclosing menuentry/submenu blocks, outermost first
    terminator: Token | None  #: the newline/';'/'}' after it, None at end of file
    branch: int  #: id of the command list it belongs to (an if branch, a block body, the top level)
    condition: bool  #: it is the condition of an ``if``/``while``
    needs_command: bool  #: its branch must keep at least one command (grub's grammar)

    @property
    def name(self) -> str | None:
        return self.words[0].keyword

    @property
    def args(self) -> tuple[Token, ...]:
        return self.words[1:]

    @property
    def start(self) -> int:
        return self.words[0].start

    @property
    def end(self) -> int:
        return self.words[-1].end


@dataclass(frozen=True)
class MenuEntry:
    """A ``menuentry`` or ``submenu`` block."""

    kind: str  #: "menuentry" or "submenu"
    title: str
    parents: tuple[str, ...]  #: titles of enclosing submenus
    start: int  #: offset of the ``menuentry`` word
    end: int  #: offset just past the closing ``}``
    commands: tuple[Command, ...] = field(default=(), repr=False)

    @property
    def path(self) -> tuple[str, ...]:
        return (*self.parents, self.title)


#: Deepest block nesting accepted (real configs nest menuentries in a submenu or two).
MAX_NESTING = 64


@dataclass
class _Frame:
    kind: str  # top, menuentry, submenu, function, if, loop
    opener: Token | None
    title: str = ""
    branch: int = 0
    condition: bool = False
    start: int = 0


class _Parser:
    """Splits tokens into commands and blocks, checking that blocks open and close properly."""

    def __init__(self, text: str, tokens: list[Token], path: str | None) -> None:
        self.text = text
        self.tokens = tokens
        self.path = path
        self.branches = 0
        self.stack = [_Frame("top", None)]
        self.commands: list[Command] = []
        self.entries: list[MenuEntry] = []
        self.entry_commands: list[list[Command]] = []
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
        self.stack.append(frame)

    def new_branch(self, frame: _Frame, *, condition: bool) -> None:
        self.branches += 1
        frame.branch = self.branches
        frame.condition = condition

    def run(self) -> tuple[list[Command], list[MenuEntry]]:
        for token in self.tokens:
            if token.kind is TokenKind.WORD:
                self.word(token)
            elif token.kind in (TokenKind.NEWLINE, TokenKind.SEMI):
                if token.kind is TokenKind.NEWLINE and self.opens_block():
                    continue  # 'menuentry x' NEWLINE '{' is allowed
                self.end_command(token)
            elif token.kind is TokenKind.LBRACE:
                self.open_block(token)
            elif token.kind is TokenKind.RBRACE:
                self.end_command(token)
                self.close_block(token)
            else:
                raise self.error(token, f"'{token.source}' is not supported by grub's script parser")
        self.end_command(None)
        frame = self.stack[-1]
        if frame.kind != "top":
            closer = {"if": "fi", "loop": "done"}.get(frame.kind, "}")
            raise self.error(
                frame.opener, f"'{frame.opener.source if frame.opener else ''}' has no matching '{closer}'"
            )
        return self.commands, self.entries

    def opens_block(self) -> bool:
        return bool(self.words) and self.words[0].keyword in ("menuentry", "submenu", "function")

    def word(self, token: Token) -> None:
        frame = self.stack[-1]
        if self.words or self.skip_words:
            if not self.skip_words:
                self.words.append(token)
            return
        keyword = token.keyword
        if keyword in ("if", "while", "until"):
            new = _Frame("if" if keyword == "if" else "loop", token, start=token.start)
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
            self.stack.pop()
        elif keyword == "for":
            new = _Frame("loop", token, start=token.start)
            self.push(new)
            self.new_branch(new, condition=True)
            self.skip_words = True
        elif keyword == "!":
            return
        else:
            self.words.append(token)

    def end_command(self, terminator: Token | None) -> None:
        self.skip_words = False
        if not self.words:
            return
        if self.opens_block():
            raise self.error(self.words[0], f"'{self.words[0].source}' needs a '{{' block")
        frame = self.stack[-1]
        command = Command(
            words=tuple(self.words),
            menu=tuple(f.title for f in self.stack if f.kind in ("menuentry", "submenu")),
            terminator=terminator,
            branch=frame.branch,
            condition=frame.condition,
            needs_command=frame.kind != "top",
        )
        self.words = []
        self.commands.append(command)
        for bucket in self.entry_commands:
            bucket.append(command)

    def open_block(self, token: Token) -> None:
        if not self.opens_block():
            raise self.error(token, "'{' outside of a menuentry, submenu or function")
        opener = self.words[0]
        kind = opener.keyword or ""
        frame = _Frame(kind, opener, title=_entry_title(self.words[1:]) if kind != "function" else "")
        frame.start = opener.start
        self.words = []
        self.push(frame)
        self.new_branch(frame, condition=False)
        if kind != "function":
            self.entry_commands.append([])

    def close_block(self, token: Token) -> None:
        frame = self.stack[-1]
        if frame.kind not in ("menuentry", "submenu", "function"):
            raise self.error(token, "unexpected '}'")
        self.stack.pop()
        if frame.kind == "function":
            return
        commands = self.entry_commands.pop()
        parents = tuple(f.title for f in self.stack if f.kind in ("menuentry", "submenu"))
        self.entries.append(
            MenuEntry(frame.kind, frame.title, parents, frame.start, token.end, tuple(commands))
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


def _split_assignment(word: Token) -> tuple[str, list[Part]] | None:
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


_UNKNOWN = "\x00"


def _expand_parts(parts: Iterable[Part], variables: Mapping[str, str]) -> str:
    return "".join(
        (variables.get(p.text, _UNKNOWN + p.text + _UNKNOWN) if p.is_var else p.text) for p in parts
    )


_DEVICE = re.compile(r"^\([^)]*\)")


@dataclass(frozen=True)
class _ArgSite:
    """Where a command line's arguments sit in the text, so an edit of them becomes splices."""

    words: tuple[Token, ...]
    prev_ends: tuple[int, ...]  #: end of the token before each word (deletions start there)
    head_end: int  #: insertion point when no kept argument precedes (after the path / key)
    base: int = 0  #: offset added to every position (tokens of a sub-string)

    @property
    def args(self) -> KernelArgs:
        return KernelArgs.from_tokens(self.words)

    def diff(self, target: KernelArgs) -> list[Splice]:
        kept = [arg.origin for arg in target if arg.origin is not None]
        if kept != sorted(kept) or len(set(kept)) != len(kept):
            raise InternalError("a kernel argument edit reordered existing arguments")
        base = self.base
        splices = [
            Splice(base + self.prev_ends[i], base + word.end, "")
            for i, word in enumerate(self.words)
            if i not in kept
        ]
        pending: list[KernelArg] = []
        anchor = self.head_end

        def flush() -> None:
            if pending:
                text = "".join(" " + arg.render() for arg in pending)
                splices.append(Splice(base + anchor, base + anchor, text))
                pending.clear()

        for arg in target:
            if arg.origin is None:
                pending.append(arg)
            else:
                flush()
                anchor = self.words[arg.origin].end
        flush()
        return splices


class KernelArgEditor:
    """Text parsed into a model plus the kernel-argument edits, defined once over :meth:`edit_args`
    (grub.cfg and BLS entries)."""

    def __init__(self, text: str, path: str | None = None) -> None:
        self.path = path
        self._text = text
        self._parse()

    @classmethod
    def parse(cls, text: str, path: str | None = None) -> Self:
        """Parse ``text``; raises :class:`ImageError` (file, line, column) on bad syntax."""
        return cls(text, path)

    def _parse(self) -> None:
        raise NotImplementedError

    def render(self) -> str:
        """The text, byte-identical to the input apart from the edits."""
        return self._text

    def _apply(self, splices: Sequence[Splice]) -> int:
        """Splice the text and re-parse the model; returns how many splices were asked for."""
        if splices:
            new = apply_splices(self._text, splices)
            if new != self._text:
                self._text = new
                self._parse()
        return len(splices)

    def edit_args(self, edit: Callable[[KernelArgs], KernelArgs]) -> int:
        raise NotImplementedError

    def set_arg(self, name: str, value: str | None = None) -> None:
        """Exactly one ``name[=value]`` on every kernel line (first occurrence replaced in place)."""
        self.edit_args(lambda args: args.set(name, value))

    def remove_args(self, *names: str) -> None:
        self.edit_args(lambda args: args.remove(*names))

    def append_args(self, args: Iterable[str]) -> None:
        """Add each argument once (as ONE grub word, quoted if needed), before ``$kernelopts``."""
        new = [KernelArg.literal(a) if isinstance(a, str) else a for a in args]
        self.edit_args(lambda current: current.append(*new))

    def set_root_live(
        self, squashfs_path: str = "/liveos/rootfs.img", *, label: str | None = None, url: str | None = None
    ) -> None:
        """Boot dracut's dmsquash-live from the media labelled ``label`` (or ``url`` for PXE)."""
        if (label is None) == (url is None):
            raise UsageError("set_root_live needs exactly one of label= (ISO/USB) or url= (PXE)")
        root = f"live:CDLABEL={label}" if label is not None else f"live:{url}"
        image = PurePosixPath(squashfs_path)
        if not image.is_absolute() or image.name in ("", "..", "."):
            raise UsageError(f"squashfs path {squashfs_path!r} must be an absolute file path on the media")
        live_dir = str(image.parent).lstrip("/") or "/"
        self.edit_args(
            lambda a: (
                a.set("root", root)
                .set("rd.live.image")
                .set("rd.live.dir", live_dir)
                .set("rd.live.squashimg", image.name)
            )
        )

    def remove_root(self) -> None:
        """No ``root=``: a full-OS initrd is the root and must not pivot."""
        self.remove_args("root")

    def disable_selinux(self) -> None:
        """``selinux=0`` where the last ``security=``/``selinux=``/``enforcing=`` was (or appended)."""
        self.edit_args(lambda args: args.substitute(SELINUX_ARGS, "selinux=0"))


class GrubConfig(KernelArgEditor):
    """A parsed grub.cfg that renders back byte-identical and edits with minimal byte changes."""

    def _parse(self) -> None:
        tokens = tokenize(self._text, self.path)
        self.commands, self.menu_entries = _Parser(self._text, tokens, self.path).run()

    def __str__(self) -> str:
        return self._text

    # ------------------------------------------------------------------ queries
    def find(self, names: Iterable[str]) -> list[Command]:
        wanted = frozenset(names)
        return [c for c in self.commands if c.name in wanted]

    def linux_commands(self) -> list[Command]:
        return self.find(LINUX_COMMANDS)

    def initrd_commands(self) -> list[Command]:
        return self.find(INITRD_COMMANDS)

    def search_commands(self) -> list[Command]:
        return self.find(SEARCH_COMMANDS)

    def has_blscfg(self) -> bool:
        """The config boots BLS entries (Fedora, Azure Linux 4): kernel args live in the entries."""
        return bool(self.find(["blscfg"]))

    def env_files(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Files read by ``load_env -f FILE``, variables resolved where ``set`` defines them."""
        values = dict(env or {})
        out = []
        for command in self.commands:
            self._track_set(command, values)
            if command.name != "load_env":
                continue
            for i, word in enumerate(command.args):
                if word.literal in ("-f", "--file") and i + 1 < len(command.args):
                    target = command.args[i + 1]
                    path = _expand_parts(target.parts, values)
                    out.append(target.template() if _UNKNOWN in path else path)
        return out

    def variables(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Values of ``set NAME=VALUE`` in file order (``env``: e.g. values from ``load_env`` files)."""
        values = dict(env or {})
        for command in self.commands:
            self._track_set(command, values)
        return values

    @staticmethod
    def _track_set(command: Command, values: dict[str, str]) -> None:
        """Follow ``set NAME=VALUE`` and grub's bare ``NAME=VALUE`` command."""
        if command.name == "set" and len(command.args) == 1:
            word = command.args[0]
        elif len(command.words) == 1 and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", command.words[0].source):
            word = command.words[0]
        else:
            return
        assignment = _split_assignment(word)
        if assignment is None:
            return
        name, parts = assignment
        value = _expand_parts(parts, values)
        if _UNKNOWN in value:
            values.pop(name, None)
        else:
            values[name] = value

    def kernel_args(self) -> list[KernelArgs]:
        """The arguments of every ``linux`` command, in file order."""
        return [self._linux_site(c).args for c in self.linux_commands()]

    def kernel_paths(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Effective kernel paths (variables from ``set`` resolved, ``(device)`` stripped), unique."""
        return self._paths(LINUX_COMMANDS, env)

    def initrd_paths(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Effective initrd paths of every ``initrd`` command, unique, in file order."""
        return self._paths(INITRD_COMMANDS, env)

    def _paths(self, names: frozenset[str], env: Mapping[str, str] | None) -> list[str]:
        values = dict(env or {})
        out: list[str] = []
        for command in self.commands:
            self._track_set(command, values)
            if command.name not in names:
                continue
            words = command.args[:1] if names is LINUX_COMMANDS else command.args
            if not words:
                raise self._error(command, f"'{command.name}' has no file path")
            for word in words:
                path = _DEVICE.sub("", _expand_parts(word.parts, values))
                if _UNKNOWN in path:
                    unknown = path.split(_UNKNOWN)[1]
                    raise self._error(
                        command,
                        f"cannot resolve ${unknown} in '{word.source}'",
                        hint="pass the variables of the env files it loads "
                        f"({', '.join(self.env_files()) or 'none found'}) as env=",
                    )
                if path not in out:
                    out.append(path)
        return out

    def _error(self, command: Command, message: str, hint: str | None = None) -> ImageError:
        line = self._text.count("\n", 0, command.start) + 1
        where = f"{self.path}:{line}" if self.path else f"line {line}"
        return ImageError(f"grub config {where}: {message}", path=self.path, hint=hint)

    # ------------------------------------------------------------------ kernel argument edits
    def _linux_site(self, command: Command) -> _ArgSite:
        words = command.words
        if len(words) < 2:
            raise self._error(command, f"'{command.name}' has no kernel path")
        args = words[2:]
        prev_ends = tuple(words[i + 1].end for i in range(len(args)))
        return _ArgSite(tuple(args), prev_ends, words[1].end)

    def edit_args(self, edit: Callable[[KernelArgs], KernelArgs]) -> int:
        """Apply ``edit`` to the arguments of every ``linux`` command; returns the splice count."""
        splices: list[Splice] = []
        for command in self.linux_commands():
            site = self._linux_site(command)
            splices += site.diff(edit(site.args))
        return self._apply(splices)

    # ------------------------------------------------------------------ search
    def set_search_label(self, label: str) -> int:
        """Every ``search`` finds the media by volume label, setting the variable it set before."""
        splices = []
        for command in self.search_commands():
            text = f"search --no-floppy --set={_search_var(command)} --label {quote(label)}"
            if self._text[command.start : command.end] != text:
                splices.append(Splice(command.start, command.end, text))
        self._apply(splices)
        return len(self.search_commands())

    def remove_search(self) -> int:
        """Drop every ``search`` (PXE: grub's root already is the TFTP server); returns the count."""
        removable = [c for c in self.search_commands() if not c.condition]
        gone = {id(c) for c in removable}
        survivors: dict[int, int] = {}
        for command in self.commands:
            if id(command) not in gone:
                survivors[command.branch] = survivors.get(command.branch, 0) + 1
        splices = []
        for command in removable:
            if command.needs_command and not survivors.get(command.branch):
                survivors[command.branch] = 1  # grub rejects an empty if/else branch
                splices.append(Splice(command.start, command.end, NOOP_COMMAND))
            else:
                splices.append(self._removal(command))
        self._apply(splices)
        return len(removable)

    def _removal(self, command: Command) -> Splice:
        text = self._text
        line_start = text.rfind("\n", 0, command.start) + 1
        term = command.terminator
        alone_before = not text[line_start : command.start].strip(" \t")
        if term is not None and term.kind is TokenKind.SEMI:
            end = term.end
            while end < len(text) and text[end] in " \t":
                end += 1
            return Splice(command.start, end, "")
        if alone_before and (term is None or term.kind is TokenKind.NEWLINE):
            return Splice(line_start, term.end if term else command.end, "")
        return Splice(command.start, command.end, "")

    # ------------------------------------------------------------------ paths
    def set_initrd(self, path: str) -> None:
        """Every ``initrd`` loads just ``path`` (full-OS media: one initrd holding the whole OS).

        ``[ -f OLD ]`` tests of the old initrd (Azure Linux wraps initrd in one) follow along,
        otherwise grub would skip the initrd on the media.
        """
        new = quote(path)
        splices = []
        old_sources: set[str] = set()
        for command in self.initrd_commands():
            if not command.args:
                raise self._error(command, f"'{command.name}' has no file path")
            old_sources.update(w.source for w in command.args)
            span = (command.args[0].start, command.args[-1].end)
            if self._text[span[0] : span[1]] != new:
                splices.append(Splice(span[0], span[1], new))
        for command in self.find(["[", "test"]):
            for flag, word in zip(command.args, command.args[1:], strict=False):
                if flag.literal in ("-f", "-e", "-s") and word.source in old_sources and word.source != new:
                    splices.append(Splice(word.start, word.end, new))
        self._apply(splices)

    def prefix_boot_paths(self, prefix: str = "/boot") -> None:
        """Kernel/initrd paths relative to a separate /boot partition get ``prefix`` (``/vmlinuz`` ->
        ``/boot/vmlinuz``); a leading ``$var`` set by a literal ``set`` gets it in that ``set``.
        """
        prefix = "/" + prefix.strip("/")
        splices: dict[int, Splice] = {}
        values: dict[str, str] = {}
        sets: dict[str, list[Command]] = {}
        for command in self.commands:
            self._track_set(command, values)
            if command.name == "set" and len(command.args) == 1:
                assignment = _split_assignment(command.args[0])
                if assignment:
                    sets.setdefault(assignment[0], []).append(command)
            if command.name in LINUX_COMMANDS:
                words = command.args[:1]
            elif command.name in INITRD_COMMANDS:
                words = command.args
            else:
                continue
            for word in words:
                splice = self._prefix_word(word, prefix, values, sets)
                if splice is not None:
                    splices[splice.start] = splice
        self._apply(list(splices.values()))

    def replace(self, command: Command, text: str) -> None:
        """Replace one command (its words, not its terminator) with ``text``."""
        self._apply([Splice(command.start, command.end, text)])

    def _prefix_word(
        self, word: Token, prefix: str, values: Mapping[str, str], sets: Mapping[str, list[Command]]
    ) -> Splice | None:
        resolved = _DEVICE.sub("", _expand_parts(word.parts, values))
        if resolved == prefix or resolved.startswith(prefix + "/"):
            return None
        first = word.parts[0]
        if first.is_var:
            # '$bootprefix/vmlinuz' with 'set bootprefix=' (empty): fix the one literal set.
            head = values.get(first.text)
            assigned = sets.get(first.text, [])
            if head is None or head == prefix or head.startswith(prefix + "/") or len(assigned) != 1:
                return None
            set_word = assigned[0].args[0]
            split = _split_assignment(set_word)
            if split is None or any(p.is_var for p in split[1]):
                return None
            value = "".join(p.text for p in split[1])
            return Splice(set_word.start, set_word.end, f"{split[0]}={quote(prefix + value)}")
        insert_at = word.start
        if first.kind is PartKind.TEXT and first.text.startswith("("):
            close = first.text.find(")")
            if close < 0:
                return None
            insert_at = first.start + close + 1  # TEXT parts of one run map 1:1 to source
            if self._text[first.start : first.end] != first.text:
                return None
        return Splice(insert_at, insert_at, quote(prefix))


def _search_var(command: Command) -> str:
    """The variable a ``search`` sets: ``--set=VAR`` (``--set``/``-s`` alone: root)."""
    args = [w.template() for w in command.args]
    if command.name != "search":
        positional = [a for a in args if not a.startswith("-")]
        return positional[1] if len(positional) > 1 else "root"
    for arg in args:
        if arg.startswith("--set="):
            return arg.split("=", 1)[1] or "root"
    return "root"
