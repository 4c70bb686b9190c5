"""Boot Loader Specification entries (``/boot/loader/entries/*.conf``) and grubenv, edited losslessly.

Fedora and Azure Linux 4 boot through grub's ``blscfg``: the kernel arguments live in each entry's
``options`` (possibly ``$kernelopts`` from grubenv). An unedited entry renders byte-identical;
``options`` edits splice only the changed arguments. For PXE (TFTP cannot list a directory) the
entries are rendered as plain ``menuentry`` blocks, newest kernel first, rescue entries skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from liveos.errors import ImageError
from liveos.grub.config import GrubConfig
from liveos.grub.kernelargs import MAX_KERNEL_ARGS, KernelArg, KernelArgs
from liveos.grub.lexer import Token, TokenKind, TooManyTokens, quote, syntax_error, tokenize
from liveos.grub.splice import ArgSite, KernelArgEditor, Splice
from liveos.versions import Version

#: Keys that point at binaries grub's blscfg cannot boot the classic way.
UNSUPPORTED_KEYS = ("efi", "uki", "uki-url")
#: Longest ``version`` and ``linux`` file name accepted (NAME_MAX): versions are compared number by
#: number, and a hostile entry's thousand-digit "number" is no version.
MAX_NAME = 255
SINGLE_KEYS = ("title", "version", "linux")
#: A line's key: the text before the first blank (space, tab; and carriage return, a blank to the
#: grub words of ``options`` too: deleting an argument must not glue the next one to the key).
_KEY = re.compile(r"[ \t\r]*([^ \t\r]+)[ \t\r]*")


@dataclass(frozen=True)
class BlsLine:
    """One ``key value`` line of a BLS entry, with the offsets an edit splices at."""

    key: str
    value: str
    start: int  #: offset of the line
    key_end: int  #: offset just past the key
    value_start: int
    value_end: int  #: end of the value (before trailing blanks and the newline)
    end: int  #: offset just past the newline


class BlsEntry(KernelArgEditor):
    """One BLS entry file. Other keys (``grub_users``, ``grub_arg``, ``grub_class``…) are kept."""

    def _error(self, message: str) -> ImageError:
        return ImageError(
            f"BLS entry {self.path or ''}: {message}".replace(" :", ":"),
            path=self.path,
            hint="fix or remove the entry under /boot/loader/entries in the image",
        )

    def _parse(self) -> None:
        lines: list[BlsLine] = []
        text = self._source
        offset = 0
        while offset < len(text):  # lines end at a newline only (not at \f, \v, \x85 ... as in splitlines)
            newline = text.find("\n", offset)
            start, offset = offset, len(text) if newline < 0 else newline + 1
            body = text[start:offset].rstrip("\r\n")
            match = _KEY.match(body)
            if match is None or match.group(1).startswith("#"):
                continue
            value = body[match.end() :].rstrip(" \t\r")
            lines.append(
                BlsLine(
                    key=match.group(1),
                    value=value,
                    start=start,
                    key_end=start + match.end(1),
                    value_start=start + match.end(),
                    value_end=start + match.end() + len(value),
                    end=offset,
                )
            )
        self._lines = lines
        for key in UNSUPPORTED_KEYS:
            if self.values(key):
                raise self._error(f"uses the '{key}' key, which grub's blscfg cannot boot")
        for key in SINGLE_KEYS:
            if len(self.values(key)) > 1:
                raise self._error(f"has more than one '{key}' line")
        if not self.values("linux"):
            raise self._error("has no 'linux' line")
        for what, value in (("version", self.version), ("linux file name", Path(self.linux).name)):
            if len(value) > MAX_NAME:
                raise self._error(f"its {what} is {len(value)} characters long, more than {MAX_NAME}")

    @property
    def lines(self) -> list[BlsLine]:
        """The ``key value`` lines, in file order (comments and blank lines left out)."""
        self._model()
        return self._lines

    def values(self, key: str) -> list[str]:
        """Every value of ``key``, in file order (keys like ``initrd`` may repeat)."""
        return [line.value for line in self.lines if line.key == key]

    def get(self, key: str) -> str | None:
        """The first value of ``key``; None if the entry has none."""
        values = self.values(key)
        return values[0] if values else None

    @property
    def title(self) -> str:
        """The menu title (falling back to the version, then the file name)."""
        return self.get("title") or self.version or (Path(self.path).stem if self.path else "Linux")

    @property
    def version(self) -> str:
        """The ``version`` key (the kernel version on most distributions), or ``""``."""
        return self.get("version") or ""

    @property
    def linux(self) -> str:
        """The kernel's path (the ``linux`` key)."""
        return self.values("linux")[0]

    @property
    def initrds(self) -> list[str]:
        """Every initrd path, in load order."""
        return [path for value in self.values("initrd") for path in value.split()]

    @property
    def is_rescue(self) -> bool:
        """Whether this is a rescue entry (by its title, version or file name)."""
        name = Path(self.path).name if self.path else ""
        return "rescue" in self.title.lower() or "rescue" in self.version or "rescue" in name

    # ------------------------------------------------------------------ options
    def _options_site(self) -> ArgSite | None:
        words: list[Token] = []
        prev_ends: list[int] = []
        option_lines = [line for line in self.lines if line.key == "options"]
        if not option_lines:
            return None
        for line in option_lines:
            try:
                tokens = tokenize(
                    self._text, self.path, start=line.value_start, end=line.value_end, limit=MAX_KERNEL_ARGS
                )
            except TooManyTokens as exc:
                raise _too_many_args(self.path) from exc
            previous = line.key_end
            for token in tokens:
                if token.kind is not TokenKind.WORD:
                    raise syntax_error(
                        self._text, token.start, f"unexpected {token.source!r} in the options", self.path
                    )
                words.append(token)
                prev_ends.append(previous)
                previous = token.end
        if len(words) > MAX_KERNEL_ARGS:
            raise _too_many_args(self.path)
        return ArgSite(tuple(words), tuple(prev_ends), option_lines[0].key_end)

    @property
    def options(self) -> KernelArgs:
        """The kernel arguments of the ``options`` line (empty when there is none)."""
        site = self._options_site()
        return site.args if site else KernelArgs()

    def _arg_sites(self) -> list[ArgSite] | None:
        site = self._options_site()
        return None if site is None else [site]

    def _arg_splices(self, edit: Callable[[KernelArgs], KernelArgs]) -> list[Splice]:
        """No ``options`` line: one is added if ``edit`` adds arguments."""
        target = edit(KernelArgs())
        return [self._append_line("options", target.render())] if len(target) else []

    def _append_line(self, key: str, value: str) -> Splice:
        sep = "" if not self._text or self._text.endswith("\n") else "\n"
        end = len(self._text)
        return Splice(end, end, f"{sep}{key} {value}\n")

    def inline_kernelopts(self, kernelopts: KernelArgs) -> Self:
        """Replace ``$kernelopts`` by its value from grubenv, so the entry stands on its own."""
        return self.edit_args(lambda args: _inline(args, kernelopts))

    # ------------------------------------------------------------------ paths
    def set_initrd(self, path: str) -> Self:
        """One ``initrd`` line loading ``path`` (the first line is rewritten, the others dropped)."""
        initrd_lines = [line for line in self.lines if line.key == "initrd"]
        if not initrd_lines:
            return self._apply([self._append_line("initrd", path)])
        first, *rest = initrd_lines
        splices = [Splice(line.start, line.end, "") for line in rest]
        if first.value != path:
            blank = "" if first.value_start > first.key_end else " "  # 'initrd' alone on its line
            splices.append(Splice(first.value_start, first.value_end, blank + path))
        return self._apply(splices)

    def prefix_boot_paths(self, prefix: str = "/boot") -> Self:
        """Paths relative to a separate /boot partition (``/vmlinuz-K``) get ``prefix``."""
        prefix = "/" + prefix.strip("/")
        splices = []
        for line in self.lines:
            if line.key not in ("linux", "initrd", "devicetree"):
                continue
            for match in re.finditer(r"\S+", line.value):
                path = match.group()
                if path.startswith("/") and not (path == prefix or path.startswith(prefix + "/")):
                    at = line.value_start + match.start()
                    splices.append(Splice(at, at, prefix))
        return self._apply(splices)

    # ------------------------------------------------------------------ menu
    def to_menuentry(self, kernelopts: KernelArgs | None = None) -> str:
        """The entry as a grub ``menuentry`` block (what blscfg would have built at boot)."""
        options = self.options if kernelopts is None else _inline(self.options, kernelopts)
        linux = " ".join([quote(self.linux), options.render()]).rstrip()
        lines = [f"menuentry {_single_quote(self.title)} {{", f"\tlinux {linux}"]
        if self.initrds:
            lines.append("\tinitrd " + " ".join(quote(p) for p in self.initrds))
        return "\n".join([*lines, "}"]) + "\n"


def _too_many_args(path: str | None) -> ImageError:
    return ImageError(
        f"BLS entry {path or ''}: its options have more than {MAX_KERNEL_ARGS} arguments (the kernel "
        "keeps only the first few KiB of its command line)".replace(" :", ":"),
        path=path,
        hint="fix or remove the entry under /boot/loader/entries in the image",
    )


def _inline(args: KernelArgs, kernelopts: KernelArgs) -> KernelArgs:
    out: list[KernelArg] = []
    seen: set[KernelArg] = set()  # a set: a hostile grubenv may hold thousands of arguments
    for arg in args:
        if arg.is_kernelopts:
            for opt in kernelopts:
                if KernelArg(opt.text) not in seen:
                    out.append(KernelArg(opt.text, opt.expands))
                    seen.add(out[-1])
        else:
            out.append(arg)
            seen.add(arg)
    return KernelArgs(tuple(out))


def _single_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------------- version order
def _version_of(entry: BlsEntry) -> str:
    if entry.version:
        return entry.version
    name = Path(entry.linux).name
    return name.split("-", 1)[1] if "-" in name else name


def boot_order(entries: Iterable[BlsEntry]) -> list[BlsEntry]:
    """Non-rescue entries, newest version first (what grub's blscfg shows first)."""
    live = [e for e in entries if not e.is_rescue]
    return sorted(live, key=lambda e: Version(_version_of(e)), reverse=True)


def render_menu(entries: Iterable[BlsEntry], kernelopts: KernelArgs | None = None) -> str:
    """``set default=0`` + one ``menuentry`` per bootable entry (for PXE: TFTP cannot list dirs)."""
    ordered = boot_order(entries)
    if not ordered:
        raise ImageError(
            "found no bootable (non-rescue) BLS entries to build the grub menu",
            hint="the image needs /boot/loader/entries/*.conf with a 'linux' line",
        )
    return "set default=0\n" + "".join(e.to_menuentry(kernelopts) for e in ordered)


def inline_bls(
    config: GrubConfig, entries: Iterable[BlsEntry], kernelopts: KernelArgs | None = None
) -> None:
    """Replace the ``blscfg`` command of ``config`` by the rendered menu entries."""
    commands = config.find(["blscfg"])
    if not commands:
        raise ImageError(
            "expected a 'blscfg' command in the grub config but found none",
            path=config.path,
            hint="this image does not boot BLS entries; edit its grub.cfg directly",
        )
    config.replace(commands[0], render_menu(entries, kernelopts).rstrip("\n"))


__all__ = [
    "BlsEntry",
    "boot_order",
    "inline_bls",
    "render_menu",
]
