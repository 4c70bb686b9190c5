"""The caller's own files on the media: what they are, where they may go, and where not.

A :class:`MediaFile` is a host file or bytes placed at an absolute path of the media (the ISO's
root, the PXE bundle's TFTP root), next to what liveos writes -- cloud-init seeds, a README, a
vendor tool. It never goes into the OS (write those through :attr:`liveos.LiveOS.rootfs`).

A destination is checked twice. When it is set (:func:`validate_media_files`): absolute,
normalised, inside the media root, and off the paths the boot chain reads whatever the image
(``/EFI``, grub's directories, ``/boot/loader``, kernels and initrds in ``/boot``, ``/liveos``,
``/updates``, ``/.disk``). When a plan is made (:func:`liveos.media.plan.plan_media_files`):
not on, above or below any file the plan itself puts on the media (the PXE bundle's ISO, its
grub redirectors ...), and the source is a regular file.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.errors import UsageError

#: Mode of a media file when none is given.
DEFAULT_MODE = 0o644
#: Directories (lower-cased; media readers and firmware are case-insensitive) the boot chain owns.
RESERVED_TREES = (
    "/efi",  # firmware, shim and grub on removable media
    "/boot/loader",  # BLS entries
    "/liveos",  # the root image and the state file
    "/updates",  # dmsquash-live copies this over the live root at boot
    "/.disk",  # Debian's grub finds the CD by /.disk/info
)
#: Directories of grub's configuration: grub reads (sources) config files and its environment there.
GRUB_DIRS = ("/boot/grub", "/boot/grub2")
#: Name prefixes of kernels and initrds in /boot (grub.cfg and kdump refer to them by name).
BOOT_FILE_PREFIXES = ("vmlinuz", "vmlinux", "initrd", "initramfs", "efiboot")
_MODE_RE = re.compile(r"[0-7]{1,4}")


@dataclass(frozen=True)
class MediaFile:
    """One file the caller adds to the media: a host ``source`` file or ``content`` bytes (exactly
    one) at the absolute media path ``destination``, with permission bits ``mode`` (None: 0644)."""

    destination: str
    source: Path | None = None
    content: bytes | None = None
    mode: int | None = None

    def __post_init__(self) -> None:
        if (self.source is None) == (self.content is None):
            raise UsageError(
                f"media file {self.destination!r}: give either a source file or content, not "
                + ("both" if self.source is not None else "neither")
            )
        if self.source is not None:
            if not isinstance(self.source, (str, os.PathLike)):
                raise UsageError(f"media file {self.destination!r}: source {self.source!r} is not a path")
            object.__setattr__(self, "source", Path(self.source).absolute())
        if self.content is not None and not isinstance(self.content, (bytes, bytearray)):
            raise UsageError(f"media file {self.destination!r}: content must be bytes")
        if self.content is not None:
            object.__setattr__(self, "content", bytes(self.content))
        check_destination(self.destination)
        if self.mode is not None and (
            isinstance(self.mode, bool) or not isinstance(self.mode, int) or not 0 <= self.mode <= 0o7777
        ):
            raise UsageError(
                f"media file {self.destination}: permissions {self.mode!r} are not a mode (0 to 0o7777)",
                hint="e.g. 0o644, or 0o755 for a script",
            )

    def __str__(self) -> str:
        what = str(self.source) if self.source is not None else f"<{len(self.content or b'')} bytes>"
        return f"{what}:{self.destination}:{self.file_mode:o}"

    @property
    def path(self) -> PurePosixPath:
        """The destination as a media path."""
        return PurePosixPath(self.destination)

    @property
    def file_mode(self) -> int:
        """The permission bits the file gets on the media."""
        return DEFAULT_MODE if self.mode is None else self.mode

    @classmethod
    def parse(cls, text: str) -> MediaFile:
        """``SRC:DEST[:MODE]`` (the ``--add-file`` syntax; MODE octal, e.g. ``755``)."""
        parts = text.split(":")
        mode = None
        if len(parts) >= 3 and _MODE_RE.fullmatch(parts[-1]):
            mode = int(parts.pop(), 8)
        if len(parts) < 2 or not parts[-1] or not parts[0]:
            raise UsageError(
                f"--add-file {text!r} is not SRC:DEST[:MODE]",
                hint="e.g. --add-file ./seed/user-data:/cidata/user-data:644",
            )
        return cls(parts[-1], source=Path(":".join(parts[:-1])), mode=mode)


def check_destination(destination: object) -> PurePosixPath:
    """``destination`` as a media path if the caller may put a file there, else UsageError."""
    if not isinstance(destination, str) or not destination:
        raise UsageError(f"media file destination {destination!r} must be a non-empty string")
    if any(ord(c) < 32 or c in "\x7f\\" for c in destination):
        raise UsageError(
            f"media file destination {destination!r} contains a control character or a backslash"
        )
    if not destination.startswith("/"):
        raise UsageError(
            f"media file destination {destination!r} is not absolute",
            hint="destinations are paths from the media root, e.g. /cidata/user-data",
        )
    if ".." in destination.split("/"):
        raise UsageError(f"media file destination {destination!r} escapes the media root ('..')")
    if posixpath.normpath(destination) != destination or destination.startswith("//"):
        raise UsageError(
            f"media file destination {destination!r} is not normalised",
            hint=f"write it as {posixpath.normpath('/' + destination.lstrip('/'))}",
        )
    path = PurePosixPath(destination)
    if path == PurePosixPath("/"):
        raise UsageError("media file destination '/' is the media root, not a file")
    why = _reserved(path)
    if why is not None:
        raise UsageError(f"media file destination {destination} {why}", hint="choose another destination")
    return path


def _reserved(path: PurePosixPath) -> str | None:
    """Why the boot chain owns ``path`` (None if it does not)."""
    lower = PurePosixPath(str(path).lower())
    for tree in RESERVED_TREES:
        if lower == PurePosixPath(tree) or lower.is_relative_to(tree):
            return f"is in {tree}, which liveos and the boot chain own"
    for grub_dir in GRUB_DIRS:
        if lower == PurePosixPath(grub_dir) or lower.is_relative_to(grub_dir):
            return f"is in {grub_dir}, where grub reads its configuration and modules"
    if lower.parent == PurePosixPath("/boot") and lower.name.startswith(BOOT_FILE_PREFIXES):
        return "is named like a kernel or initrd in /boot, which grub.cfg boots"
    return None


def validate_media_files(files: Iterable[object]) -> tuple[MediaFile, ...]:
    """The ``media_files`` setting: MediaFile values (or ``SRC:DEST[:MODE]`` strings), each
    destination once."""
    if isinstance(files, (str, bytes, MediaFile)):
        raise UsageError("media_files must be a sequence of MediaFile values")
    out: list[MediaFile] = []
    seen: dict[str, str] = {}
    for item in files:
        if isinstance(item, str):
            item = MediaFile.parse(item)
        if not isinstance(item, MediaFile):
            raise UsageError(f"{item!r} is not a MediaFile", hint="liveos.MediaFile('/dest', source=...)")
        key = item.destination.lower()
        if key in seen:
            raise UsageError(
                f"media file destination {item.destination} is given twice"
                + (f" (also as {seen[key]})" if seen[key] != item.destination else ""),
                hint="each destination takes one file",
            )
        seen[key] = item.destination
        out.append(item)
    return tuple(out)


__all__ = ["DEFAULT_MODE", "MediaFile", "check_destination", "validate_media_files"]
