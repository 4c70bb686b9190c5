"""Look inside finished media and disk images: what ``liveos inspect`` prints.

A liveos ISO, a PXE folder and a PXE ``.tar.gz`` are opened for reading through one small
interface (:class:`Media`: list, stat, read with a size cap, stream, locate a file's bytes on
the host) so :func:`describe_media` and :mod:`liveos.verification` read them alike. Media are hostile
input like any image: the ISO goes through :class:`~liveos.image.isofs.IsoReader` (validated
names), a folder through :class:`~liveos.rootfs.RootFs` (symlinks resolved inside the folder), an
archive is unpacked into a scratch directory only after every member name, type and link target
was checked. Every read is bounded; every failure is a liveos error.

:func:`inspect` returns plain frozen dataclasses: :class:`MediaInfo` for media (label, mode,
boot entries with their kernel command lines, the file tree with sizes, the state file) and
:class:`DiskInfo` for a disk image (format, partitions with their filesystems, mounts, OS,
kernels, boot layout), each with ``to_dict()`` (JSON), ``describe()`` (text) and rich views.
"""

from __future__ import annotations

import collections
import enum
import io
import os
import posixpath
import stat
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Self

from liveos import views
from liveos.bootfiles import find_boot_files
from liveos.confined import check_link_target, split_relative
from liveos.errors import ImageError, LiveOSError, UsageError
from liveos.grub import GrubConfig
from liveos.grub.env import GRUBENV_HEADER, parse_env_vars
from liveos.image import SourceImage, open_image
from liveos.image.formats import ISO_MAGIC, ISO_MAGIC_OFFSET
from liveos.image.isofs import EntryKind, IsoReader
from liveos.image.summary import ImageSummary
from liveos.layout import STATE_PATH
from liveos.rootfs import RootFs
from liveos.settings import InitramfsMode
from liveos.state import MAX_STATE_BYTES, MediaState

#: Largest grub.cfg (or env file) read from media: real ones are a few KiB.
MAX_CONFIG_BYTES = 1 << 20
#: Most entries listed from a medium (a PXE bundle holds tens, an ISO a few hundred).
MAX_ENTRIES = 100_000
#: Symlinks followed while resolving one media path.
MAX_LINK_HOPS = 8
_GZIP_MAGIC = b"\x1f\x8b"


class MediaKind(enum.StrEnum):
    """What ``inspect``/``verify`` were given."""

    ISO = "iso"
    PXE_FOLDER = "pxe-folder"
    PXE_ARCHIVE = "pxe-archive"
    DISK = "disk"


@dataclass(frozen=True)
class MediaFile:
    """One entry of a medium: a ``/``-rooted path, its kind (file, dir, symlink) and size."""

    path: str
    kind: EntryKind
    size: int = 0
    target: str | None = None  #: a symlink's target

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable (``target`` only for a symlink)."""
        out: dict[str, object] = {"path": self.path, "kind": self.kind.value, "size": self.size}
        if self.target is not None:
            out["target"] = self.target
        return out


# ------------------------------------------------------------------------------ reading media


class Media:
    """A finished medium open for reading; use as a context manager."""

    kind: MediaKind

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._entries: dict[str, MediaFile] | None = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    def close(self) -> None:
        """Release what the medium holds (files, scratch space)."""

    @property
    def label(self) -> str | None:
        """The ISO volume label; None for a PXE bundle (it has none)."""
        return None

    def entries(self) -> dict[str, MediaFile]:
        """Every entry by path (parents before children), read once."""
        if self._entries is None:
            self._entries = self._list()
        return self._entries

    def _list(self) -> dict[str, MediaFile]:
        raise NotImplementedError

    def resolve(self, path: str) -> MediaFile | None:
        """The entry at ``path`` with symlinks followed inside the medium (an absolute target
        starts at its top, ``..`` stops there); None if absent or past :data:`MAX_LINK_HOPS`."""
        entries = self.entries()
        pending = collections.deque(p for p in path.split("/") if p not in ("", "."))
        current, hops = "/", 0
        while pending:
            part = pending.popleft()
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            found = entries.get(candidate)
            if found is None:
                return None
            if found.kind is EntryKind.SYMLINK:
                hops += 1
                if hops > MAX_LINK_HOPS or not found.target:
                    return None
                if found.target.startswith("/"):
                    current = "/"
                pending.extendleft(reversed([p for p in found.target.split("/") if p not in ("", ".")]))
                continue
            if pending and found.kind is not EntryKind.DIR:
                return None
            current = candidate
        return entries.get(current)

    def is_file(self, path: str) -> bool:
        """Whether ``path`` is a regular file (through symlinks inside the medium)."""
        found = self.resolve(path)
        return found is not None and found.kind is EntryKind.FILE

    def file(self, path: str) -> MediaFile:
        """The regular file at ``path``; :class:`ImageError` if it is absent or not a file."""
        found = self.resolve(path)
        if found is None or found.kind is not EntryKind.FILE:
            what = "missing" if found is None else f"a {found.kind.value}, not a file"
            raise ImageError(f"{path} on the medium is {what}", path=self.path)
        return found

    def read_bytes(self, path: str, *, limit: int = MAX_CONFIG_BYTES) -> bytes:
        """A small file's content; :class:`ImageError` when it is larger than ``limit``."""
        entry = self.file(path)
        if entry.size > limit:
            raise ImageError(
                f"{path} on the medium is {entry.size} bytes, more than the {limit} read",
                path=self.path,
                hint="the medium is damaged or was not written by liveos",
            )
        with self.open(path) as f:
            return f.read(entry.size)

    def open(self, path: str) -> BinaryIO:
        """A binary stream of the file at ``path`` (for large files: initrds)."""
        raise NotImplementedError

    def locate(self, path: str) -> tuple[Path, int, int]:
        """(host file, byte offset, size) of the bytes of ``path``, for tools that read files."""
        raise NotImplementedError


class IsoMedia(Media):
    """An ISO 9660 image read through :class:`IsoReader` (validated Rock Ridge names)."""

    kind = MediaKind.ISO

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reader = IsoReader(self.path)

    def close(self) -> None:
        self.reader.close()

    @property
    def label(self) -> str | None:
        return self.reader.label

    @property
    def joliet_label(self) -> str | None:
        """The Joliet volume label (what grub and blkid report), None without Joliet."""
        return self.reader.joliet_label

    def _list(self) -> dict[str, MediaFile]:
        out = {"/": MediaFile("/", EntryKind.DIR)}
        for entry in self.reader.walk("/"):
            if len(out) > MAX_ENTRIES:
                raise ImageError(f"the ISO holds more than {MAX_ENTRIES} entries", path=self.path)
            out[entry.path] = MediaFile(entry.path, entry.kind, entry.size, entry.target)
        return out

    def open(self, path: str) -> BinaryIO:
        entry = self.file(path)
        return io.BufferedReader(_ExtentStream(self.path, self.reader.extents(entry.path)), 1 << 20)

    def locate(self, path: str) -> tuple[Path, int, int]:
        offset, size = self.reader.extent(self.file(path).path)
        return self.path, offset, size


class FolderMedia(Media):
    """A PXE folder; every path is resolved inside it (a symlink cannot lead out)."""

    kind = MediaKind.PXE_FOLDER

    def __init__(self, path: Path, *, root: Path | None = None) -> None:
        super().__init__(path)
        self.root = Path(root if root is not None else path)
        if not self.root.is_dir():
            raise UsageError(f"{self.root} is not a directory", path=self.root)
        self.tree = RootFs(self.root)

    def _list(self) -> dict[str, MediaFile]:
        out = {"/": MediaFile("/", EntryKind.DIR)}
        for top, dirs, files in os.walk(self.root, followlinks=False):
            dirs.sort()
            rel = Path(top).relative_to(self.root).as_posix()
            for name in [*dirs, *sorted(files)]:
                if len(out) > MAX_ENTRIES:
                    raise ImageError(f"the folder holds more than {MAX_ENTRIES} entries", path=self.path)
                host = Path(top, name)
                media_path = posixpath.normpath(f"/{rel}/{name}")
                info = host.lstat()
                if stat.S_ISLNK(info.st_mode):
                    out[media_path] = MediaFile(media_path, EntryKind.SYMLINK, 0, os.readlink(host))
                elif stat.S_ISDIR(info.st_mode):
                    out[media_path] = MediaFile(media_path, EntryKind.DIR)
                elif stat.S_ISREG(info.st_mode):
                    out[media_path] = MediaFile(media_path, EntryKind.FILE, info.st_size)
        return out

    def open(self, path: str) -> BinaryIO:
        return self.tree.path(self.file(path).path).open("rb")

    def locate(self, path: str) -> tuple[Path, int, int]:
        entry = self.file(path)
        return self.tree.path(entry.path), 0, entry.size


class ArchiveMedia(FolderMedia):
    """A PXE ``.tar.gz``, unpacked (after validation) into a scratch directory that ``close`` removes."""

    kind = MediaKind.PXE_ARCHIVE

    def __init__(self, path: Path, *, workdir: Path | None = None) -> None:
        base = workdir if workdir is not None else Path(os.environ.get("TMPDIR", "/var/tmp"))
        if not base.is_dir():
            raise UsageError(f"work dir {base} does not exist or is not a directory", path=base)
        self._scratch = tempfile.TemporaryDirectory(prefix="liveos-inspect-", dir=base)
        try:
            tree = Path(self._scratch.name) / "bundle"
            tree.mkdir()
            _unpack(Path(path), tree)
            super().__init__(path, root=tree)
        except BaseException:
            self._scratch.cleanup()
            raise

    def close(self) -> None:
        self._scratch.cleanup()


def _unpack(archive: Path, dest: Path) -> None:
    """Extract a PXE archive into ``dest`` once every member is known to stay inside it."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members: list[tarfile.TarInfo] = []
            seen: set[tuple[str, ...]] = set()
            for member in tar:
                if len(members) >= MAX_ENTRIES:
                    raise ImageError(f"the archive holds more than {MAX_ENTRIES} entries", path=archive)
                parts = split_relative(member.name, what="PXE archive", source=archive)
                if not parts:
                    continue
                if parts in seen:
                    raise ImageError(f"the archive holds {member.name!r} twice", path=archive)
                seen.add(parts)
                if member.issym():
                    check_link_target(member.linkname, what="PXE archive", name=member.name, source=archive)
                    _check_inside(parts, member.linkname, archive)
                elif not (member.isfile() or member.isdir()):
                    raise ImageError(
                        f"PXE archive member {member.name!r} is neither a file, a directory nor a symlink",
                        path=archive,
                        hint="liveos bundles hold only those; the archive was not written by liveos",
                    )
                members.append(member)
            _check_room(sum(m.size for m in members if m.isfile()), dest, archive)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError) as exc:
        raise ImageError(
            f"cannot read the PXE archive: {type(exc).__name__}: {exc}",
            path=archive,
            hint="the archive is truncated or not a .tar.gz; copy it again",
        ) from exc


def _check_room(total: int, dest: Path, archive: Path) -> None:
    """A small archive may declare huge members (gzip of zeros): refuse before filling the disk."""
    stat = os.statvfs(dest)
    free = stat.f_bavail * stat.f_frsize
    if total > free - (64 << 20):
        raise ImageError(
            f"the archive unpacks to {total} bytes, more than the {free} bytes free in {dest}",
            path=archive,
            hint="pass a work dir with more free space (--workdir), or check where the archive came from",
        )


def _check_inside(parts: tuple[str, ...], target: str, archive: Path) -> None:
    """A symlink target must be relative and stay inside the bundle (as PxeBundle writes them)."""
    if target.startswith("/"):
        raise ImageError(f"PXE archive symlink {'/'.join(parts)} -> {target!r} is absolute", path=archive)
    depth = len(parts) - 1
    for part in target.split("/"):
        depth += -1 if part == ".." else (0 if part in ("", ".") else 1)
        if depth < 0:
            raise ImageError(
                f"PXE archive symlink {'/'.join(parts)} -> {target!r} points outside the bundle",
                path=archive,
            )


class _ExtentStream(io.RawIOBase):
    """A file's runs of bytes inside an image, read as one stream."""

    def __init__(self, image: Path, runs: list[tuple[int, int]]) -> None:
        super().__init__()
        self._fd = os.open(image, os.O_RDONLY | os.O_CLOEXEC)
        self._runs = list(runs)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while self._runs and self._runs[0][1] == 0:
            self._runs.pop(0)
        if not self._runs:
            return 0
        offset, left = self._runs[0]
        data = os.pread(self._fd, min(len(buffer), left), offset)
        if not data:
            raise ImageError("the image ends inside a file's data (truncated?)")
        buffer[: len(data)] = data
        self._runs[0] = (offset + len(data), left - len(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()


def media_kind(path: Path) -> MediaKind:
    """What ``path`` is, from the file system and the content (never from the name alone)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"{path} does not exist", path=path)
    if path.is_dir():
        return MediaKind.PXE_FOLDER
    if not path.is_file():
        raise UsageError(f"{path} is neither a file nor a folder", path=path)
    with path.open("rb") as f:
        head = f.read(2)
        f.seek(ISO_MAGIC_OFFSET)
        magic = f.read(len(ISO_MAGIC))
    if magic == ISO_MAGIC:
        return MediaKind.ISO
    if head == _GZIP_MAGIC:
        return MediaKind.PXE_ARCHIVE
    return MediaKind.DISK


def open_media(path: str | os.PathLike[str], *, workdir: Path | None = None) -> Media:
    """Open a finished ISO, PXE folder or PXE ``.tar.gz`` for reading (a context manager)."""
    path = Path(path)
    kind = media_kind(path)
    if kind is MediaKind.ISO:
        return IsoMedia(path)
    if kind is MediaKind.PXE_FOLDER:
        return FolderMedia(path)
    if kind is MediaKind.PXE_ARCHIVE:
        return ArchiveMedia(path, workdir=workdir)
    raise UsageError(
        f"{path} is not a liveos ISO nor a PXE bundle",
        path=path,
        hint="verify reads what liveos wrote: an ISO, a PXE folder or a PXE .tar.gz",
    )


# ------------------------------------------------------------------------------ grub configs


@dataclass(frozen=True)
class GrubFile:
    """One grub.cfg on a medium, parsed, with the variables of the env files it loads."""

    path: str
    config: GrubConfig
    env: dict[str, str]


def grub_configs(media: Media) -> list[GrubFile]:
    """Every ``grub.cfg`` on the medium, parsed (an unparsable one raises :class:`ImageError`)."""
    found = []
    for path, entry in media.entries().items():
        if entry.kind is not EntryKind.FILE or posixpath.basename(path) != "grub.cfg":
            continue
        text = media.read_bytes(path).decode("utf-8", "replace")
        config = GrubConfig.parse(text, path)
        found.append(GrubFile(path, config, load_env_vars(media, config)))
    return found


def load_env_vars(media: Media, config: GrubConfig) -> dict[str, str]:
    """The variables of the env files ``config`` loads with ``load_env -f`` that the medium holds."""
    env: dict[str, str] = {}
    for name in config.env_files():
        if "$" in name or not media.is_file(name):
            continue
        data = media.read_bytes(name).removeprefix(GRUBENV_HEADER)
        env.update(parse_env_vars(data.decode("utf-8", "replace")))
    return env


@dataclass(frozen=True)
class MenuEntryInfo:
    """A ``linux`` line of a grub.cfg: its menu entry, kernel, initrds and command line."""

    config: str  #: the grub.cfg it is in
    title: str  #: menu path, `` > ``-joined
    kernel: str
    initrds: tuple[str, ...]
    cmdline: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable."""
        return {
            "config": self.config,
            "title": self.title,
            "kernel": self.kernel,
            "initrds": list(self.initrds),
            "cmdline": list(self.cmdline),
        }


def menu_entries(configs: list[GrubFile]) -> tuple[MenuEntryInfo, ...]:
    """Every kernel line of the configs, in file order."""
    out = []
    for grub in configs:
        for line in grub.config.kernel_lines(grub.env):
            out.append(
                MenuEntryInfo(
                    grub.path, " > ".join(line.menu), line.kernel, line.initrds, tuple(line.args.texts())
                )
            )
    return tuple(out)


# ------------------------------------------------------------------------------ media info


@dataclass(frozen=True)
class MediaInfo:
    """What a liveos ISO or PXE bundle holds (see :func:`inspect`)."""

    path: Path
    kind: MediaKind
    size: int  #: bytes of the file, or of every file of a folder
    label: str | None  #: ISO volume label (PXE: the label of the state file)
    state: MediaState | None
    state_error: str | None  #: why the state file could not be read, if it could not
    entries: tuple[MenuEntryInfo, ...]
    files: tuple[MediaFile, ...] = field(repr=False)
    iso: MediaInfo | None = None  #: the ISO a bootstrap PXE bundle carries

    @property
    def mode(self) -> InitramfsMode | None:
        """The initramfs mode the state file records (None when it is unreadable)."""
        return self.state.mode if self.state is not None else None

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable, stable (files sorted by path)."""
        return {
            "path": str(self.path),
            "kind": self.kind.value,
            "size": self.size,
            "label": self.label,
            "mode": self.mode.value if self.mode else None,
            "state": _state_dict(self.state),
            "state_error": self.state_error,
            "entries": [e.to_dict() for e in self.entries],
            "files": [f.to_dict() for f in self.files],
            "iso": self.iso.to_dict() if self.iso is not None else None,
        }

    def describe(self) -> str:
        """A readable report: identity, boot entries with command lines, the file tree."""
        what = {MediaKind.ISO: "liveos ISO", MediaKind.PXE_FOLDER: "PXE folder"}.get(
            self.kind, "PXE archive"
        )
        lines = [f"{what} {self.path} ({views.human_size(self.size)})"]
        lines.append(f"  label: {self.label or '-'}   mode: {self.mode.value if self.mode else '-'}")
        if self.state is not None:
            added = " ".join(self.state.added_args) or "-"
            lines.append(f"  state: liveos {self.state.liveos_version}, schema {self.state.schema}")
            lines.append(f"  kernel arguments liveos added: {added}")
        else:
            lines.append(f"  state: unreadable ({self.state_error})")
        lines.append("  boot entries:")
        for entry in self.entries:
            lines.append(f"    {entry.title or '(top level)'}   [{entry.config}]")
            lines.append(f"      linux  {entry.kernel} {' '.join(entry.cmdline)}")
            for initrd in entry.initrds:
                lines.append(f"      initrd {initrd}")
        if not self.entries:
            lines.append("    (none)")
        lines.append(f"  files ({sum(1 for f in self.files if f.kind is EntryKind.FILE)}):")
        lines += [f"    {_tree_line(f)}" for f in self.files]
        if self.iso is not None:
            lines.append("  the ISO it carries:")
            lines += ["    " + line for line in self.iso.describe().splitlines()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        mode = self.mode.value if self.mode else "?"
        return (
            f"<MediaInfo {self.kind.value} {str(self.path)!r} label={self.label} mode={mode}, "
            f"{len(self.entries)} boot entries, {len(self.files)} files>"
        )

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe)

    def _repr_html_(self) -> str:
        return views.safe_html(self._html, "media")

    def _html(self) -> str:
        state = self.state
        pairs: list[tuple[object, object]] = [
            ("kind", self.kind.value),
            ("size", views.human_size(self.size)),
            ("label", self.label or "-"),
            ("mode", self.mode.value if self.mode else "-"),
            ("liveos", state.liveos_version if state else f"state unreadable: {self.state_error}"),
            ("kernel args added", " ".join(state.added_args) if state else "-"),
        ]
        entries = views.html_table(
            ["menu entry", "kernel", "initrds", "command line", "config"],
            [(e.title, e.kernel, " ".join(e.initrds), " ".join(e.cmdline), e.config) for e in self.entries],
            caption="boot entries",
        )
        files = views.html_table(
            ["path", "size"],
            [
                (_tree_name(f), views.human_size(f.size) if f.kind is EntryKind.FILE else "")
                for f in self.files
            ],
        )
        parts = [views.html_kv(pairs), entries, views.html_details(f"files ({len(self.files)})", files)]
        if self.iso is not None:
            parts.append(views.html_details("the ISO it carries", self.iso._html()))
        return views.html_block(f"{self.kind.value} {self.path}", *parts)


def _tree_name(f: MediaFile) -> str:
    depth = f.path.count("/") - 1
    name = posixpath.basename(f.path) or "/"
    suffix = "/" if f.kind is EntryKind.DIR else (f" -> {f.target}" if f.target else "")
    return "  " * depth + name + suffix


def _tree_line(f: MediaFile) -> str:
    name = _tree_name(f)
    return f"{name:<48} {views.human_size(f.size)}" if f.kind is EntryKind.FILE else name


def _state_dict(state: MediaState | None) -> dict[str, object] | None:
    if state is None:
        return None
    return {
        "schema": state.schema,
        "liveos_version": state.liveos_version,
        "mode": state.mode.value,
        "label": state.label,
        "kernel_args": {"live": list(state.live_args), "user": list(state.user_args)},
        "source": {
            "algorithm": state.source.algorithm,
            "size": state.source.size,
            "sha256": state.source.sha256,
        },
        "build_time": state.build_time,
    }


def read_state(media: Media) -> MediaState:
    """The medium's state file, parsed strictly (:class:`ImageError` naming what is wrong)."""
    path = str(STATE_PATH)
    if not media.is_file(path):
        raise ImageError(f"{path} is missing", path=media.path, hint="the medium was not written by liveos")
    return MediaState.parse(media.read_bytes(path, limit=MAX_STATE_BYTES), path=path)


def carried_iso(media: Media, entries: tuple[MenuEntryInfo, ...]) -> str | None:
    """The ISO a bootstrap PXE bundle serves (named by ``root=live:<URL>``), if it holds it."""
    if media.kind is MediaKind.ISO:
        return None
    for entry in entries:
        for arg in entry.cmdline:
            if arg.startswith("root=live:") and "://" in arg:
                name = "/" + arg.rsplit("/", 1)[-1]
                if media.is_file(name):
                    return name
    return None


def describe_media(media: Media) -> MediaInfo:
    """Read what a medium holds into a :class:`MediaInfo`."""
    state: MediaState | None = None
    error: str | None = None
    try:
        state = read_state(media)
    except ImageError as exc:
        error = exc.message
    entries = menu_entries(grub_configs(media))
    files = tuple(
        sorted((f for path, f in media.entries().items() if path != "/"), key=lambda f: f.path.split("/"))
    )
    size = media.path.stat().st_size if media.path.is_file() else sum(f.size for f in files)
    label = media.label if media.kind is MediaKind.ISO else (state.label if state else None)
    inner = None
    iso_path = carried_iso(media, entries)
    if iso_path is not None:
        host, offset, _ = media.locate(iso_path)
        if offset == 0:
            with IsoMedia(host) as iso:
                inner = describe_media(iso)
    return MediaInfo(media.path, media.kind, size, label, state, error, entries, files, inner)


# ------------------------------------------------------------------------------ disk images


@dataclass(frozen=True)
class DiskInfo:
    """What a disk image holds (see :func:`inspect`): the image's own summary (format, partitions
    with their filesystems, mounts, OS, kernels, boot layout) plus its boot entries, read from
    the main grub.cfg with their kernel command lines."""

    summary: ImageSummary
    entries: tuple[MenuEntryInfo, ...]
    boot_problem: str | None = None  #: why the boot entries could not be read, if they could not

    @property
    def path(self) -> Path:
        """The disk image file."""
        return self.summary.path

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable: the summary's fields, ``entries`` and ``boot_problem``."""
        return {
            **self.summary.to_dict(),
            "entries": [e.to_dict() for e in self.entries],
            "boot_problem": self.boot_problem,
        }

    def describe(self) -> str:
        """The summary's lines, then every boot entry with its command line."""
        lines = [self.summary.describe(), "  boot entries:"]
        for entry in self.entries:
            lines.append(f"    {entry.title or '(top level)'}   [{entry.config}]")
            lines.append(f"      linux  {entry.kernel} {' '.join(entry.cmdline)}")
            lines += [f"      initrd {initrd}" for initrd in entry.initrds]
        if not self.entries:
            lines.append(f"    (none{': ' + self.boot_problem if self.boot_problem else ''})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()

    def __repr__(self) -> str:
        return self.summary.line()[:-1] + f", {len(self.entries)} boot entries>"

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe)

    def _repr_html_(self) -> str:
        return views.safe_html(self._html, "disk image")

    def _html(self) -> str:
        entries = views.html_table(
            ["menu entry", "kernel", "initrds", "command line"],
            [(e.title, e.kernel, " ".join(e.initrds), " ".join(e.cmdline)) for e in self.entries],
            caption="boot entries" + (f" ({self.boot_problem})" if self.boot_problem else ""),
        )
        return self.summary.html() + entries


def describe_disk(image: SourceImage) -> DiskInfo:
    """What an opened image holds: :meth:`SourceImage.summary` plus the boot entries of its
    main grub.cfg (variables of the env files it loads resolved)."""
    entries: tuple[MenuEntryInfo, ...] = ()
    problem = None
    try:
        rootfs = image.rootfs
        boot = find_boot_files(rootfs)
        path = str(boot.grub_cfg)
        config = GrubConfig.parse(rootfs.read_text(boot.grub_cfg, limit=MAX_CONFIG_BYTES), path)
        env: dict[str, str] = {}
        for name in config.env_files():
            if "$" not in name and rootfs.is_file(name):
                data = rootfs.read_bytes(name, limit=MAX_CONFIG_BYTES)
                env.update(parse_env_vars(data.removeprefix(GRUBENV_HEADER).decode("utf-8", "replace")))
        entries = menu_entries([GrubFile(path, config, env)])
    except LiveOSError as exc:
        problem = exc.message
    return DiskInfo(image.summary(), entries, problem)


def inspect(path: str | os.PathLike[str], *, workdir: Path | None = None) -> MediaInfo | DiskInfo:
    """Describe ``path``: a liveos ISO or PXE bundle (folder or ``.tar.gz``) read without mounting,
    or a disk image (opened read-only like :func:`~liveos.image.open_image`; needs root)."""
    path = Path(path)
    if media_kind(path) is MediaKind.DISK:
        with open_image(path, workdir=workdir) as image:
            return describe_disk(image)
    with open_media(path, workdir=workdir) as media:
        return describe_media(media)
