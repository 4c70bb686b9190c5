"""Signal exceptions wait while liveos forks (liveos.interrupts), then unwind as usual."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from liveos import interrupts
from liveos.host.signals import Terminated, signals_as_exceptions
from liveos.run import run


def test_a_signal_inside_a_held_region_is_raised_when_it_ends() -> None:
    reached = []
    with signals_as_exceptions(), pytest.raises(Terminated), interrupts.held():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler has run by now: bytecodes went by
            pass
        reached.append("end of the region")
    assert reached == ["end of the region"]
    assert not interrupts.pending()


def test_sigint_is_held_too_and_outside_it_raises_at_once() -> None:
    with signals_as_exceptions():
        with pytest.raises(KeyboardInterrupt), interrupts.held(), interrupts.held():
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_held_is_a_no_op_in_other_threads() -> None:
    depth: list[int] = []

    def worker() -> None:
        with interrupts.held():
            depth.append(interrupts._depth)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert depth == [0]


def test_a_signal_while_spawning_kills_the_new_process() -> None:
    """The process a held-back signal interrupted the start of is killed and reaped, not leaked."""
    started: list[int] = []
    with signals_as_exceptions(), pytest.raises(Terminated), interrupts.held():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):
            pass
        # still held: run() starts its process, then the region's end raises
        run(["sleep", "30"], started=lambda p: started.append(p.pid), timeout=60)
    assert started == [] or not os.path.exists(f"/proc/{started[0]}")
