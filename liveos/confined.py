"""Image paths resolved the way a chroot would: no path from an image ever leads out of its root.

An image is hostile input: ``/etc`` may be a symlink to ``/host/etc``, ``/etc/fstab`` may point
at ``/../../../tmp/x``. :func:`resolve_in_root` follows such links *inside* the root -- absolute
symlinks restart at the image root, ``..`` stops at it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path, PurePosixPath

from liveos.errors import ImageError

#: Same limit as Linux (MAXSYMLINKS): more link hops than this is a loop.
MAX_SYMLINK_HOPS = 40


def resolve_in_root(root: Path, path: str | PurePosixPath, *, follow_last: bool = True) -> Path:
    """Return the host path of ``path`` inside ``root``, resolving symlinks as a chroot would.

    ``path`` is an absolute or relative path *in the image* (``/etc/fstab``). Symlinks met on the
    way are followed inside ``root``; the last component is followed only if ``follow_last``.
    Missing components are allowed (the result may not exist yet). Raises :class:`ImageError`
    on a symlink loop.
    """
    parts = list(PurePosixPath("/", path).parts[1:])
    resolved: list[str] = []
    hops = 0
    while parts:
        name = parts.pop(0)
        if name in ("", "."):
            continue
        if name == "..":
            if resolved:
                resolved.pop()
            continue
        candidate = root.joinpath(*resolved, name)
        is_last = not parts
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            resolved.append(name)
            continue
        except NotADirectoryError:
            resolved.append(name)
            continue
        if stat.S_ISLNK(st.st_mode) and (follow_last or not is_last):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                raise ImageError(
                    f"too many levels of symbolic links while resolving {path} in the image",
                    path=root / str(path).lstrip("/"),
                    hint="the image contains a symlink loop; fix or remove the link",
                )
            target = os.readlink(candidate)
            target_parts = list(PurePosixPath(target).parts)
            if target.startswith("/"):
                resolved = []
                target_parts = target_parts[1:]
            parts = target_parts + parts
            continue
        resolved.append(name)
    return root.joinpath(*resolved)
