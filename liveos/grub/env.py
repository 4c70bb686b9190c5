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
        return cls(data, path)

    @classmethod
    def new(cls) -> GrubEnv:
        return cls(GRUBENV_HEADER + b"#" * (GRUBENV_SIZE - len(GRUBENV_HEADER)))

    def items(self) -> list[tuple[str, str]]:
        return list(self._vars.items())

    def get(self, key: str) -> str | None:
        return self._vars.get(key)

    def set(self, key: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            raise ImageError(f"invalid grubenv variable name {key!r}", path=self.path)
        if self._vars.get(key) != value:
            self._vars[key] = value
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
