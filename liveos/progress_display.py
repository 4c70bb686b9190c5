"""Ready-made progress callbacks: tqdm bars (terminal, Jupyter) and plain lines (CI logs).

:func:`reporter_for` picks one for a stream: bars when it is a terminal or the code runs in a
Jupyter kernel (``tqdm.auto`` makes them notebook widgets there), plain lines otherwise (a
``\\r``-redrawn bar is noise in a log file). Both are plain :data:`~liveos.progress.ProgressCallback`
objects; :func:`reporting` is the form the CLI uses: a reporter, closed when the block ends.

A reporter that cannot write to its stream any more (a closed pipe) stops writing; it never
raises into the build for that.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, Protocol, TextIO

from liveos.progress import Phase, ProgressEvent, Unit

#: A plain-lines reporter writes a line per step at most this often (seconds) ...
LINE_EVERY = 5.0
#: ... or when the step has done this much more of its total.
LINE_STEP = 0.1
#: Bar layout of a step that cannot count: its name and the time it has been running.
_INDETERMINATE = "{desc}: {elapsed}{postfix}"
#: tqdm's unit and unit_scale per unit.
_BAR_UNITS = {Unit.BYTES: ("B", True), Unit.PERCENT: ("%", False), Unit.ITEMS: (" items", False)}


class Reporter(Protocol):
    """A progress callback that may hold resources (open bars) until :meth:`close`."""

    def __call__(self, event: ProgressEvent) -> None: ...

    def close(self) -> None:
        """End the display: bars of steps that never finished are closed."""
        ...


def _title(event: ProgressEvent) -> str:
    return event.step if event.product == event.step else f"{event.step} {event.product}"


def _amount(value: int, unit: Unit | None) -> str:
    if unit is Unit.BYTES:
        return f"{value / 1e6:.1f} MB"
    if unit is Unit.PERCENT:
        return f"{value}%"
    return str(value)


class LineReporter:
    """One line per step start and end, and at most one line every :data:`LINE_EVERY` seconds or
    every :data:`LINE_STEP` of the total in between (times come from the events)."""

    def __init__(self, stream: TextIO, *, prefix: str = "liveos: ") -> None:
        self.stream = stream
        self.prefix = prefix
        self._shown: dict[tuple[str, str], tuple[float, int]] = {}  #: (seconds, tenths) last shown
        self._lock = threading.Lock()
        self._broken = False

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            line = self._line(event)
            if line is not None and not self._broken:
                try:
                    self.stream.write(f"{self.prefix}{_title(event)}: {line}\n")
                    self.stream.flush()
                except (OSError, ValueError):  # the stream is gone (a closed pipe, a closed file)
                    self._broken = True

    def close(self) -> None:
        """Nothing to release (lines are written as they come)."""

    def _line(self, event: ProgressEvent) -> str | None:
        key = (event.step, event.product)
        if event.phase is Phase.STARTED:
            self._shown[key] = (0.0, 0)
            return "started"
        if event.phase is not Phase.ADVANCED:
            self._shown.pop(key, None)
            if event.phase is Phase.FAILED:
                return f"failed after {event.seconds:.1f} s"
            if event.reused:
                return f"reused ({event.seconds:.1f} s)"
            counted = ""
            if event.done is not None:
                items = " items" if event.unit is Unit.ITEMS else ""
                counted = f", {_amount(event.done, event.unit)}{items}"
            return f"done in {event.seconds:.1f} s{counted}"
        last_seconds, last_tenths = self._shown.get(key, (0.0, 0))
        fraction = event.fraction
        tenths = int(fraction / LINE_STEP) if fraction is not None else last_tenths
        if tenths <= last_tenths and event.seconds - last_seconds < LINE_EVERY:
            return None
        self._shown[key] = (event.seconds, tenths)
        done = _amount(event.done or 0, event.unit)
        if fraction is None or event.total is None:
            return done
        if event.unit is Unit.PERCENT:
            return done
        return f"{fraction:.0%} ({done} of {_amount(event.total, event.unit)})"


class BarReporter:
    """One tqdm bar per running step (``tqdm.auto``: a widget in Jupyter, a bar on a terminal);
    a step that cannot count shows how long it has been running."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = sys.stderr if stream is None else stream
        #: a terminal that never got a size (``script``, ``docker -t``): tqdm would draw nothing
        sizeless = _columns(self.stream) == 0
        self._ncols: int | None = 80 if sizeless else None
        self._nrows: int | None = 24 if sizeless else None
        self._bars: dict[tuple[str, str], Any] = {}
        self._lock = threading.Lock()
        self._broken = False

    def __call__(self, event: ProgressEvent) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                self._show(event)
            except (OSError, ValueError):  # the stream is gone
                self._broken = True

    def close(self) -> None:
        """Close the bars of steps that never ended (a build that stopped)."""
        with self._lock:
            for bar in self._bars.values():
                with contextlib.suppress(OSError, ValueError):
                    bar.close()
            self._bars.clear()

    def _show(self, event: ProgressEvent) -> None:
        from tqdm.auto import tqdm  # imported when first drawn: it picks terminal or notebook

        key = (event.step, event.product)
        if event.phase is Phase.STARTED:
            self._bars[key] = tqdm(  # events come throttled already: each one is drawn
                desc=_title(event),
                total=None,
                file=self.stream,
                leave=True,
                bar_format=_INDETERMINATE,
                mininterval=0,
                ncols=self._ncols,
                nrows=self._nrows,
            )
        bar = self._bars.get(key)
        if bar is None:
            return
        if event.done is not None:
            self._count(bar, event)
        if event.phase is Phase.FINISHED or event.phase is Phase.FAILED:
            del self._bars[key]
            if event.phase is Phase.FAILED:
                bar.set_postfix_str("failed", refresh=False)
            elif event.reused:
                bar.set_postfix_str("reused", refresh=False)
            bar.close()
        for other in self._bars.values():  # keep the elapsed time of steps that cannot count moving
            if other is not bar and other.total is None:
                other.refresh()

    @staticmethod
    def _count(bar: Any, event: ProgressEvent) -> None:
        if event.total is not None and event.total != bar.total:
            if bar.total is None:  # a total known at last: a real bar from now on
                bar.unit, bar.unit_scale = _BAR_UNITS.get(event.unit or Unit.ITEMS, (" items", False))
                bar.unit_divisor = 1024
                bar.bar_format = None
                bar.reset(total=event.total)
            else:
                bar.total = event.total
                with contextlib.suppress(AttributeError, ValueError):  # a notebook widget's bar
                    bar.container.children[1].max = event.total
        bar.update(event.done - bar.n)


def _columns(stream: TextIO) -> int | None:
    """The width of the terminal ``stream`` is (0: one that never got a size), or None."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return None


def in_notebook() -> bool:
    """True in a Jupyter kernel (where ``tqdm.auto`` draws widgets)."""
    from tqdm.auto import tqdm

    return any(base.__module__ == "tqdm.notebook" for base in tqdm.__mro__)  # its widget bar


def reporter_for(stream: TextIO | None = None) -> Reporter:
    """Bars for a terminal or a notebook, plain lines for anything else (``stream``: stderr)."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = stream.isatty()
    except (OSError, ValueError):
        tty = False
    if tty or in_notebook():
        return BarReporter(stream)
    return LineReporter(stream)


@contextlib.contextmanager
def reporting(stream: TextIO | None = None, *, enabled: bool = True) -> Iterator[Reporter | None]:
    """:func:`reporter_for` ``stream``, closed when the block ends; None when not ``enabled``."""
    if not enabled:
        yield None
        return
    reporter = reporter_for(stream)
    try:
        yield reporter
    finally:
        reporter.close()
