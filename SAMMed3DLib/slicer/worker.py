"""A single background thread that runs model loading and inference, so the Slicer GUI never blocks.

Pure Python (``threading`` + ``queue``, no Qt): the GUI thread submits jobs and collects finished ones with
:meth:`BackgroundWorker.poll` (Slicer does so from a ``qt.QTimer``). Jobs run one at a time in submission
order, which keeps an :class:`~SAMMed3DLib.InteractiveSession` single-threaded.

Slicer's main thread holds Python's GIL while it sits in the Qt event loop, so a Python worker thread runs only
while the main thread is inside Python and releases the GIL. ``poll(wait_s)`` therefore blocks on the queue of
finished jobs for up to ``wait_s`` seconds while a job runs: that wait releases the GIL and the worker runs at
full speed (SAMMed3DLib/bench/gil_loop.py is a stand-in main loop that holds the GIL the way Slicer does; the
tests and ``bench-mainloop`` run the module under it).
"""

import contextlib
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

POLL_INTERVAL_S = 0.0
"""Period of the GUI's poll timer (seconds) while work is pending: 0, a Qt timer that fires whenever the event
queue is empty, since each poll already waits (a first tick 20 ms late delayed every click by 20 ms)."""
POLL_WAIT_S = 0.05
"""How long each poll waits for the worker (seconds): the GUI stays responsive at this granularity, and the
worker gets the GIL for all but the main loop's own event handling between ticks."""


def _ignore(_: Any) -> None:
    """Default completion handler: nothing to do on the main thread."""


@dataclass
class Job:
    """One unit of work. ``fn`` runs on the worker; then, on the main thread (in :meth:`BackgroundWorker.poll`'s
    caller), ``on_done(result)`` or ``on_error(exception)``."""

    fn: Callable[[], Any]
    on_done: Callable[[Any], None] = _ignore
    on_error: Callable[[BaseException], None] = _ignore
    result: Any = None
    error: Optional[BaseException] = None
    started: Optional[float] = None  # time.monotonic() seconds

    def complete(self) -> None:
        """Main thread: hand the outcome to its handler."""
        if self.error is not None:
            self.on_error(self.error)
        else:
            self.on_done(self.result)


@dataclass
class Progress:
    """Download progress shared between the worker (writes) and the GUI (reads); ``cancel()`` stops it."""

    done: int = 0
    total: Optional[int] = None
    bytes_per_second: float = 0.0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def update(self, done: int, total: Optional[int], bytes_per_second: float) -> bool:
        """Progress callback for :func:`SAMMed3DLib.weights.resolve_checkpoint`; False asks it to stop."""
        self.done, self.total, self.bytes_per_second = done, total, bytes_per_second
        return not self.cancelled.is_set()

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def fraction(self) -> Optional[float]:
        return self.done / self.total if self.total else None


class BackgroundWorker:
    """Runs submitted jobs on one daemon thread; finished jobs are collected with :meth:`poll`."""

    def __init__(self) -> None:
        self._todo: queue.Queue[Optional[Job]] = queue.Queue()
        self._done: queue.Queue[Job] = queue.Queue()
        self._pending = 0  # submitted and not yet returned by poll(); only touched by the main thread
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self.current: Optional[Job] = None

    def submit(self, job: Job) -> Job:
        self._ensure_thread()
        self._pending += 1
        self._todo.put(job)
        return job

    @property
    def busy(self) -> bool:
        """Whether a submitted job has not been collected by :meth:`poll` yet."""
        return self._pending > 0

    def running_for(self) -> float:
        """Seconds the current job has been running (0 when idle): the GUI shows progress only past a delay."""
        job = self.current
        return time.monotonic() - job.started if job is not None and job.started else 0.0

    def poll(self, wait_s: float = 0.0) -> List[Job]:
        """Finished jobs in submission order. While a job is still running and none has finished, wait up to
        ``wait_s`` seconds for one: the wait releases the GIL, so the worker runs even under a main loop that
        holds it."""
        finished = self._drain()
        if not finished and self._pending and wait_s > 0:
            with contextlib.suppress(queue.Empty):
                finished.append(self._done.get(timeout=wait_s))
            finished += self._drain()
        self._pending -= len(finished)
        return finished

    def wait(self, timeout: Optional[float] = None) -> List[Job]:
        """Block until every submitted job has finished (tests, self-test); returns them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        finished: List[Job] = []
        while len(finished) < self._pending:
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if remaining == 0.0:
                raise TimeoutError(f"background job still running after {timeout} s")
            try:
                finished.append(self._done.get(timeout=remaining))
            except queue.Empty:
                continue
        self._pending -= len(finished)
        return finished

    def shutdown(self) -> None:
        """Let the thread end after the job it is running; pending jobs are dropped."""
        with self._lock:
            if self._thread is not None:
                self._todo.put(None)
                self._thread = None

    def _drain(self) -> List[Job]:
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                return finished

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="SAMMed3D-worker", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            self.current = job
            job.started = time.monotonic()
            try:
                job.result = job.fn()
            except BaseException as exc:  # noqa: BLE001 - every failure goes back to the main thread
                job.error = exc
            self.current = None
            self._done.put(job)
