"""Exact edits of grub text: byte splices, and kernel-argument edits expressed as splices.

A model (grub.cfg, a BLS entry) keeps its original text plus a parse. Every edit computes
splices against the current parse and applies them all at once, so untouched bytes (comments,
indentation, ``if`` blocks, functions) stay exactly as they were; the text is parsed again when
the model is next read. All edits are idempotent (applying one twice equals once) and return the
model, so they chain. Each costs time linear in the text, and kernel-argument edits in a row
share one splice and one parse (see :class:`KernelArgEditor`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Self

from liveos.errors import InternalError, UsageError
from liveos.grub.kernelargs import KernelArg, KernelArgs
from liveos.grub.lexer import Token

SELINUX_ARGS = ("security", "selinux", "enforcing")


@dataclass(frozen=True)
class Splice:
    """Replace ``text[start:end]`` with ``replacement`` (an insertion when start == end)."""

    start: int
    end: int
    replacement: str


def apply_splices(text: str, splices: Iterable[Splice]) -> str:
    """``text`` with every splice applied at once (overlapping splices are a bug: InternalError)."""
    ordered = sorted(splices, key=lambda s: (s.start, s.end))
    out: list[str] = []
    cursor = 0
    for splice in ordered:
        if splice.start < cursor:
            raise InternalError(f"overlapping grub config edits at offset {splice.start}")
        out.append(text[cursor : splice.start])
        out.append(splice.replacement)
        cursor = splice.end
    out.append(text[cursor:])
    return "".join(out)


@dataclass(frozen=True)
class ArgSite:
    """Where a command line's arguments sit in the text, so an edit of them becomes splices."""

    words: tuple[Token, ...]
    prev_ends: tuple[int, ...]  #: end of the token before each word (deletions start there)
    head_end: int  #: insertion point when no kept argument precedes (after the path / key)
    base: int = 0  #: offset added to every position (tokens of a sub-string)

    @property
    def args(self) -> KernelArgs:
        """The arguments as they are now."""
        return KernelArgs.from_tokens(self.words)

    def diff(self, target: KernelArgs) -> list[Splice]:
        """The splices that turn these arguments into ``target``, leaving kept arguments' text untouched."""
        kept = [arg.origin for arg in target if arg.origin is not None]
        if any(a >= b for a, b in itertools.pairwise(kept)):
            raise InternalError("a kernel argument edit reordered existing arguments")
        base = self.base
        keep = set(kept)
        splices = [
            Splice(base + self.prev_ends[i], base + word.end, "")
            for i, word in enumerate(self.words)
            if i not in keep
        ]
        pending: list[KernelArg] = []
        anchor = self.head_end

        def flush() -> None:
            if pending:
                text = "".join(" " + arg.render() for arg in pending)
                splices.append(Splice(base + anchor, base + anchor, text))
                pending.clear()

        for arg in target:
            if arg.origin is None:
                pending.append(arg)
            else:
                flush()
                anchor = self.words[arg.origin].end
        flush()
        return splices


class KernelArgEditor:
    """Text parsed into a model plus the kernel-argument edits, defined once over :meth:`edit_args`
    (grub.cfg and BLS entries). Every edit returns the model itself, so edits chain.

    Kernel-argument edits in a row are composed: each edits the arguments the previous one left
    (held per command line, not yet in the text), and the text is spliced once, when anything
    reads the text or the model; an edited text is re-parsed when the model is read. A 1 MiB
    config would otherwise be re-parsed after every edit.
    """

    def __init__(self, text: str, path: str | None = None) -> None:
        self.path = path
        self._source = text  #: the text, without the pending kernel-argument edits
        self._sites: list[ArgSite] | None = None  #: of the current parse, once asked for
        self._pending: list[KernelArgs] | None = None  #: edited arguments of each site, not in the text
        self._stale = False  #: the model is of an older text
        self._edited = False  #: the text is not the input any more
        self._parse()

    @classmethod
    def parse(cls, text: str, path: str | None = None) -> Self:
        """Parse ``text``; raises :class:`ImageError` (file, line, column) on bad syntax."""
        return cls(text, path)

    def _parse(self) -> None:
        """Parse ``self._source`` into the model (never reads ``self._text``)."""
        raise NotImplementedError

    @property
    def _text(self) -> str:
        """The text with every edit made so far."""
        self._flush()
        return self._source

    def render(self) -> str:
        """The text, byte-identical to the input apart from the edits."""
        return self._text

    def _flush(self) -> None:
        """Splice the pending kernel-argument edits into the text."""
        if self._pending is None:
            return
        pending, self._pending = self._pending, None
        sites = self._sites or []
        self._splice([s for site, args in zip(sites, pending, strict=True) for s in site.diff(args)])

    def _model(self) -> None:
        """Make the model current: pending edits spliced in, an edited text parsed again."""
        self._flush()
        if self._stale:
            self._stale = False
            try:
                self._parse()
            except BaseException:
                self._stale = True
                raise

    def _splice(self, splices: Sequence[Splice]) -> None:
        if splices:
            new = apply_splices(self._source, splices)
            if new != self._source:
                self._source = new
                self._sites = None
                self._stale = True
                self._edited = True

    def _apply(self, splices: Sequence[Splice]) -> Self:
        """Splice the text (``splices`` index the current text: computed from the current model)."""
        self._flush()
        self._splice(splices)
        return self

    def _arg_sites(self) -> list[ArgSite] | None:
        """Where the kernel command lines of the current parse are; None if there is no line to edit
        but an edit adds one (see :meth:`_arg_splices`)."""
        raise NotImplementedError

    def _arg_splices(self, edit: Callable[[KernelArgs], KernelArgs]) -> list[Splice]:
        """The splices applying ``edit`` when :meth:`_arg_sites` is None."""
        raise NotImplementedError

    def edit_args(self, edit: Callable[[KernelArgs], KernelArgs]) -> Self:
        """Apply ``edit`` to the arguments of every kernel command line of the model."""
        current = self._pending
        if current is None:
            self._model()
            sites = self._sites = self._arg_sites()
            if sites is None:
                return self._apply(self._arg_splices(edit))
            current = [site.args for site in sites]
        self._pending = [edit(args) for args in current]
        return self

    def set_arg(self, name: str, value: str | None = None) -> Self:
        """Exactly one ``name[=value]`` on every kernel line (first occurrence replaced in place)."""
        return self.edit_args(lambda args: args.set(name, value))

    def remove_args(self, *names: str) -> Self:
        """Drop every argument named one of ``names``."""
        return self.edit_args(lambda args: args.remove(*names))

    def append_args(self, args: Iterable[str | KernelArg]) -> Self:
        """Add each argument once (as ONE grub word, quoted if needed), before ``$kernelopts``."""
        new = [KernelArg.literal(a) if isinstance(a, str) else a for a in args]
        return self.edit_args(lambda current: current.append(*new))

    def known_label(self) -> str | None:
        """The volume label this text finds its media by, if it says (grub.cfg's ``search``)."""
        return None

    def set_root_live(
        self, squashfs_path: str = "/liveos/rootfs.img", *, label: str | None = None, url: str | None = None
    ) -> Self:
        """Boot dracut's dmsquash-live from ``squashfs_path`` on the media labelled ``label``.

        Without ``label`` or ``url`` the label is the one the config's own ``search --label``
        finds (see :meth:`known_label`); ``url`` is the ISO a PXE-booted livenet downloads.
        """
        if label is not None and url is not None:
            raise UsageError("set_root_live takes label= (ISO/USB) or url= (PXE), not both")
        if label is None and url is None:
            label = self.known_label()
            if label is None:
                raise UsageError(
                    f"set_root_live: no label given and {self.path or 'the config'} does not search for one",
                    hint="pass label= (or url= for PXE), or call set_search_label(LABEL) first",
                )
        root = f"live:CDLABEL={label}" if label is not None else f"live:{url}"
        image = PurePosixPath(squashfs_path)
        if not image.is_absolute() or image.name in ("", "..", "."):
            raise UsageError(f"squashfs path {squashfs_path!r} must be an absolute file path on the media")
        live_dir = str(image.parent).lstrip("/") or "/"
        return self.edit_args(
            lambda a: (
                a.set("root", root)
                .set("rd.live.image")
                .set("rd.live.dir", live_dir)
                .set("rd.live.squashimg", image.name)
            )
        )

    def remove_root(self) -> Self:
        """No ``root=``: a full-OS initrd is the root and must not pivot."""
        return self.remove_args("root")

    def disable_selinux(self) -> Self:
        """``selinux=0`` where the last ``security=``/``selinux=``/``enforcing=`` was (or appended)."""
        return self.edit_args(lambda args: args.substitute(SELINUX_ARGS, "selinux=0"))
