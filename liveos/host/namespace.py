"""A private mount namespace for liveos' mounts, so that no mount survives liveos.

Every mount liveos makes (the image's filesystems, overlays, squashfs of a re-opened ISO) is made
in a mount namespace of its own, entered once per thread (the first time an image is opened)
with ``unshare(CLONE_NEWNS)`` and propagation made private. The kernel tears a mount namespace
down when its last process is gone: if liveos dies, even by SIGKILL, its mounts disappear with
it, and the loop devices under them (attached with autoclear, see :mod:`liveos.host.loops`)
detach. The host's mount table never sees a liveos mount.

The price: other processes do not see the mounted tree. To look at it from a shell while
liveos runs: ``nsenter --target <liveos pid> --mount ls <root>``. The namespace belongs to the
calling thread (and to the threads and processes it starts afterwards); open images in the
thread that builds from them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading

from liveos.errors import HostError
from liveos.host.privilege import require_root

log = logging.getLogger("liveos")

CLONE_NEWNS = 0x00020000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18

_state = threading.local()  #: ``private`` is True in threads already in their own namespace


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)


def private_mounts() -> None:
    """Move the calling thread into a private mount namespace (once; later calls do nothing)."""
    if getattr(_state, "private", False):
        return
    require_root("a private mount namespace")
    libc = _libc()
    if libc.unshare(CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise HostError(
            f"cannot make a private mount namespace: {os.strerror(err)}",
            hint="liveos needs CAP_SYS_ADMIN (run it as root, outside restrictive containers)",
        )
    _state.private = True
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        err = ctypes.get_errno()
        raise HostError(f"cannot make the mount namespace private: {os.strerror(err)}")
    log.info("liveos mounts live in a private mount namespace (thread %d)", threading.get_native_id())
