"""Signals as exceptions: a SIGTERM must unwind like Ctrl-C, so every ``finally`` releases what it holds.

Python's default SIGTERM action kills the process without unwinding, leaving loop devices and
mounts behind.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("liveos")


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM (exit code 143)."""


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Turn the first SIGTERM into a :class:`Terminated` exception so ``finally`` blocks run.

    Python's default SIGTERM action kills the process without unwinding, leaving loop devices
    and mounts behind. Later SIGTERMs during cleanup are ignored so cleanup is not cut short.
    Only the main thread can install handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            log.warning("SIGTERM again during cleanup: ignored until cleanup finishes")
            return
        fired = True
        raise Terminated(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
