"""grub's environment block (``grubenv``) and plain ``key=value`` env files, edited in place."""

from __future__ import annotations

import re

from liveos.errors import ImageError
from liveos.grub.kernelargs import ArgSyntax, KernelArgs

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
        """Read a grubenv block (``path`` names it in errors)."""
        return cls(data, path)

    @classmethod
    def new(cls) -> GrubEnv:
        """An empty 1024-byte block, as ``grub-editenv create`` writes."""
        return cls(GRUBENV_HEADER + b"#" * (GRUBENV_SIZE - len(GRUBENV_HEADER)))

    def items(self) -> list[tuple[str, str]]:
        """Every variable and its value, in file order."""
        return list(self._vars.items())

    def get(self, key: str) -> str | None:
        """The value of ``key``; None if it is not set."""
        return self._vars.get(key)

    def set(self, key: str, value: str) -> None:
        """Set ``key`` (an invalid name is the image's fault: :class:`~liveos.errors.ImageError`)."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise ImageError(f"invalid grubenv variable name {key!r}", path=self.path)
        if self._vars.get(key) != value:
            self._vars[key] = value
            self._dirty = True

    @property
    def kernelopts(self) -> KernelArgs | None:
        """The ``kernelopts`` variable (the kernel command line BLS entries expand); None if unset."""
        value = self.get("kernelopts")
        return None if value is None else KernelArgs.parse(value, ArgSyntax.KERNEL, path=self.path)

    def set_kernelopts(self, args: KernelArgs) -> None:
        """Replace ``kernelopts`` with ``args``."""
        self.set("kernelopts", args.render(ArgSyntax.KERNEL))

    def render(self) -> bytes:
        """The block's bytes: unchanged when nothing was set, else rewritten at its original size."""
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


def _absent(text: str, count: int) -> list[str]:
    """``count`` characters that do not occur in ``text`` (markers for the replaces below)."""
    present = set(text)
    out: list[str] = []
    code = 0xE000  # private use: tried first, absent from any real file
    while len(out) < count:
        if chr(code) not in present:
            out.append(chr(code))
        code = (code + 1) % 0x110000
    return out


def parse_env_vars(text: str) -> dict[str, str]:
    """``key=value`` lines of an env file (grubenv body or a plain file like AZL's mariner.cfg).

    A backslash escapes the next character (a newline too); only newline-terminated lines count.
    Done with whole-string replaces (a backslash run pairs up left to right, as ``str.replace``
    does), never a loop over the characters: a hostile 1 MiB file takes milliseconds.
    """
    if "\\" in text:
        backslash, newline, end = _absent(text, 3)
        text = text.replace("\\\\", backslash).replace("\\\n", newline)
        # every backslash left escapes a character that stands for itself; every newline ends a line
        text = text.replace("\\", "").replace("\n", end).replace(newline, "\n").replace(backslash, "\\")
        lines = text.split(end)[:-1]
    else:
        lines = text.split("\n")[:-1]
    pairs = (line.partition("=") for line in lines if "=" in line and not line.startswith("#"))
    return {key: value for key, _, value in pairs}
