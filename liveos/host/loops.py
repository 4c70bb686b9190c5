"""Loop devices: a byte range of a file as a read-only block device that cannot outlive liveos.

Attached with one ``LOOP_CONFIGURE`` ioctl (Linux >= 5.8): file, offset, size limit, read-only
and *autoclear* in one atomic step, so there is no moment where a device is attached but not
yet marked. Autoclear means the kernel detaches the device when its last user goes away: the
mount on it, and the file descriptor liveos holds. So when liveos dies -- also by SIGKILL, when
nothing of liveos runs any more -- its mount namespace is torn down (see
:mod:`liveos.host.namespace`), the mounts go, and with them every loop device.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import struct
from collections.abc import Iterator
from pathlib import Path

from liveos.errors import HostError
from liveos.host.privilege import require_root

log = logging.getLogger("liveos")

LOOP_CONTROL = Path("/dev/loop-control")
LOOP_CLR_FD = 0x4C01
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
#: struct loop_config: fd, block_size, struct loop_info64 (device, inode, rdevice, offset,
#: sizelimit, number, encrypt_type, encrypt_key_size, flags, file_name[64], crypt_name[64],
#: encrypt_key[32], init[2]), reserved[8].
_LOOP_CONFIG = struct.Struct("=II QQQQQ IIII 64s64s32s 2Q 8Q")
#: Another process may take the free device between GET_FREE and CONFIGURE; try again.
_ATTEMPTS = 16


def _config(file_fd: int, offset: int, size: int | None, read_only: bool, name: bytes) -> bytes:
    flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
    return _LOOP_CONFIG.pack(
        file_fd, 0, 0, 0, 0, offset, size or 0, 0, 0, 0, flags, name[:63], b"", b"", 0, 0, *([0] * 8)
    )


@contextlib.contextmanager
def loop_device(
    file: Path, *, offset: int = 0, size: int | None = None, read_only: bool = True
) -> Iterator[Path]:
    """Attach ``size`` bytes of ``file`` at ``offset`` to a free loop device (autoclear); the device
    is detached on exit, or by the kernel as soon as nothing uses it any more."""
    require_root("attaching a loop device")
    if not LOOP_CONTROL.exists():
        raise HostError("no loop device support (/dev/loop-control is missing)", hint="modprobe loop")
    device_fd = -1
    file_fd = os.open(file, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        device_fd, device = _attach(file, file_fd, offset, size, read_only)
        os.close(file_fd)
        file_fd = -1
        log.info("loop device %s: %s at offset %d (%s bytes)", device, file, offset, size or "all")
        yield device
    finally:
        if file_fd >= 0:
            os.close(file_fd)
        if device_fd >= 0:
            with contextlib.suppress(OSError):  # busy: autoclear detaches it on the last close
                fcntl.ioctl(device_fd, LOOP_CLR_FD)
            os.close(device_fd)


def _attach(file: Path, file_fd: int, offset: int, size: int | None, read_only: bool) -> tuple[int, Path]:
    config = _config(file_fd, offset, size, read_only, os.fsencode(file.name))
    control = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(_ATTEMPTS):
            number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
            device = Path(f"/dev/loop{number}")
            device_fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
            try:
                fcntl.ioctl(device_fd, LOOP_CONFIGURE, config)
            except OSError as exc:
                os.close(device_fd)
                if exc.errno == errno.EBUSY:
                    continue  # taken by someone else in the meantime
                raise HostError(
                    f"could not attach {file} to {device}: {exc.strerror}",
                    path=file,
                    hint="the kernel needs loop devices with LOOP_CONFIGURE (Linux 5.8 or newer)",
                ) from exc
            except BaseException:
                os.close(device_fd)
                raise
            return device_fd, device
    except OSError as exc:
        raise HostError(
            f"could not get a free loop device for {file}: {exc.strerror}",
            path=file,
            hint="load the loop module with more devices (modprobe loop max_loop=64)",
        ) from exc
    finally:
        os.close(control)
    raise HostError(f"every free loop device was taken by another process while attaching {file}")
