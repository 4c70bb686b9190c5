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

from liveos.interrupts import deliver

log = logging.getLogger("liveos")


class Terminated(SystemExit):
    """Raised in the main thread when the process receives SIGTERM (exit code 143)."""


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """Turn the first SIGTERM into a :class:`Terminated` exception so ``finally`` blocks run, and
    SIGINT into ``KeyboardInterrupt`` as Python does -- both held back while liveos forks a
    process (:mod:`liveos.interrupts`: an exception there would be swallowed and leave
    logging's lock taken).

    Python's default SIGTERM action kills the process without unwinding, leaving loop devices
    and mounts behind. Later SIGTERMs during cleanup are ignored so cleanup is not cut short.
    A SIGINT handler the caller installed is left alone. Only the main thread can install
    handlers; elsewhere this is a no-op.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def on_term(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        if fired:
            log.warning("SIGTERM again during cleanup: ignored until cleanup finishes")
            return
        fired = True
        deliver(Terminated(128 + signum))

    def on_int(signum: int, frame: FrameType | None) -> None:
        deliver(KeyboardInterrupt())

    previous_term = signal.signal(signal.SIGTERM, on_term)
    own_int = signal.getsignal(signal.SIGINT) is signal.default_int_handler
    previous_int = signal.signal(signal.SIGINT, on_int) if own_int else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
