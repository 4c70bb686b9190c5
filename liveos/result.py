"""BuildResult: what a build wrote, measured -- the output, its digest, and each step of *this* build.

Timings are recorded by a :class:`StepClock` made for one build, so fluent clones of a
``LiveOS`` and successive builds never share or accumulate them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from liveos import views
from liveos.plan import BootEntry, BuildPlan, StepKind
from liveos.settings import InitramfsMode, OutputKind

log = logging.getLogger("liveos")

_HASH_CHUNK = 1 << 20


@dataclass
class StepRecord:
    """Filled in by a running step: what it produced."""

    size: int | None = None
    compression: str | None = None
    level: int | None = None
    tool: str | None = None
    cached: bool = False  #: the product was reused, not built


@dataclass(frozen=True)
class StepResult:
    """One step of a build: how long it took and what it produced."""

    kind: StepKind
    product: str
    seconds: float
    size: int | None = None
    compression: str | None = None  #: the compressor the product used (``zstd``...), if any
    level: int | None = None  #: its level, when liveos chose it
    tool: str | None = None  #: what made it (``dracut 059-4``, ``mksquashfs``, ``pycdlib``)
    cached: bool = False  #: reused from the cache instead of built

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {
            "kind": self.kind.value,
            "product": self.product,
            "seconds": round(self.seconds, 3),
            "size": self.size,
            "compression": self.compression,
            "level": self.level,
            "tool": self.tool,
            "cached": self.cached,
        }


class StepClock:
    """Times the steps of one build (``with clock.step(kind, product) as record: ...``)."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []
        self.started = time.perf_counter()

    def elapsed(self) -> float:
        """Wall seconds since the clock was made (steps may overlap: this is not their sum)."""
        return time.perf_counter() - self.started

    def ordered(self, products: Sequence[str]) -> tuple[StepResult, ...]:
        """The timed steps in the plan's order (``products``), not in the order they finished:
        steps run side by side, and a result should read the same on every build."""
        rank = {product: index for index, product in enumerate(products)}
        return tuple(sorted(self.steps, key=lambda s: rank.get(s.product, len(rank))))

    @contextlib.contextmanager
    def step(self, kind: StepKind, product: str) -> Iterator[StepRecord]:
        """Time one step; the caller fills the yielded record with what the step produced."""
        record = StepRecord()
        start = time.perf_counter()
        log.info("step %s (%s) ...", kind, product)
        yield record
        seconds = time.perf_counter() - start
        self.steps.append(
            StepResult(
                kind,
                product,
                seconds,
                record.size,
                record.compression,
                record.level,
                record.tool,
                record.cached,
            )
        )
        log.info("step %s (%s): %.1f s%s", kind, product, seconds, " (reused)" if record.cached else "")


@dataclass(frozen=True)
class BuildResult:
    """What :meth:`liveos.LiveOS.write_iso` / :meth:`~liveos.LiveOS.write_pxe` produced."""

    output: Path  #: the ISO, the PXE folder or the PXE archive
    kind: OutputKind
    archive: bool  #: PXE: written as a .tar.gz
    size: int  #: bytes of the output (a folder: the sum of its files)
    sha256: str  #: of the file; of a folder: of its sorted manifest (path, size, sha256 per file)
    label: str
    mode: InitramfsMode
    entries: tuple[BootEntry, ...]
    steps: tuple[StepResult, ...]
    seconds: float  #: wall time of the build (steps running side by side overlap)
    plan: BuildPlan = field(repr=False)
    #: ISO: the MD5 implanted for ``checkisomd5`` / ``rd.live.check`` (not the file's MD5)
    implanted_md5: str | None = None

    def step(self, product: str) -> StepResult:
        """The result of the step that built ``product`` (KeyError if none ran)."""
        for result in self.steps:
            if result.product == product:
                return result
        raise KeyError(product)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable view (what ``--json`` prints)."""
        return {
            "output": str(self.output),
            "kind": self.kind.value,
            "archive": self.archive,
            "size": self.size,
            "sha256": self.sha256,
            "label": self.label,
            "mode": self.mode.value,
            "entries": [e.to_dict() for e in self.entries],
            "steps": [s.to_dict() for s in self.steps],
            "seconds": round(self.seconds, 3),
            "implanted_md5": self.implanted_md5,
        }

    def describe(self) -> str:
        """Readable summary (what the CLI prints)."""
        lines = [
            f"{self.kind} ({self.mode}): {self.output}",
            f"  {self.size / 1e6:.1f} MB, sha256 {self.sha256}",
        ]
        lines.append(f"  label {self.label}")
        if self.implanted_md5 is not None:
            lines.append(f"  implanted MD5 {self.implanted_md5} (checkisomd5, rd.live.check)")
        for entry in self.entries:
            lines.append(f"  entry {entry.title}: {entry.cmdline_text}")
        for s in self.steps:
            what = ", ".join(
                x
                for x in (
                    s.tool,
                    s.compression and (f"{s.compression}" + (f" -{s.level}" if s.level is not None else "")),
                    s.size is not None and f"{s.size / 1e6:.1f} MB",
                )
                if x
            )
            reused = " reused" if s.cached else ""
            lines.append(
                f"  step {s.kind} {s.product}:{reused} {s.seconds:.1f} s" + (f" ({what})" if what else "")
            )
        lines.append(f"  {self.seconds:.1f} s in all")
        return "\n".join(lines)

    # -- rich views (notebooks, IPython) ----------------------------------------------------
    def __repr__(self) -> str:
        return views.safe_text(lambda: _result_line(self), "<BuildResult>")

    def _repr_html_(self) -> str:
        return views.safe_html(lambda: _result_html(self), "BuildResult")

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe, short="<BuildResult>")


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, streamed."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fd_sha256(fd)
    finally:
        os.close(fd)


def fd_sha256(fd: int) -> str:
    """SHA-256 of an open file's bytes from offset 0, read with ``pread`` (the fd's own offset is
    left alone, so a writer can hash its output on a second thread while it syncs it)."""
    digest = hashlib.sha256()
    offset = 0
    while chunk := os.pread(fd, _HASH_CHUNK, offset):
        digest.update(chunk)
        offset += len(chunk)
    return digest.hexdigest()


def tree_digest(root: Path) -> tuple[int, str]:
    """(total bytes, SHA-256 of the manifest) of a folder: one ``path size sha256`` line per file,
    ``path -> target`` per symlink, sorted; so two folders with equal digests hold equal files."""
    lines: list[str] = []
    total = 0
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(directory, name)
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                lines.append(f"{rel} -> {os.readlink(path)}")
                continue
            size = path.stat().st_size
            total += size
            lines.append(f"{rel} {size} {file_sha256(path)}")
    manifest = "\n".join(sorted(lines)) + "\n"
    return total, hashlib.sha256(manifest.encode("utf-8", "surrogateescape")).hexdigest()


def _result_line(result: BuildResult) -> str:
    return (
        f"<BuildResult {result.kind} {result.mode} {result.output} {views.human_size(result.size)} "
        f"sha256 {result.sha256[:12]}... label {result.label}, {len(result.steps)} steps "
        f"{result.seconds:.1f} s>"
    )


def _result_html(result: BuildResult) -> str:
    facts: list[tuple[str, object]] = [
        ("output", result.output),
        ("kind", f"{result.kind} (archive)" if result.archive else result.kind),
        ("mode", result.mode),
        ("size", f"{views.human_size(result.size)} ({result.size} bytes)"),
        ("sha256", result.sha256),
        ("label", result.label),
        ("wall time", f"{result.seconds:.1f} s"),
    ]
    entries = [(e.title, e.kernel, e.cmdline_text) for e in result.entries]
    steps = [
        (
            s.kind,
            s.product,
            f"{s.seconds:.2f}",
            "" if s.size is None else views.human_size(s.size),
            (s.compression or "") + (f" -{s.level}" if s.level is not None else ""),
            s.tool or "",
            "reused" if s.cached else "built",
        )
        for s in result.steps
    ]
    headers = ("step", "product", "seconds", "size", "compression", "tool", "")
    return views.html_block(
        _result_line(result),
        views.html_kv(facts),
        views.html_table(("entry", "kernel", "kernel command line"), entries, caption="boot entries"),
        views.html_table(headers, steps, caption="steps"),
        views.html_bars([(f"{s.kind} {s.product}", s.seconds) for s in result.steps], unit="s"),
    )
