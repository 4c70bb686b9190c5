"""Re-editing media liveos built before: undo exactly what the previous build added.

A re-opened liveos ISO carries an already edited grub.cfg and ``/liveos/state.json`` saying which
kernel arguments the previous build put there. The edits here are measured against the
*baseline* (the text with those arguments removed), so rebuilding with the same options gives
the same command lines and arguments are never duplicated (the reference tool appends its
arguments again on every rebuild).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from liveos._version import __version__
from liveos.grub import GrubConfig, KernelArgs
from liveos.settings import InitramfsMode
from liveos.state import MediaState, SourceDigest, build_time


def strip_args(config: GrubConfig, args: Iterable[str]) -> None:
    """Remove every argument whose kernel-visible text is one of ``args`` (in place)."""
    drop = frozenset(args)
    if drop:
        config.edit_args(lambda line: KernelArgs(tuple(a for a in line if a.expands or a.text not in drop)))


@dataclass(frozen=True)
class AppliedEdit:
    """An edited grub config and the arguments liveos owns on it."""

    config: GrubConfig
    added: tuple[str, ...]  #: arguments on the edited lines that liveos put there (in line order)


def apply_edits(text: str, edit: Callable[[str], GrubConfig], previous: MediaState | None) -> AppliedEdit:
    """Apply ``edit`` (liveos's grub.cfg edits) to ``text``, which a previous build may have edited.

    The edits are idempotent and edit in place, so running them on the already edited text keeps
    every argument where the first build put it: the same options give the same command lines.
    What this build adds is measured against the *baseline*: the text with the previous build's
    arguments removed (the source's own config). Arguments the previous build added that this
    build does not add (a mode conversion, dropped user args) are then stripped.
    """
    config = edit(text)
    baseline = GrubConfig.parse(text, path=config.path)
    if previous is not None:
        strip_args(baseline, previous.added_args)
    added: list[str] = []
    edited = edit(baseline.render()).kernel_args()
    for old, new in zip(baseline.kernel_args(), edited, strict=True):  # edits keep the linux lines
        before = {arg.text for arg in old}
        for arg in new:
            if not arg.expands and arg.text not in before and arg.text not in added:
                added.append(arg.text)
    if previous is not None:
        strip_args(config, set(previous.added_args) - set(added))
    # Order as on the media's lines, so a rebuild records the same state as the first build.
    ordered = [arg.text for line in config.kernel_args() for arg in line if arg.text in added]
    return AppliedEdit(config, tuple(dict.fromkeys(ordered + added)))


def split_added(added: Iterable[str], user_args: Iterable[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(liveos's own, the user's) of the added arguments."""
    users = set(user_args)
    added = tuple(added)
    return tuple(a for a in added if a not in users), tuple(a for a in added if a in users)


def media_state(
    *,
    mode: InitramfsMode,
    label: str,
    added: Iterable[str],
    user_args: Iterable[str],
    source: Path,
    previous: MediaState | None,
) -> MediaState:
    """The state of a build about to be written (the source digest carries over on a rebuild)."""
    live_args, users = split_added(added, user_args)
    return MediaState(
        liveos_version=__version__,
        mode=mode,
        label=label,
        live_args=live_args,
        user_args=users,
        source=previous.source if previous is not None else SourceDigest.of_file(source),
        build_time=build_time(),
    )
