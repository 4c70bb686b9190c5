"""The one check that the process may do privileged work (loop devices, mounts, namespaces)."""

from __future__ import annotations

import os

from liveos.errors import HostError


def require_root(what: str) -> None:
    """Raise :class:`HostError` unless running as root (loop devices and mounts need it)."""
    if os.geteuid() != 0:
        raise HostError(f"{what} needs root (loop devices and mounts)", hint="run liveos as root (sudo)")
