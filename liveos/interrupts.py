"""Interrupts that wait for a safe moment: SIGINT/SIGTERM exceptions held back while forking.

liveos turns SIGINT and SIGTERM into exceptions so that every ``finally`` unwinds
(:mod:`liveos.host.signals`). Python raises such an exception at whatever bytecode the main
thread runs -- including inside the handlers ``os.fork`` runs, where it is *swallowed*:
logging's after-fork handler then never releases its module lock, and the next log call of any
thread deadlocks (seen: a SIGTERM during ``subprocess.Popen``). :func:`held` marks such a
region; a handler that fires inside it stores its exception with :func:`deliver`, and the
region raises it on exit, where it unwinds normally.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

_depth = 0  #: nesting of held() in the main thread (signal handlers run only there)
_pending: list[BaseException] = []


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold back signal exceptions of the main thread for the block; raise the first on exit.
    In another thread this does nothing (signal handlers never run there)."""
    global _depth
    if not _in_main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending:
            exc = _pending.pop(0)
            _pending.clear()
            raise exc


def deliver(exc: BaseException) -> None:
    """Raise ``exc`` now (from a signal handler) -- or, inside :func:`held`, when it ends."""
    if _depth and _in_main_thread():
        if not _pending:
            _pending.append(exc)
        return
    raise exc


def pending() -> bool:
    """True when a held-back signal exception waits to be raised."""
    return bool(_pending)
