"""Progress of a build: every long step reports through ONE callback a build system can subscribe to.

A build hands each :class:`ProgressEvent` to one callback (:data:`ProgressCallback`): a step
STARTED, ADVANCED ``done`` of ``total`` (bytes, items or percent) where the step can count, and
FINISHED (``reused`` when its product came from the cache) or FAILED. Steps run side by side in
threads (dracut next to mksquashfs), so events come from several threads; :class:`Progress`
calls the callback from one thread at a time, so a callback needs no locking of its own.

Guarantees a subscriber may rely on: every STARTED is followed by exactly one FINISHED or
FAILED of the same (step, product); ADVANCED events of a step come at most every
:data:`INTERVAL` seconds (the first one and the one reaching ``total`` always); ``done`` never
goes down and never exceeds ``total`` (an estimated total that turns out too small grows); a
FINISHED event carries ``done == total`` whenever the step counted at all.

A callback that raises stops the build: the exception propagates out of ``write_iso()`` /
``write_pxe()`` like any failure (the tools of parallel steps are killed, scratch space is
removed). That is deliberate: a build system cancels a build by raising from its callback, and
a broken display never fails unnoticed. Only the FAILED event of a step that is already failing
cannot raise over the first error (its exception is logged instead).

The tools of a step sit layers below the build (mksquashfs behind :mod:`liveos.squashfs`, the
CPIO writer behind :class:`~liveos.initramfs.Initramfs`), so they do not receive a reporter as
an argument: like logging, progress is ambient. :meth:`Progress.step` makes its
:class:`StepProgress` the :func:`current` one of the running thread (a :mod:`contextvars`
variable, so parallel steps never see each other's), and a tool reports to ``current()``, which
outside any step is a reporter that drops everything.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger("liveos")

#: Seconds between two ADVANCED events of one step (about 10 per second at most).
INTERVAL = 0.1


class Phase(enum.StrEnum):
    """Where a step is."""

    STARTED = "started"
    ADVANCED = "advanced"  #: ``done`` of ``total`` changed
    FINISHED = "finished"
    FAILED = "failed"  #: the step raised; the build is stopping


class Unit(enum.StrEnum):
    """What ``done`` and ``total`` count."""

    BYTES = "bytes"
    ITEMS = "items"  #: files, blocks: things of one kind
    PERCENT = "percent"  #: ``total`` is 100


@dataclass(frozen=True)
class ProgressEvent:
    """One step's progress at one moment."""

    step: str  #: the kind of step (:class:`~liveos.plan.StepKind` value): ``squashfs``, ``iso``...
    product: str  #: what the step builds (``rootfs.img``, ``initrd-6.1.0-13-amd64``...)
    phase: Phase
    done: int | None = None  #: None: the step has counted nothing (yet)
    total: int | None = None  #: None: not known (an indeterminate step)
    unit: Unit | None = None
    reused: bool = False  #: FINISHED: the product was taken from the cache, not built
    seconds: float = 0.0  #: since the step started

    @property
    def fraction(self) -> float | None:
        """``done / total`` in 0..1, or None when either is unknown."""
        if self.done is None or not self.total:
            return None
        return min(self.done / self.total, 1.0)


#: What a build calls with each event (from one thread at a time).
ProgressCallback = Callable[[ProgressEvent], None]


def ignore(event: ProgressEvent) -> None:
    """The callback that does nothing (the default: a build reports to nobody)."""


class Progress:
    """The progress of one build: opens steps and hands their events to ``callback`` in turn."""

    def __init__(
        self,
        callback: ProgressCallback | None = None,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.callback = callback
        self.interval = interval
        self.clock = clock
        self._lock = threading.RLock()  #: one callback call at a time, whatever thread reports

    def emit(self, event: ProgressEvent) -> None:
        """Call the callback (an exception from it propagates: see the module docstring)."""
        if self.callback is None:
            return
        with self._lock:
            self.callback(event)

    @contextlib.contextmanager
    def step(
        self, step: str, product: str, *, total: int | None = None, unit: Unit | None = None
    ) -> Iterator[StepProgress]:
        """Report one step: STARTED now, FINISHED when the block ends (FAILED if it raises).

        Inside the block the yielded reporter is :func:`current` in this thread; ``total`` and
        ``unit`` are what the step will count, if known before it starts.
        """
        reporter = StepProgress(self, str(step), product, total=total, unit=unit)
        reporter.start()
        token = _current.set(reporter)
        try:
            yield reporter
        except BaseException:
            reporter.fail()
            raise
        finally:
            _current.reset(token)
        reporter.finish()


class StepProgress:
    """What a running step reports to (thread-safe; throttled; see the module docstring)."""

    def __init__(
        self,
        progress: Progress,
        step: str,
        product: str,
        *,
        total: int | None = None,
        unit: Unit | None = None,
    ) -> None:
        self.progress = progress
        self.step = step
        self.product = product
        self.reused = False  #: set by the step when it took its product from the cache
        self._total = total
        self._unit = unit
        self._done: int | None = None
        self._started = progress.clock()
        self._last = float("-inf")  #: when the last ADVANCED event went out
        self._sent: int | None = None  #: ``done`` of the last ADVANCED event sent
        self._ended = False
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        """False when nobody listens (a tool may skip the work of measuring)."""
        return self.progress.callback is not None and not self._ended

    def expect(self, total: int | None, unit: Unit) -> None:
        """Set what the step will count before it counts (``total`` None: unknown)."""
        with self._lock:
            self._total, self._unit = total, unit

    def advance(self, done: int, total: int | None = None, unit: Unit | None = None) -> None:
        """``done`` so far (of ``total``, in ``unit``, if given: they replace the expected ones).

        Cheap when nothing is sent: tools call it for every buffer or block they write.
        """
        if not self.active:
            return
        with self._lock:
            if self._ended:
                return
            if total is not None:
                self._total = total
            if unit is not None:
                self._unit = unit
            done = max(done, self._done or 0)
            self._done = done
            if self._total is not None and done > self._total:
                self._total = done
            now = self.progress.clock()
            complete = self._total is not None and done >= self._total
            if done == self._sent or (now - self._last < self.progress.interval and not complete):
                return
            self._last, self._sent = now, done
            self.progress.emit(self._event(Phase.ADVANCED, now))

    def start(self) -> None:
        """Send STARTED (done by :meth:`Progress.step`)."""
        self.progress.emit(self._event(Phase.STARTED, self._started))

    def finish(self) -> None:
        """Send FINISHED; what the step counted becomes its total (done by :meth:`Progress.step`)."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            if self._done is not None:
                self._total = self._done
            event = self._event(Phase.FINISHED, self.progress.clock())
        self.progress.emit(event)

    def fail(self) -> None:
        """Send FAILED; an exception of the callback is logged, not raised over the step's own."""
        with self._lock:
            if self._ended:
                return
            self._ended = True
            event = self._event(Phase.FAILED, self.progress.clock())
        try:
            self.progress.emit(event)
        except Exception:
            log.warning("the progress callback failed on %s %s", self.step, self.product, exc_info=True)

    def _event(self, phase: Phase, now: float) -> ProgressEvent:
        return ProgressEvent(
            self.step,
            self.product,
            phase,
            self._done,
            self._total,
            self._unit,
            reused=self.reused and phase is Phase.FINISHED,
            seconds=max(now - self._started, 0.0),
        )


_IDLE = StepProgress(Progress(None), "", "")
_current: contextvars.ContextVar[StepProgress] = contextvars.ContextVar("liveos_progress", default=_IDLE)


def current() -> StepProgress:
    """The step running in this thread (its tools report here); outside a step, one that drops
    everything."""
    return _current.get()
