"""Boot Loader Specification entries (``/boot/loader/entries/*.conf``) and grubenv, edited losslessly.

Fedora and Azure Linux 4 boot through grub's ``blscfg``: the kernel arguments live in each entry's
``options`` (possibly ``$kernelopts`` from grubenv). An unedited entry renders byte-identical;
``options`` edits splice only the changed arguments. For PXE (TFTP cannot list a directory) the
entries are rendered as plain ``menuentry`` blocks, newest kernel first, rescue entries skipped.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from liveos.errors import ImageError
from liveos.grub.config import GrubConfig, KernelArgEditor, Splice, _ArgSite
from liveos.grub.kernelargs import ArgSyntax, KernelArg, KernelArgs
from liveos.grub.lexer import Token, quote, tokenize

#: Keys that point at binaries grub's blscfg cannot boot the classic way.
UNSUPPORTED_KEYS = ("efi", "uki", "uki-url")
SINGLE_KEYS = ("title", "version", "linux")


@dataclass(frozen=True)
class BlsLine:
    key: str
    value: str
    start: int  #: offset of the line
    key_end: int  #: offset just past the key
    value_start: int
    value_end: int  #: end of the value (before trailing blanks and the newline)
    end: int  #: offset just past the newline


def _shift(token: Token, delta: int) -> Token:
    parts = tuple(dataclasses.replace(p, start=p.start + delta, end=p.end + delta) for p in token.parts)
    return dataclasses.replace(token, start=token.start + delta, end=token.end + delta, parts=parts)


class BlsEntry(KernelArgEditor):
    """One BLS entry file. Other keys (``grub_users``, ``grub_arg``, ``grub_class``…) are kept."""

    @classmethod
    def read(cls, path: Path) -> BlsEntry:
        return cls(path.read_text(), str(path))

    def _error(self, message: str) -> ImageError:
        return ImageError(
            f"BLS entry {self.path or ''}: {message}".replace(" :", ":"),
            path=self.path,
            hint="fix or remove the entry under /boot/loader/entries in the image",
        )

    def _parse(self) -> None:
        lines: list[BlsLine] = []
        offset = 0
        for raw in self._text.splitlines(keepends=True):
            start, offset = offset, offset + len(raw)
            body = raw.rstrip("\r\n")
            match = re.match(r"[ \t]*(\S+)[ \t]*", body)
            if match is None or match.group(1).startswith("#"):
                continue
            value = body[match.end() :].rstrip(" \t")
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
        self.lines = lines
        for key in UNSUPPORTED_KEYS:
            if self.values(key):
                raise self._error(f"uses the '{key}' key, which grub's blscfg cannot boot")
        for key in SINGLE_KEYS:
            if len(self.values(key)) > 1:
                raise self._error(f"has more than one '{key}' line")
        if not self.values("linux"):
            raise self._error("has no 'linux' line")

    def values(self, key: str) -> list[str]:
        return [line.value for line in self.lines if line.key == key]

    def get(self, key: str) -> str | None:
        values = self.values(key)
        return values[0] if values else None

    @property
    def title(self) -> str:
        return self.get("title") or self.version or (Path(self.path).stem if self.path else "Linux")

    @property
    def version(self) -> str:
        return self.get("version") or ""

    @property
    def linux(self) -> str:
        return self.values("linux")[0]

    @property
    def initrds(self) -> list[str]:
        return [path for value in self.values("initrd") for path in value.split()]

    @property
    def is_rescue(self) -> bool:
        name = Path(self.path).name if self.path else ""
        return "rescue" in self.title.lower() or "rescue" in self.version or "rescue" in name

    # ------------------------------------------------------------------ options
    def _options_site(self) -> _ArgSite | None:
        words: list[Token] = []
        prev_ends: list[int] = []
        option_lines = [line for line in self.lines if line.key == "options"]
        if not option_lines:
            return None
        for line in option_lines:
            value = self._text[line.value_start : line.value_end]
            tokens = [_shift(t, line.value_start) for t in tokenize(value, self.path)]
            previous = line.key_end
            for token in tokens:
                words.append(token)
                prev_ends.append(previous)
                previous = token.end
        return _ArgSite(tuple(words), tuple(prev_ends), option_lines[0].key_end)

    @property
    def options(self) -> KernelArgs:
        site = self._options_site()
        return site.args if site else KernelArgs()

    def edit_args(self, edit: Callable[[KernelArgs], KernelArgs]) -> int:
        site = self._options_site()
        if site is not None:
            return self._apply(site.diff(edit(site.args)))
        target = edit(KernelArgs())
        if not len(target):
            return 0
        return self._apply([self._append_line("options", target.render())])

    def _append_line(self, key: str, value: str) -> Splice:
        sep = "" if not self._text or self._text.endswith("\n") else "\n"
        end = len(self._text)
        return Splice(end, end, f"{sep}{key} {value}\n")

    def inline_kernelopts(self, kernelopts: KernelArgs) -> None:
        """Replace ``$kernelopts`` by its value from grubenv, so the entry stands on its own."""
        self.edit_args(lambda args: _inline(args, kernelopts))

    # ------------------------------------------------------------------ paths
    def set_initrd(self, path: str) -> None:
        """One ``initrd`` line loading ``path`` (the first line is rewritten, the others dropped)."""
        initrd_lines = [line for line in self.lines if line.key == "initrd"]
        if not initrd_lines:
            self._apply([self._append_line("initrd", path)])
            return
        first, *rest = initrd_lines
        splices = [Splice(line.start, line.end, "") for line in rest]
        if first.value != path:
            splices.append(Splice(first.value_start, first.value_end, path))
        self._apply(splices)

    def prefix_boot_paths(self, prefix: str = "/boot") -> None:
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
        self._apply(splices)

    # ------------------------------------------------------------------ menu
    def to_menuentry(self, kernelopts: KernelArgs | None = None) -> str:
        """The entry as a grub ``menuentry`` block (what blscfg would have built at boot)."""
        options = self.options if kernelopts is None else _inline(self.options, kernelopts)
        linux = " ".join([quote(self.linux), options.render()]).rstrip()
        lines = [f"menuentry {_single_quote(self.title)} {{", f"\tlinux {linux}"]
        if self.initrds:
            lines.append("\tinitrd " + " ".join(quote(p) for p in self.initrds))
        return "\n".join([*lines, "}"]) + "\n"


def _inline(args: KernelArgs, kernelopts: KernelArgs) -> KernelArgs:
    out: list[KernelArg] = []
    for arg in args:
        if arg.is_kernelopts:
            out.extend(KernelArg(a.text, a.expands) for a in kernelopts if KernelArg(a.text) not in out)
        else:
            out.append(arg)
    return KernelArgs(tuple(out))


def _single_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def load_entries(directory: Path) -> list[BlsEntry]:
    """Every ``*.conf`` in a ``loader/entries`` directory, sorted by file name."""
    if not directory.is_dir():
        raise ImageError(f"no BLS entries directory {directory}", path=directory)
    return [BlsEntry.read(path) for path in sorted(directory.glob("*.conf")) if path.is_file()]


# ---------------------------------------------------------------------- version order
_SEGMENT = re.compile(r"[0-9]+|[A-Za-z]+")


def rpmvercmp(a: str, b: str) -> int:
    """rpm's version comparison (``~`` sorts before anything, ``^`` after the base): -1, 0 or 1."""
    if a == b:
        return 0
    i = j = 0
    while True:
        i = _skip_separators(a, i)
        j = _skip_separators(b, j)
        a_end, b_end = i >= len(a), j >= len(b)
        a_tilde, b_tilde = not a_end and a[i] == "~", not b_end and b[j] == "~"
        if a_tilde or b_tilde:
            if not a_tilde:
                return 1
            if not b_tilde:
                return -1
            i, j = i + 1, j + 1
            continue
        a_caret, b_caret = not a_end and a[i] == "^", not b_end and b[j] == "^"
        if a_caret or b_caret:
            if a_end:
                return -1
            if b_end:
                return 1
            if not a_caret:
                return 1
            if not b_caret:
                return -1
            i, j = i + 1, j + 1
            continue
        if a_end or b_end:
            break
        ma = _SEGMENT.match(a, i)
        mb = _SEGMENT.match(b, j)
        assert ma is not None and mb is not None
        sa, sb = ma.group(), mb.group()
        if sa.isdigit() != sb.isdigit():
            return 1 if sa.isdigit() else -1  # numeric segments are newer than alphabetic
        if sa.isdigit():
            na, nb = int(sa), int(sb)
            if na != nb:
                return 1 if na > nb else -1
        elif sa != sb:
            return 1 if sa > sb else -1
        i, j = ma.end(), mb.end()
    if i >= len(a) and j >= len(b):
        return 0
    return -1 if i >= len(a) else 1


def _skip_separators(text: str, index: int) -> int:
    while (
        index < len(text)
        and not (text[index].isascii() and text[index].isalnum())
        and text[index] not in "~^"
    ):
        index += 1
    return index


class _Version:
    def __init__(self, text: str) -> None:
        self.text = text

    def __lt__(self, other: _Version) -> bool:
        return rpmvercmp(self.text, other.text) < 0


def _version_of(entry: BlsEntry) -> str:
    if entry.version:
        return entry.version
    name = Path(entry.linux).name
    return name.split("-", 1)[1] if "-" in name else name


def boot_order(entries: Iterable[BlsEntry]) -> list[BlsEntry]:
    """Non-rescue entries, newest version first (what grub's blscfg shows first)."""
    live = [e for e in entries if not e.is_rescue]
    return sorted(live, key=lambda e: _Version(_version_of(e)), reverse=True)


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


# ---------------------------------------------------------------------- grubenv
GRUBENV_HEADER = b"# GRUB Environment Block\n"
GRUBENV_SIZE = 1024


class GrubEnv:
    """grub's environment block: a header, ``key=value`` lines, padded with ``#`` to 1024 bytes."""

    def __init__(self, data: bytes, path: str | None = None) -> None:
        self.path = path
        self._raw = data
        self._size = max(len(data), GRUBENV_SIZE)
        if not data.startswith(GRUBENV_HEADER):
            raise ImageError(
                "not a grub environment block (header missing)",
                path=path,
                hint="recreate it with grub-editenv FILE create",
            )
        self._vars = parse_env_vars(data[len(GRUBENV_HEADER) :].decode("utf-8", "replace"))
        self._dirty = False

    @classmethod
    def parse(cls, data: bytes, path: str | None = None) -> GrubEnv:
        return cls(data, path)

    @classmethod
    def new(cls) -> GrubEnv:
        return cls(GRUBENV_HEADER + b"#" * (GRUBENV_SIZE - len(GRUBENV_HEADER)))

    def items(self) -> list[tuple[str, str]]:
        return list(self._vars.items())

    def as_dict(self) -> dict[str, str]:
        return dict(self._vars)

    def get(self, key: str) -> str | None:
        return self._vars.get(key)

    def set(self, key: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise ImageError(f"invalid grubenv variable name {key!r}", path=self.path)
        if self._vars.get(key) != value:
            self._vars[key] = value
            self._dirty = True

    def unset(self, key: str) -> None:
        if self._vars.pop(key, None) is not None:
            self._dirty = True

    @property
    def kernelopts(self) -> KernelArgs | None:
        value = self.get("kernelopts")
        return None if value is None else KernelArgs.parse(value, ArgSyntax.KERNEL)

    def set_kernelopts(self, args: KernelArgs) -> None:
        self.set("kernelopts", args.render(ArgSyntax.KERNEL))

    def render(self) -> bytes:
        if not self._dirty:
            return self._raw
        body = "".join(f"{k}={_escape_env(v)}\n" for k, v in self._vars.items()).encode()
        data = GRUBENV_HEADER + body
        if len(data) > self._size:
            raise ImageError(
                f"grub environment block too small for its variables ({len(data)} > {self._size} bytes)",
                path=self.path,
                hint="shorten kernelopts or other grubenv variables",
            )
        return data + b"#" * (self._size - len(data))


def _escape_env(value: str) -> str:
    return re.sub(r"([\\\n])", r"\\\1", value)


def parse_env_vars(text: str) -> dict[str, str]:
    """``key=value`` lines of an env file (grubenv body or a plain file like AZL's mariner.cfg)."""
    values: dict[str, str] = {}
    line: list[str] = []
    lines: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            line.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            lines.append("".join(line))
            line = []
        else:
            line.append(char)
    for entry in lines:
        if entry.startswith("#") or "=" not in entry:
            continue
        key, _, value = entry.partition("=")
        values[key] = value
    return values


__all__ = [
    "BlsEntry",
    "GrubEnv",
    "boot_order",
    "inline_bls",
    "load_entries",
    "parse_env_vars",
    "render_menu",
    "rpmvercmp",
]
