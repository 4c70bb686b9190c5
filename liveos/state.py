"""The media state file: what liveos applied to a medium, so a rebuild can undo exactly that.

Every liveos medium (ISO, PXE bundle; bootstrap and full-os) carries ``/liveos/state.json``. When
a liveos ISO is opened again as input, the grub.cfg on it is already edited; the state says which
kernel arguments liveos put there (its own live/root/selinux arguments and the user's), so a
rebuild can drop those the new build does not want and leave the rest in place. Without it a
rebuild cannot tell the image's own arguments from ours, and duplicates or leaks them (the
reference tool appends its arguments again on every rebuild).

The file is small, versioned and strictly validated: an unknown key, a wrong type or a newer
schema is an :class:`~liveos.errors.ImageError` naming the file, never a guess. It comes from a
medium someone else may have made, so whatever its bytes (megabytes, thousand-digit numbers,
arrays nested thousands deep, a key twice), parsing ends in a state or that error.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from liveos.errors import ImageError
from liveos.layout import STATE_PATH
from liveos.reproducible import source_date_epoch
from liveos.settings import InitramfsMode

#: Bump on any incompatible change; older liveos refuses newer files instead of misreading them.
SCHEMA_VERSION = 1
#: Bytes hashed at each end of the input for the cheap digest.
DIGEST_CHUNK = 1 << 20
#: Name of the cheap digest: size + SHA-256 of the first and the last MiB (see :func:`source_digest`).
DIGEST_ALGORITHM = "sha256-size-head-tail-1mib"
#: Largest state file read: liveos writes well under 4 KiB.
MAX_STATE_BYTES = 64 * 1024
#: Most digits of a JSON integer (2**63 has 19): Python would parse 4300 digits, slowly, and
#: raise a plain ValueError beyond.
MAX_INT_DIGITS = 20
#: source.size is a file size: below 2**63, like every file size.
MAX_SIZE = 1 << 63
_SHOWN = 60
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LABEL = re.compile(r"[A-Z0-9_]{1,16}")


@dataclass(frozen=True)
class SourceDigest:
    """A cheap fingerprint of the input image a medium was built from.

    A full SHA-256 of a multi-GB disk costs seconds to minutes for a field nobody verifies
    cryptographically: it answers "was this medium built from that file?". The size plus the
    first MiB (partition table, boot sectors, qcow2/VHDX headers with their random GUIDs) and
    the last MiB (backup GPT, VHD footer with its unique id and checksum) tells builds apart in
    milliseconds. A re-opened liveos ISO carries over the digest of its original input.
    """

    algorithm: str
    size: int
    sha256: str

    @classmethod
    def of_file(cls, path: Path) -> SourceDigest:
        """Fingerprint a source file by its size and its first and last bytes (fast on huge images)."""
        size = path.stat().st_size
        digest = hashlib.sha256(str(size).encode() + b"\0")
        with path.open("rb") as f:
            digest.update(f.read(DIGEST_CHUNK))
            if size > DIGEST_CHUNK:
                f.seek(max(DIGEST_CHUNK, size - DIGEST_CHUNK))
                digest.update(f.read(DIGEST_CHUNK))
        return cls(DIGEST_ALGORITHM, size, digest.hexdigest())


@dataclass(frozen=True)
class StateFile:
    """A caller's file a build put on the media (:class:`~liveos.mediafiles.MediaFile`): a rebuild
    from the re-opened medium carries it over unless it is given again."""

    path: str  #: absolute media path
    mode: int  #: permission bits
    size: int


@dataclass(frozen=True)
class MediaState:
    """What one liveos build applied. ``parse(render(s)) == s``."""

    liveos_version: str
    mode: InitramfsMode
    label: str
    live_args: tuple[str, ...]  #: arguments liveos itself added (root=, rd.live.*, selinux=0, ...)
    user_args: tuple[str, ...]  #: the user's arguments liveos added (not those the source already had)
    source: SourceDigest
    build_time: int  #: seconds since the epoch (SOURCE_DATE_EPOCH when set)
    schema: int = SCHEMA_VERSION
    media_files: tuple[StateFile, ...] = ()  #: the caller's files on the media (key absent: none)

    @property
    def added_args(self) -> tuple[str, ...]:
        """Every argument a rebuild may strip: liveos's own and the user's."""
        return self.live_args + self.user_args

    def render(self) -> str:
        """The state as JSON text (what ``/liveos/state.json`` holds)."""
        doc = {
            "schema": self.schema,
            "liveos_version": self.liveos_version,
            "mode": self.mode.value,
            "label": self.label,
            "kernel_args": {"live": list(self.live_args), "user": list(self.user_args)},
            "source": {
                "algorithm": self.source.algorithm,
                "size": self.source.size,
                "sha256": self.source.sha256,
            },
            "build_time": datetime.fromtimestamp(self.build_time, UTC).strftime(_TIME_FORMAT),
        }
        if self.media_files:  # absent when empty: media without them read as before
            doc["media_files"] = [{"path": f.path, "mode": f.mode, "size": f.size} for f in self.media_files]
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def parse(cls, text: str | bytes, *, path: str | Path | PurePosixPath = STATE_PATH) -> MediaState:
        """Parse and validate a state file; raises :class:`ImageError` naming ``path`` and a fix."""
        return _Parser(str(path)).state(text)


class _Parser:
    """Strict reading of the JSON document: every key known, every type exact."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, message: str, hint: str | None = None) -> ImageError:
        return ImageError(
            f"liveos state file {self.path}: {message}",
            path=self.path,
            hint=hint
            or "the medium was not written by liveos or was edited by hand; rebuild it from the "
            "original disk image",
        )

    def state(self, text: str | bytes) -> MediaState:
        if len(text) > MAX_STATE_BYTES:
            unit = "bytes" if isinstance(text, bytes) else "characters"
            raise self.fail(
                f"{len(text)} {unit} long, more than {MAX_STATE_BYTES} (liveos writes under 4 KiB)"
            )
        try:
            if isinstance(text, bytes):
                text = text.decode()  # liveos writes UTF-8 (ASCII, in fact)
            _check_depth(text)
            doc = json.loads(text, parse_int=_int, parse_constant=_constant, object_pairs_hook=_object)
        except _Refused as exc:
            raise self.fail(str(exc)) from exc
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise self.fail(f"not valid JSON ({type(exc).__name__}: {_shown(str(exc))[1:-1]})") from exc
        if not isinstance(doc, dict):
            raise self.fail(f"the document must be a JSON object, not {_json_type(doc)}")
        if "schema" not in doc:
            raise self.fail("missing key(s) in the document: schema")
        schema = self.typed(doc["schema"], int, "schema")
        if schema > SCHEMA_VERSION:
            raise self.fail(
                f"schema version {schema} is newer than this liveos understands ({SCHEMA_VERSION})",
                hint="upgrade liveos to re-open this medium",
            )
        if schema < 1:
            raise self.fail(f"schema version {schema} is invalid (versions start at 1)")
        keys = {"schema", "liveos_version", "mode", "label", "kernel_args", "source", "build_time"}
        obj = self.obj(doc, "the document", keys | {"media_files"}, keys)
        args = self.obj(obj["kernel_args"], "kernel_args", {"live", "user"}, {"live", "user"})
        source = self.obj(
            obj["source"], "source", {"algorithm", "size", "sha256"}, {"algorithm", "size", "sha256"}
        )
        mode_text = self.typed(obj["mode"], str, "mode")
        try:
            mode = InitramfsMode(mode_text)
        except ValueError as exc:
            known = ", ".join(m.value for m in InitramfsMode)
            raise self.fail(f"mode {_shown(mode_text)} is not one of {known}") from exc
        label = self.typed(obj["label"], str, "label")
        if not _LABEL.fullmatch(label):
            raise self.fail(f"label {_shown(label)} is not a valid volume label (1-16 of A-Z, 0-9, _)")
        sha = self.typed(source["sha256"], str, "source.sha256")
        if not _HEX64.fullmatch(sha):
            raise self.fail(f"source.sha256 {_shown(sha)} is not 64 lower-case hex digits")
        size = self.typed(source["size"], int, "source.size")
        if not 0 <= size < MAX_SIZE:
            raise self.fail(f"source.size {size} is not a file size (0 to 2**63 - 1)")
        when = self.typed(obj["build_time"], str, "build_time")
        try:
            stamp = datetime.strptime(when, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError as exc:
            raise self.fail(f"build_time {_shown(when)} is not YYYY-MM-DDTHH:MM:SSZ") from exc
        return MediaState(
            liveos_version=self.typed(obj["liveos_version"], str, "liveos_version"),
            mode=mode,
            label=label,
            live_args=self.strings(args["live"], "kernel_args.live"),
            user_args=self.strings(args["user"], "kernel_args.user"),
            source=SourceDigest(self.typed(source["algorithm"], str, "source.algorithm"), size, sha),
            build_time=int(stamp.timestamp()),
            schema=schema,
            media_files=self.files(obj.get("media_files", [])),
        )

    def obj(self, value: object, what: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a JSON object, not {_json_type(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            shown = ", ".join(_shown(key)[1:-1] for key in unknown[:5]) + (
                ", ..." if len(unknown) > 5 else ""
            )
            raise self.fail(f"unknown key(s) in {what}: {shown}")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(f"missing key(s) in {what}: {', '.join(missing)}")
        return value

    def typed(self, value: object, kind: type[Any], what: str) -> Any:
        # bool is an int subclass in Python; JSON true is never a valid number here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"{what} must be {_type_name(kind)}, not {_json_type(value)}")
        return value

    def files(self, value: object) -> tuple[StateFile, ...]:
        if not isinstance(value, list):
            raise self.fail(f"media_files must be a list, not {_json_type(value)}")
        out = []
        seen = set()
        for index, item in enumerate(value):
            what = f"media_files[{index}]"
            entry = self.obj(item, what, {"path", "mode", "size"}, {"path", "mode", "size"})
            path = self.typed(entry["path"], str, f"{what}.path")
            parts = path.split("/")
            if (
                not path.startswith("/")
                or ".." in parts
                or "" in parts[1:]
                or any(ord(c) < 32 for c in path)
            ):
                raise self.fail(f"{what}.path {_shown(path)} is not a normalised absolute media path")
            if path in seen:
                raise self.fail(f"{what}.path {_shown(path)} is listed twice")
            seen.add(path)
            mode = self.typed(entry["mode"], int, f"{what}.mode")
            size = self.typed(entry["size"], int, f"{what}.size")
            if not 0 <= mode <= 0o7777 or not 0 <= size < MAX_SIZE:
                raise self.fail(f"{what} has an invalid mode ({mode}) or size ({size})")
            out.append(StateFile(path, mode, size))
        return tuple(out)

    def strings(self, value: object, what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(f"{what} must be a list of strings, not {_json_type(value)}")
        out = []
        for index, item in enumerate(value):
            text = self.typed(item, str, f"{what}[{index}]")
            if not text or any(ord(c) < 32 for c in text):
                raise self.fail(f"{what}[{index}] {_shown(text)} is not a kernel argument")
            out.append(text)
        return tuple(out)


class _Refused(Exception):
    """A JSON value the state file never holds, refused while decoding."""


#: Deepest nesting of arrays and objects read (the state file nests 3 deep); the json module
#: recurses per level, so the check comes before it.
MAX_DEPTH = 16
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


def _check_depth(text: str) -> None:
    depth = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > MAX_DEPTH:
            raise _Refused(f"arrays and objects nested more than {MAX_DEPTH} deep")


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refused(f"a number of {len(text)} digits is not a value of a state file")
    return int(text)


def _constant(name: str) -> object:
    raise _Refused(f"{name} is not JSON (and never a value of a state file)")


def _object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object, refused if a key appears twice (JSON parsers differ on which one wins)."""
    doc: dict[str, object] = {}
    for key, value in pairs:
        if key in doc:
            raise _Refused(f"the key {_shown(key)} appears twice in an object")
        doc[key] = value
    return doc


def _shown(text: str) -> str:
    """A value for an error message: repr'd and cut short (the file may be hostile)."""
    return repr(text) if len(text) <= _SHOWN else repr(text[:_SHOWN]) + f"... ({len(text)} characters)"


def _type_name(kind: type[Any]) -> str:
    return {int: "an integer", str: "a string"}.get(kind, kind.__name__)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list"}.get(
        type(value), "an object"
    )


def build_time() -> int:
    """Seconds since the epoch: ``SOURCE_DATE_EPOCH`` when set (reproducible builds), else now."""
    epoch = source_date_epoch()
    return int(time.time()) if epoch is None else epoch
