"""GrubConfig: a lossless model of grub.cfg with the edits a live medium needs.

The config is kept as its original text plus a parse (:mod:`liveos.grub.parser`); every edit is
a set of byte splices (:mod:`liveos.grub.splice`), so ``parse(text).render() == text`` and an
edited config differs from the original only where it was edited.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Self

from liveos import views
from liveos.errors import ImageError, LiveOSError
from liveos.grub.kernelargs import MAX_KERNEL_ARGS, KernelArgs
from liveos.grub.lexer import Part, PartKind, Token, TokenKind, gc_paused, quote, shown, tokenize
from liveos.grub.parser import (
    DEVICE,
    EDITED_MAX_TOKENS,
    INITRD_COMMANDS,
    LINUX_COMMANDS,
    MAX_TOKENS,
    SEARCH_COMMANDS,
    UNKNOWN,
    Command,
    MenuEntry,
    expand_parts,
    parse_commands,
    split_assignment,
)
from liveos.grub.splice import ArgSite, KernelArgEditor, Splice


@dataclass(frozen=True)
class KernelLine:
    """One ``linux`` command as grub would run it: where in the menu, what it boots, with what."""

    menu: tuple[str, ...]  #: titles of the enclosing menu entries, outermost first
    kernel: str
    initrds: tuple[str, ...]
    args: KernelArgs


#: Replaces a removed command where grub's grammar needs one (if/else branch, menuentry, function body).
NOOP_COMMAND = "true"
#: Characters the variable expansions of one pass over a config may produce, per character of the
#: config (plus a floor): ``set a=$a$a`` repeated doubles a value each time, so a small hostile
#: config could otherwise ask for more memory than exists.
EXPANSION_FACTOR = 8
EXPANSION_FLOOR = 1 << 20
_VAR_NAME = re.compile(r"[A-Za-z0-9_]+")
_BLANKS = re.compile(r"[ \t]*")


class _Scope:
    """grub's variables as the ``set`` commands of a config define them, followed in file order."""

    def __init__(self, config: GrubConfig, env: Mapping[str, str] | None) -> None:
        self.config = config
        self.values = dict(env or {})
        self.budget = EXPANSION_FACTOR * len(config.render()) + EXPANSION_FLOOR

    def expand(self, command: Command, parts: Sequence[Part]) -> str:
        """``parts`` with known variables substituted (see :func:`expand_parts`), within the budget."""
        values = self.values
        size = 0
        for part in parts:
            size += len(values.get(part.text, part.text) if part.is_var else part.text) + 2
        self.budget -= size
        if self.budget < 0:
            raise self.config._error(
                command,
                "its variables expand to more text than the config could mean "
                "(a 'set' that doubles a variable, again and again?)",
                hint="fix the grub config in the image",
            )
        return expand_parts(parts, values)

    def track(self, command: Command) -> tuple[str, Token] | None:
        """Follow ``set NAME=VALUE`` and grub's bare ``NAME=VALUE`` command: the name and the word
        assigning it, if ``command`` is one."""
        if command.name == "set" and len(command.words) == 2:
            word = command.words[1]
        elif len(command.words) == 1 and _ASSIGNMENT.match(command.words[0].source):
            word = command.words[0]
        else:
            return None
        assignment = split_assignment(word)
        if assignment is None:
            return None
        name, parts = assignment
        value = self.expand(command, parts)
        if UNKNOWN in value:
            self.values.pop(name, None)
        else:
            self.values[name] = value
        return name, word


_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


class GrubConfig(KernelArgEditor):
    """A parsed grub.cfg that renders back byte-identical and edits with minimal byte changes."""

    def _parse(self) -> None:
        with gc_paused():
            limit = EDITED_MAX_TOKENS if self._edited else MAX_TOKENS
            tokens = tokenize(self._source, self.path, limit=limit)
            self._commands, self._menu_entries = parse_commands(self._source, tokens, self.path)

    @property
    def commands(self) -> list[Command]:
        """Every simple command, in file order."""
        self._model()
        return self._commands

    @property
    def menu_entries(self) -> list[MenuEntry]:
        """Every ``menuentry`` and ``submenu`` block, in the order they close."""
        self._model()
        return self._menu_entries

    def __str__(self) -> str:
        return self._text

    # ------------------------------------------------------------------ queries
    def find(self, names: Iterable[str]) -> list[Command]:
        """Every command named one of ``names``, in file order (menu entries included)."""
        wanted = frozenset(names)
        return [c for c in self.commands if c.name in wanted]

    def linux_commands(self) -> list[Command]:
        """The ``linux``/``linuxefi`` lines: where kernel arguments are edited."""
        return self.find(LINUX_COMMANDS)

    def initrd_commands(self) -> list[Command]:
        """The ``initrd``/``initrdefi`` lines: the initrds the media must hold."""
        return self.find(INITRD_COMMANDS)

    def search_commands(self) -> list[Command]:
        """The ``search`` lines: how grub finds the media (by label on liveos media)."""
        return self.find(SEARCH_COMMANDS)

    def has_blscfg(self) -> bool:
        """The config boots BLS entries (Fedora, Azure Linux 4): kernel args live in the entries."""
        return bool(self.find(["blscfg"]))

    def env_files(self, env: Mapping[str, str] | None = None) -> list[str]:
        """Files read by ``load_env -f FILE``, variables resolved where ``set`` defines them."""
        scope = _Scope(self, env)
        out = []
        for command in self.commands:
            scope.track(command)
            if command.name != "load_env":
                continue
            for i, word in enumerate(command.args):
                if word.literal in ("-f", "--file") and i + 1 < len(command.args):
                    target = command.args[i + 1]
                    path = scope.expand(command, target.parts)
                    out.append(target.template() if UNKNOWN in path else path)
        return out

    def variables(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """Values of ``set NAME=VALUE`` in file order (``env``: e.g. values from ``load_env`` files)."""
        scope = _Scope(self, env)
        for command in self.commands:
            scope.track(command)
        return scope.values

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
        scope = _Scope(self, env)
        out: dict[str, None] = {}  # unique, in file order
        for command in self.commands:
            scope.track(command)
            if command.name not in names:
                continue
            words = command.args[:1] if names is LINUX_COMMANDS else command.args
            if not words:
                raise self._error(command, f"'{command.name}' has no file path")
            for word in words:
                path = DEVICE.sub("", scope.expand(command, word.parts))
                if UNKNOWN in path:
                    unknown = path.split(UNKNOWN)[1]
                    raise self._error(
                        command,
                        f"cannot resolve ${shown(unknown)[1:-1]} in {shown(word.source)}",
                        hint="pass the variables of the env files it loads "
                        f"({', '.join(self.env_files()) or 'none found'}) as env=",
                    )
                out[path] = None
        return list(out)

    def kernel_lines(self, env: Mapping[str, str] | None = None) -> list[KernelLine]:
        """Every ``linux`` command with its menu path, kernel, the initrds loaded after it in the
        same entry, and its arguments (variables from ``set`` resolved in the paths)."""
        scope = _Scope(self, env)
        lines: list[KernelLine] = []
        initrds: list[list[str]] = []  # of each line: one list (a tuple grown per initrd is quadratic)
        for command in self.commands:
            scope.track(command)
            if command.name in LINUX_COMMANDS:
                site = self._linux_site(command)
                kernel = _shown_path(scope.expand(command, command.words[1].parts))
                lines.append(KernelLine(command.menu, kernel, (), site.args))
                initrds.append([])
            elif command.name in INITRD_COMMANDS and lines and lines[-1].menu == command.menu:
                initrds[-1].extend(
                    DEVICE.sub("", scope.expand(command, w.parts)).replace(UNKNOWN, "$")
                    for w in command.args
                )
        return [
            KernelLine(line.menu, line.kernel, tuple(paths), line.args)
            for line, paths in zip(lines, initrds, strict=True)
        ]

    def _error(self, command: Command, message: str, hint: str | None = None) -> ImageError:
        """An error about ``command`` naming the file and line (messages quote hostile text shortened)."""
        line = self._source.count("\n", 0, command.start) + 1  # the text the command was parsed from
        where = f"{self.path}:{line}" if self.path else f"line {line}"
        return ImageError(f"grub config {where}: {message}", path=self.path, hint=hint)

    # ------------------------------------------------------------------ kernel argument edits
    def _linux_site(self, command: Command) -> ArgSite:
        words = command.words
        if len(words) < 2:
            raise self._error(command, f"'{command.name}' has no kernel path")
        if len(words) - 2 > MAX_KERNEL_ARGS:
            raise self._error(command, f"'{command.name}' has more than {MAX_KERNEL_ARGS} arguments")
        args = words[2:]
        prev_ends = tuple(words[i + 1].end for i in range(len(args)))
        return ArgSite(tuple(args), prev_ends, words[1].end)

    def _arg_sites(self) -> list[ArgSite]:
        return [self._linux_site(command) for command in self.linux_commands()]

    # ------------------------------------------------------------------ search
    def set_search_label(self, label: str) -> Self:
        """Every ``search`` finds the media by volume label, setting the variable it set before."""
        splices = []
        for command in self.search_commands():
            text = f"search --no-floppy {_search_set(command)} --label {quote(label)}"
            if self._text[command.start : command.end] != text:
                splices.append(Splice(command.start, command.end, text))
        return self._apply(splices)

    def known_label(self) -> str | None:
        """The label of the config's ``search --label`` / ``search.fs_label`` (the last one wins)."""
        found = None
        for command in self.search_commands():
            label = _search_label(command)
            if label is not None:
                found = label
        return found

    def remove_search(self) -> Self:
        """Drop every ``search`` (PXE: grub's root already is the TFTP server)."""
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
        return self._apply(splices)

    def _removal(self, command: Command) -> Splice:
        """The splice that deletes ``command``: its line when it is alone on it, with its ``;``.

        Only the blanks next to the command are looked at (never the whole line: a hostile line
        may hold a hundred thousand commands).
        """
        text = self._text
        term = command.terminator
        if term is not None and term.kind is TokenKind.SEMI:
            blanks = _BLANKS.match(text, term.end)
            return Splice(command.start, blanks.end() if blanks else term.end, "")
        if term is None or term.kind is TokenKind.NEWLINE:
            line_start = command.start
            while line_start > 0 and text[line_start - 1] in " \t":
                line_start -= 1
            if line_start == 0 or text[line_start - 1] == "\n":
                return Splice(line_start, term.end if term else command.end, "")
        return Splice(command.start, command.end, "")

    # ------------------------------------------------------------------ paths
    def set_initrd(self, path: str) -> Self:
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
        return self._apply(splices)

    def prefix_boot_paths(self, prefix: str = "/boot") -> Self:
        """Kernel/initrd paths relative to a separate /boot partition get ``prefix`` (``/vmlinuz`` ->
        ``/boot/vmlinuz``); a leading ``$var`` assigned once, literally, gets it in that assignment.
        """
        prefix = "/" + prefix.strip("/")
        splices: dict[int, Splice] = {}
        scope = _Scope(self, None)
        sets: dict[str, list[Token]] = {}  # every assignment (``set x=``, ``x=``) of each variable
        for command in self.commands:
            assignment = scope.track(command)
            if assignment is not None:
                sets.setdefault(assignment[0], []).append(assignment[1])
            if command.name in LINUX_COMMANDS:
                words = command.args[:1]
            elif command.name in INITRD_COMMANDS:
                words = command.args
            else:
                continue
            for word in words:
                splice = self._prefix_word(command, word, prefix, scope, sets)
                if splice is not None:
                    splices[splice.start] = splice
        return self._apply(list(splices.values()))

    def replace(self, command: Command, text: str) -> Self:
        """Replace one command (its words, not its terminator) with ``text``."""
        return self._apply([Splice(command.start, command.end, text)])

    def _prefix_word(
        self, command: Command, word: Token, prefix: str, scope: _Scope, sets: Mapping[str, list[Token]]
    ) -> Splice | None:
        values = scope.values
        resolved = DEVICE.sub("", scope.expand(command, word.parts))
        if resolved == prefix or resolved.startswith(prefix + "/"):
            return None
        if not resolved.startswith("/"):  # 'vmlinuz', '$unknown/x': no path to put under /boot
            return None
        first = word.parts[0]
        if first.is_var:
            # '$bootprefix/vmlinuz' with 'set bootprefix=' (empty): fix the one literal assignment.
            head = values.get(first.text)
            assigned = sets.get(first.text, [])
            if head is None or head == prefix or head.startswith(prefix + "/") or len(assigned) != 1:
                return None
            set_word = assigned[0]
            split = split_assignment(set_word)
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

    # ------------------------------------------------------------------ rich views (notebooks, IPython)
    def __repr__(self) -> str:
        return views.safe_text(lambda: _config_line(self), f"<GrubConfig {self.path or ''}>")

    def _repr_html_(self) -> str:
        return views.safe_html(lambda: _config_html(self), "GrubConfig")

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, lambda: _config_text(self), short="<GrubConfig>")


#: Most menu entries and kernel lines a view lists (a hostile config may hold thousands).
MAX_SHOWN = 100


def _config_line(config: GrubConfig) -> str:
    bls = ", BLS (blscfg)" if config.has_blscfg() else ""
    where = f" {config.path}" if config.path else ""
    return (
        f"<GrubConfig{where}: {len(config.menu_entries)} menu entries, "
        f"{len(config.linux_commands())} kernel lines{bls}>"
    )


def _menu_rows(config: GrubConfig) -> list[tuple[str, str]]:
    entries = sorted(config.menu_entries, key=lambda e: e.start)[:MAX_SHOWN]  # file order, not closing order
    return [(e.kind, " > ".join(e.path)) for e in entries]


def _kernel_rows(config: GrubConfig) -> list[tuple[str, str, str, str]]:
    return [
        (" > ".join(k.menu) or "(top level)", k.kernel, " ".join(k.initrds), k.args.render())
        for k in config.kernel_lines()[:MAX_SHOWN]
    ]


def _config_text(config: GrubConfig) -> str:
    lines = [_config_line(config)]
    lines += [f"  {kind} {title}" for kind, title in _menu_rows(config)]
    lines.append("kernel lines:")
    lines += [f"  {menu}: linux {kernel} {args}".rstrip() for menu, kernel, _, args in _kernel_rows(config)]
    return "\n".join(lines)


def _config_html(config: GrubConfig) -> str:
    facts: list[tuple[str, object]] = [("path", config.path or "(text)"), ("BLS", config.has_blscfg())]
    label = config.known_label()
    if label is not None:
        facts.append(("search label", label))
    try:
        kernels = views.html_table(
            ("menu entry", "kernel", "initrds", "kernel command line"),
            _kernel_rows(config),
            caption="kernel lines",
        )
    except LiveOSError as error:
        kernels = views.html_kv([("kernel lines", str(error).splitlines()[0])])
    return views.html_block(
        _config_line(config),
        views.html_kv(facts),
        views.html_table(("kind", "title"), _menu_rows(config), caption="menu entries"),
        kernels,
    )


def _search_set(command: Command) -> str:
    """The ``--set=VAR`` word setting the variable the ``search`` set (``--set``/``-s`` alone: root).

    A name that is not plain (quoted, expanded) keeps its own spelling as one word: written bare it
    could become several words or commands, and the edit would change again when repeated.
    """
    if command.name != "search":
        positional = [w for w in command.args if not w.template().startswith("-")]
        if len(positional) < 2:
            return "--set=root"
        var = positional[1]
        if not var.template():
            return "--set=root"
        return f"--set={var.template()}" if _VAR_NAME.fullmatch(var.template()) else f"--set={var.source}"
    for word in command.args:
        template = word.template()
        if template.startswith("--set="):
            name = template.split("=", 1)[1]
            if not name:
                return "--set=root"
            return f"--set={name}" if _VAR_NAME.fullmatch(name) else word.source
    return "--set=root"


def _search_label(command: Command) -> str | None:
    """The label a ``search --label L`` / ``search -l L`` / ``search.fs_label L`` looks for."""
    args = [w.literal for w in command.args]
    if command.name == "search.fs_label":
        positional = [a for a in args if a is not None and not a.startswith("-")]
        return positional[0] if positional else None
    if command.name != "search" or not any(a in ("--label", "-l") for a in args):
        return None
    positional = [a for a in args if a is not None and not a.startswith("-")]
    return positional[0] if positional else None


def _shown_path(expanded: str) -> str:
    """An expanded path with ``(device)`` dropped and unknown variables shown as ``$name``."""
    return DEVICE.sub("", expanded).replace(UNKNOWN + "", "$", 1).replace(UNKNOWN, "")
