"""GrubConfig: a lossless model of grub.cfg with the edits a live medium needs.

The config is kept as its original text plus a parse (:mod:`liveos.grub.parser`); every edit is
a set of byte splices (:mod:`liveos.grub.splice`), so ``parse(text).render() == text`` and an
edited config differs from the original only where it was edited.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Self

from liveos.errors import ImageError
from liveos.grub.kernelargs import KernelArgs
from liveos.grub.lexer import PartKind, Token, TokenKind, quote, tokenize
from liveos.grub.parser import (
    DEVICE,
    INITRD_COMMANDS,
    LINUX_COMMANDS,
    SEARCH_COMMANDS,
    UNKNOWN,
    Command,
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


class GrubConfig(KernelArgEditor):
    """A parsed grub.cfg that renders back byte-identical and edits with minimal byte changes."""

    def _parse(self) -> None:
        tokens = tokenize(self._text, self.path)
        self.commands, self.menu_entries = parse_commands(self._text, tokens, self.path)

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
                    path = expand_parts(target.parts, values)
                    out.append(target.template() if UNKNOWN in path else path)
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
        assignment = split_assignment(word)
        if assignment is None:
            return
        name, parts = assignment
        value = expand_parts(parts, values)
        if UNKNOWN in value:
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
                path = DEVICE.sub("", expand_parts(word.parts, values))
                if UNKNOWN in path:
                    unknown = path.split(UNKNOWN)[1]
                    raise self._error(
                        command,
                        f"cannot resolve ${unknown} in '{word.source}'",
                        hint="pass the variables of the env files it loads "
                        f"({', '.join(self.env_files()) or 'none found'}) as env=",
                    )
                if path not in out:
                    out.append(path)
        return out

    def kernel_lines(self, env: Mapping[str, str] | None = None) -> list[KernelLine]:
        """Every ``linux`` command with its menu path, kernel, the initrds loaded after it in the
        same entry, and its arguments (variables from ``set`` resolved in the paths)."""
        values = dict(env or {})
        lines: list[KernelLine] = []
        for command in self.commands:
            self._track_set(command, values)
            if command.name in LINUX_COMMANDS:
                site = self._linux_site(command)
                kernel = _shown_path(command.args[0], values)
                lines.append(KernelLine(command.menu, kernel, (), site.args))
            elif command.name in INITRD_COMMANDS and lines and lines[-1].menu == command.menu:
                paths = tuple(
                    DEVICE.sub("", expand_parts(w.parts, values)).replace(UNKNOWN, "$") for w in command.args
                )
                last = lines[-1]
                lines[-1] = KernelLine(last.menu, last.kernel, last.initrds + paths, last.args)
        return lines

    def _error(self, command: Command, message: str, hint: str | None = None) -> ImageError:
        line = self._text.count("\n", 0, command.start) + 1
        where = f"{self.path}:{line}" if self.path else f"line {line}"
        return ImageError(f"grub config {where}: {message}", path=self.path, hint=hint)

    # ------------------------------------------------------------------ kernel argument edits
    def _linux_site(self, command: Command) -> ArgSite:
        words = command.words
        if len(words) < 2:
            raise self._error(command, f"'{command.name}' has no kernel path")
        args = words[2:]
        prev_ends = tuple(words[i + 1].end for i in range(len(args)))
        return ArgSite(tuple(args), prev_ends, words[1].end)

    def _arg_splices(self, edit: Callable[[KernelArgs], KernelArgs]) -> list[Splice]:
        """The splices that apply ``edit`` to the arguments of every ``linux`` command."""
        splices: list[Splice] = []
        for command in self.linux_commands():
            site = self._linux_site(command)
            splices += site.diff(edit(site.args))
        return splices

    # ------------------------------------------------------------------ search
    def set_search_label(self, label: str) -> Self:
        """Every ``search`` finds the media by volume label, setting the variable it set before."""
        splices = []
        for command in self.search_commands():
            text = f"search --no-floppy --set={_search_var(command)} --label {quote(label)}"
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
        ``/boot/vmlinuz``); a leading ``$var`` set by a literal ``set`` gets it in that ``set``.
        """
        prefix = "/" + prefix.strip("/")
        splices: dict[int, Splice] = {}
        values: dict[str, str] = {}
        sets: dict[str, list[Command]] = {}
        for command in self.commands:
            self._track_set(command, values)
            if command.name == "set" and len(command.args) == 1:
                assignment = split_assignment(command.args[0])
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
        return self._apply(list(splices.values()))

    def replace(self, command: Command, text: str) -> Self:
        """Replace one command (its words, not its terminator) with ``text``."""
        return self._apply([Splice(command.start, command.end, text)])

    def _prefix_word(
        self, word: Token, prefix: str, values: Mapping[str, str], sets: Mapping[str, list[Command]]
    ) -> Splice | None:
        resolved = DEVICE.sub("", expand_parts(word.parts, values))
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


def _shown_path(word: Token, values: Mapping[str, str]) -> str:
    """A path word with known variables resolved, ``(device)`` dropped, unknown ones as ``$name``."""
    return (
        DEVICE.sub("", expand_parts(word.parts, values)).replace(UNKNOWN + "", "$", 1).replace(UNKNOWN, "")
    )
