"""BuildPlan: what a build will do and what the media will hold, decided before any heavy work.

A plan is plain data: every boot entry with its final kernel command line, every file on the
media (where it comes from, its size or an estimate) and the steps that will run. Making one
runs no dracut, no mksquashfs and no compressor (:meth:`liveos.LiveOS.plan`); building executes
it, so what the plan says is what the media hold. :meth:`BuildPlan.to_dict` is JSON-serialisable
and stable (sorted paths, no host paths).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from liveos import views
from liveos.errors import InternalError
from liveos.settings import Arch, InitramfsMode, LiveSettings, OutputKind
from liveos.settings import table as settings_table


class Origin(enum.StrEnum):
    """Where a file of the media comes from."""

    IMAGE = "image"  #: a file of the (customised) image, copied as it is
    GENERATED = "generated"  #: a small file liveos writes (grub.cfg, state.json, redirectors)
    BUILT = "built"  #: a build product (an initrd, the root image, the El Torito image, an ISO)
    USER = "user"  #: a file the caller added to the media


class StepKind(enum.StrEnum):
    """The steps a build runs, in the order they run."""

    DRACUT = "dracut"  #: a bootstrap initrd, by the image's dracut (one per kernel)
    SQUASHFS = "squashfs"  #: the bootstrap root image
    EROFS = "erofs"  #: the bootstrap root image as erofs (``rootfs_format`` erofs)
    CPIO = "cpio"  #: the full-os initrd
    EFIBOOT = "efiboot"  #: the El Torito FAT image
    BIOSBOOT = "biosboot"  #: GRUB's i386-pc El Torito image (BIOS boot, ``grub-mkimage``)
    ISO = "iso"  #: an ISO file (the output, or the one a bootstrap PXE bundle serves)
    PXE = "pxe"  #: the TFTP tree (folder or .tar.gz)


class Reuse(enum.StrEnum):
    """Whether a step builds its product or takes it from the artifact cache."""

    BUILD = "build"  #: nothing reusable is cached: built (and then stored)
    CACHED = "cached"  #: a cached product built from the same inputs, as it is
    UPDATED = "updated"  #: a cached product plus what changed since (``/updates``, a CPIO segment)


@dataclass(frozen=True)
class StepCache:
    """How one step uses the artifact cache (:mod:`liveos.media.reuse` decides)."""

    kind: str  #: the cache's kind of artifact (``initrd``, ``squashfs``, ``cpio``)
    slot: str  #: the key of everything but the tree changes (tool, options, image digest)
    reuse: Reuse
    reason: str  #: why: what matched, or what changed
    entry: str | None = None  #: CACHED/UPDATED: the key of the cached product used
    #: the tree changes the product depends on, (image path, fingerprint) -- stored with it
    inputs: tuple[tuple[str, str], ...] = field(default=(), compare=False, repr=False)
    #: UPDATED: the image paths layered on top of the cached product, in order
    delta: tuple[PurePosixPath, ...] = field(default=(), compare=False, repr=False)
    #: inputs that count only if the product holds their path (an initrd: see initramfs/inputs.py)
    conditional: frozenset[str] = field(default=frozenset(), compare=False, repr=False)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {"reuse": self.reuse.value, "reason": self.reason, "delta": len(self.delta)}


@dataclass(frozen=True)
class PlannedStep:
    """One step: what it builds (``product``, the id files refer to) and how."""

    kind: StepKind
    product: str  #: ``initrd-<kernel>``, ``rootfs.img``, ``initrd.img``, ``efiboot.img``, ``live.iso``...
    detail: str  #: human-readable: the kernel, the compressor and level, the tool
    kernel: str | None = None  #: the kernel version a dracut step builds for
    cache: StepCache | None = None  #: how the cache serves it (None: not cached, or cache off)

    @property
    def reused(self) -> bool:
        """True when the product comes from the cache (as it is, or with an update on top)."""
        return self.cache is not None and self.cache.reuse is not Reuse.BUILD

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {
            "kind": self.kind.value,
            "product": self.product,
            "detail": self.detail,
            "kernel": self.kernel,
            "cache": self.cache.to_dict() if self.cache is not None else None,
        }


@dataclass(frozen=True)
class PlannedFile:
    """One file of the media."""

    path: PurePosixPath  #: where it will be, rooted at the media (or TFTP) root: ``/boot/vmlinuz-6.1``
    origin: Origin
    source: str  #: IMAGE: the image path; BUILT: the product id; GENERATED/USER: what it is
    size: int | None  #: bytes, or an estimate (``estimated``); None: unknown
    estimated: bool = False
    mode: int = 0o644
    host: Path | None = field(default=None, compare=False, repr=False)  #: IMAGE/USER: where to read it
    data: bytes | None = field(default=None, compare=False, repr=False)  #: GENERATED: the content

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view (no host paths: a plan describes the media, not this machine)."""
        return {
            "path": str(self.path),
            "origin": self.origin.value,
            "source": self.source,
            "size": self.size,
            "estimated": self.estimated,
            "mode": f"{self.mode:04o}",
        }


@dataclass(frozen=True)
class BootEntry:
    """A boot menu entry as it will be on the media."""

    title: str  #: the menu path, submenus joined with ``>``
    kernel: str  #: media path of the kernel
    initrds: tuple[str, ...]
    cmdline: tuple[str, ...]  #: the kernel arguments, one per item (``$var`` kept as written)

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable view."""
        return {
            "title": self.title,
            "kernel": self.kernel,
            "initrds": list(self.initrds),
            "cmdline": list(self.cmdline),
        }

    @property
    def cmdline_text(self) -> str:
        """The command line as one string (what ``/proc/cmdline`` would show, give or take quotes)."""
        return " ".join(self.cmdline)


@dataclass(frozen=True)
class BuildPlan:
    """Everything a build will do. Make one with :meth:`liveos.LiveOS.plan`."""

    output: OutputKind
    mode: InitramfsMode
    label: str
    arch: Arch
    source: Path  #: the input image
    settings: LiveSettings
    entries: tuple[BootEntry, ...]
    files: tuple[PlannedFile, ...]
    steps: tuple[PlannedStep, ...]
    grub_cfg: PurePosixPath  #: the main grub config on the media
    bootstrap_url: str | None = None  #: PXE bootstrap: the URL livenet downloads the ISO from
    iso: BuildPlan | None = None  #: PXE bootstrap: the plan of that ISO
    warnings: tuple[str, ...] = ()
    #: digest of the caller's changes to the tree when the plan was made: a build checks that
    #: the tree is still what the plan describes
    tree: str = ""

    def __post_init__(self) -> None:
        paths = [f.path for f in self.files]
        bad = [str(p) for p in paths if not p.is_absolute() or ".." in p.parts or p == PurePosixPath("/")]
        if bad:
            raise InternalError(f"a build plan has media paths outside the media root: {bad}")
        if len(set(paths)) != len(paths):
            raise InternalError(f"a build plan lists a media path twice: {sorted(map(str, paths))}")

    def file(self, path: str | PurePosixPath) -> PlannedFile:
        """The planned file at ``path`` (KeyError if the media will not hold it)."""
        wanted = PurePosixPath("/", path)
        for planned in self.files:
            if planned.path == wanted:
                return planned
        raise KeyError(str(wanted))

    def step(self, product: str) -> PlannedStep:
        """The step that builds ``product`` (KeyError if none)."""
        for planned in self.steps:
            if planned.product == product:
                return planned
        raise KeyError(product)

    @property
    def size(self) -> int:
        """Bytes of all files on the media (estimates included)."""
        return sum(f.size or 0 for f in self.files)

    def to_dict(self) -> dict[str, object]:
        """A JSON-serialisable, stable view of the plan."""
        return {
            "output": self.output.value,
            "mode": self.mode.value,
            "label": self.label,
            "arch": self.arch.value,
            "source": str(self.source),
            "settings": self.settings.to_dict(),
            "grub_cfg": str(self.grub_cfg),
            "bootstrap_url": self.bootstrap_url,
            "entries": [e.to_dict() for e in self.entries],
            "files": [f.to_dict() for f in sorted(self.files, key=lambda f: f.path.parts)],
            "steps": [s.to_dict() for s in self.steps],
            "size": self.size,
            "iso": self.iso.to_dict() if self.iso is not None else None,
            "warnings": list(self.warnings),
        }

    def describe(self) -> str:
        """A readable summary (what ``liveos plan`` prints)."""
        lines = [
            f"{self.output} ({self.mode}), label {self.label}, {self.arch}, from {self.source}",
            "boot entries:",
        ]
        for entry in self.entries:
            lines.append(f"  {entry.title}: {entry.kernel} {entry.cmdline_text}")
        lines.append("steps:")
        for s in self.steps:
            lines.append(f"  {s.kind}: {s.product} ({s.detail})")
            if s.cache is not None:
                lines.append(f"    {s.cache.reuse}: {s.cache.reason}")
        lines.append(f"files ({len(self.files)}, {_mb(self.size)}):")
        for f in sorted(self.files, key=lambda f: f.path.parts):
            size = "?" if f.size is None else ("~" if f.estimated else "") + _mb(f.size)
            lines.append(f"  {f.path}  {size}  <- {f.origin}:{f.source}")
        lines += [f"warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    # -- rich views (notebooks, IPython) ----------------------------------------------------
    def __repr__(self) -> str:
        return views.safe_text(lambda: _plan_line(self), "<BuildPlan>")

    def _repr_html_(self) -> str:
        return views.safe_html(lambda: _plan_html(self), "BuildPlan")

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe, short="<BuildPlan>")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 100_000 else f"{size} B"


def _plan_line(plan: BuildPlan) -> str:
    reused = sum(1 for s in plan.steps if s.reused)
    return (
        f"<BuildPlan {plan.output} {plan.mode} {plan.label} {plan.arch} from {plan.source}: "
        f"{_count(len(plan.entries), 'entry', 'entries')}, {_count(len(plan.files), 'file')} "
        f"{_mb(plan.size)}, {_count(len(plan.steps), 'step')} ({reused} from the cache)>"
    )


def _count(n: int, noun: str, plural: str | None = None) -> str:
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def _plan_html(plan: BuildPlan) -> str:
    facts: list[tuple[str, object]] = [
        ("output", plan.output),
        ("mode", plan.mode),
        ("label", plan.label),
        ("arch", plan.arch),
        ("source", plan.source),
        ("grub.cfg", plan.grub_cfg),
        ("size", ("~" if any(f.estimated for f in plan.files) else "") + views.human_size(plan.size)),
    ]
    if plan.bootstrap_url is not None:
        facts.append(("bootstrap URL", plan.bootstrap_url))
    entries = [(e.title, e.kernel, " ".join(e.initrds), e.cmdline_text) for e in plan.entries]
    steps = [
        (
            s.kind,
            s.product,
            s.detail,
            s.cache.reuse if s.cache else "no cache",
            s.cache.reason if s.cache else "",
        )
        for s in plan.steps
    ]
    files = [
        (
            f.path,
            f.origin,
            f.source,
            "?" if f.size is None else ("~" if f.estimated else "") + views.human_size(f.size),
        )
        for f in sorted(plan.files, key=lambda f: f.path.parts)
    ]
    parts = [
        views.html_kv(facts),
        views.html_table(
            ("entry", "kernel", "initrds", "kernel command line"), entries, caption="boot entries"
        ),
        views.html_table(("step", "product", "how", "cache", "why"), steps, caption="steps"),
        views.html_details(
            f"files ({len(files)}, {views.human_size(plan.size)})",
            views.html_table(("media path", "origin", "from", "size"), files),
        ),
        views.html_details("settings", settings_html(plan.settings)),
    ]
    if plan.warnings:
        parts.append(views.html_kv([("warning", w) for w in plan.warnings]))
    if plan.iso is not None:
        parts.append(views.html_details("the ISO this bundle serves", _plan_html(plan.iso)))
    return views.html_block(_plan_line(plan), *parts)


def settings_rows(settings: LiveSettings) -> list[tuple[str, str, bool, str]]:
    """(name, value, is the default, meaning) of every setting, in the settings table's order."""
    rows = []
    for name, spec, default in settings_table():
        value = getattr(settings, name)
        shown = ", ".join(map(str, value)) if isinstance(value, tuple) else str(value)
        if value == default and spec.default_text is not None:
            text = spec.default_text.replace("`", "")
            shown = f"{shown} ({text})" if shown else text
        rows.append((name, shown, value == default, spec.help.replace("`", "")))
    return rows


def settings_html(settings: LiveSettings) -> str:
    """The settings as an HTML table: every setting, its value, whether it is the default, what it does."""
    rows = [(n, v, "default" if d else "changed", h) for n, v, d, h in settings_rows(settings)]
    return views.html_table(("setting", "value", "", "meaning"), rows)


def settings_text(settings: LiveSettings) -> str:
    """The settings as lines of text (``*`` marks a setting changed from its default)."""
    return "\n".join(f"  {'*' if not d else ' '} {n} = {v}" for n, v, d, _ in settings_rows(settings))
