"""The media state file: what liveos applied to a medium, so a rebuild can undo exactly that.

Every liveos medium (ISO, PXE bundle; bootstrap and full-os) carries ``/liveos/state.json``. When
a liveos ISO is opened again as input, the grub.cfg on it is already edited; the state says which
kernel arguments liveos put there (its own live/root/selinux arguments and the user's), so a
rebuild can drop those the new build does not want and leave the rest in place. Without it a
rebuild cannot tell the image's own arguments from ours, and duplicates or leaks them (the
reference tool appends its arguments again on every rebuild).

The file is small, versioned and strictly validated: an unknown key, a wrong type or a newer
schema is an :class:`~liveos.errors.ImageError` naming the file, never a guess.
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
        size = path.stat().st_size
        digest = hashlib.sha256(str(size).encode() + b"\0")
        with path.open("rb") as f:
            digest.update(f.read(DIGEST_CHUNK))
            if size > DIGEST_CHUNK:
                f.seek(max(DIGEST_CHUNK, size - DIGEST_CHUNK))
                digest.update(f.read(DIGEST_CHUNK))
        return cls(DIGEST_ALGORITHM, size, digest.hexdigest())


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

    @property
    def added_args(self) -> tuple[str, ...]:
        """Every argument a rebuild may strip: liveos's own and the user's."""
        return self.live_args + self.user_args

    def render(self) -> str:
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
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise self.fail(f"not valid JSON ({exc})") from exc
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
        obj = self.obj(doc, "the document", keys, keys)
        args = self.obj(obj["kernel_args"], "kernel_args", {"live", "user"}, {"live", "user"})
        source = self.obj(
            obj["source"], "source", {"algorithm", "size", "sha256"}, {"algorithm", "size", "sha256"}
        )
        mode_text = self.typed(obj["mode"], str, "mode")
        try:
            mode = InitramfsMode(mode_text)
        except ValueError as exc:
            known = ", ".join(m.value for m in InitramfsMode)
            raise self.fail(f"mode {mode_text!r} is not one of {known}") from exc
        label = self.typed(obj["label"], str, "label")
        if not _LABEL.fullmatch(label):
            raise self.fail(f"label {label!r} is not a valid volume label (1-16 of A-Z, 0-9, _)")
        sha = self.typed(source["sha256"], str, "source.sha256")
        if not _HEX64.fullmatch(sha):
            raise self.fail(f"source.sha256 {sha!r} is not 64 lower-case hex digits")
        size = self.typed(source["size"], int, "source.size")
        if size < 0:
            raise self.fail(f"source.size {size} is negative")
        when = self.typed(obj["build_time"], str, "build_time")
        try:
            stamp = datetime.strptime(when, _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError as exc:
            raise self.fail(f"build_time {when!r} is not YYYY-MM-DDTHH:MM:SSZ") from exc
        return MediaState(
            liveos_version=self.typed(obj["liveos_version"], str, "liveos_version"),
            mode=mode,
            label=label,
            live_args=self.strings(args["live"], "kernel_args.live"),
            user_args=self.strings(args["user"], "kernel_args.user"),
            source=SourceDigest(self.typed(source["algorithm"], str, "source.algorithm"), size, sha),
            build_time=int(stamp.timestamp()),
            schema=schema,
        )

    def obj(self, value: object, what: str, allowed: set[str], required: set[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a JSON object, not {_json_type(value)}")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"unknown key(s) in {what}: {', '.join(unknown)}")
        missing = sorted(required - set(value))
        if missing:
            raise self.fail(f"missing key(s) in {what}: {', '.join(missing)}")
        return value

    def typed(self, value: object, kind: type[Any], what: str) -> Any:
        # bool is an int subclass in Python; JSON true is never a valid number here.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(f"{what} must be {_type_name(kind)}, not {_json_type(value)}")
        return value

    def strings(self, value: object, what: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(f"{what} must be a list of strings, not {_json_type(value)}")
        out = []
        for index, item in enumerate(value):
            text = self.typed(item, str, f"{what}[{index}]")
            if not text or any(ord(c) < 32 for c in text):
                raise self.fail(f"{what}[{index}] {text!r} is not a kernel argument")
            out.append(text)
        return tuple(out)


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
