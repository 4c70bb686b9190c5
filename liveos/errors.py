"""Exceptions, split by whose fault the failure is.

Every liveos failure is a :class:`LiveOSError`. Its subclasses say who has to act:

* :class:`UsageError` -- the caller passed something invalid (option, path, URL).
* :class:`ImageError` -- the input image (or a file in it) is broken or unsupported.
* :class:`HostError` -- the build machine lacks a tool, a privilege or a kernel feature.
* :class:`CommandError` -- an external command failed; carries argv, exit code and stderr tail.
* :class:`InternalError` -- a bug in liveos itself.

Messages name the file or step and a fix (``hint``), so a user can act without reading code.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class LiveOSError(Exception):
    """Base class of every error liveos raises on purpose."""

    def __init__(self, message: str, *, path: str | Path | None = None, hint: str | None = None) -> None:
        self.message = message
        self.path = Path(path) if path is not None else None
        self.hint = hint
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        if self.path is not None and str(self.path) not in text:
            text += f" (file: {self.path})"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class UsageError(LiveOSError):
    """The caller's input is invalid: an option, an argument, an output path."""


class ImageError(LiveOSError):
    """The input image or a file inside it is broken, hostile or of an unsupported kind."""


class HostError(LiveOSError):
    """The host cannot do the job: a missing tool, not root, no loop device or kernel feature."""


class MissingToolError(HostError):
    """An external program is not installed."""

    def __init__(self, tool: str, package: str | None) -> None:
        hint = f"apt-get install {package}" if package else f"install '{tool}' and make sure it is on PATH"
        super().__init__(f"required tool '{tool}' was not found on PATH", hint=hint)
        self.tool = tool
        self.package = package


class CommandError(LiveOSError):
    """An external command exited non-zero (or could not be started)."""

    def __init__(
        self,
        argv: Sequence[str],
        returncode: int,
        stderr: str,
        *,
        step: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr
        self.step = step
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        what = f"{step}: " if step else ""
        message = f"{what}command failed with exit code {returncode}: {' '.join(self.argv)}"
        if tail:
            message += "\n  stderr (last lines):\n    " + tail.replace("\n", "\n    ")
        super().__init__(message, hint=hint)


class InternalError(LiveOSError):
    """A bug in liveos: an invariant did not hold. Please report it."""
