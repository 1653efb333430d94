"""A single background thread that runs model loading and inference, so the Slicer GUI never blocks.

Pure Python (``threading`` + ``queue``, no Qt): the GUI thread submits jobs and polls for finished ones
(Slicer does so from a ``qt.QTimer``); headless tests call :meth:`BackgroundWorker.wait`. Jobs run one at a
time in submission order, which keeps an :class:`~SAMMed3DLib.InteractiveSession` single-threaded.
"""

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional


@dataclass
class Job:
    """One unit of work; ``result`` or ``error`` is set when it has run. ``kind`` and ``payload`` belong to the
    caller (what to do with the result on the main thread)."""

    fn: Callable[[], Any]
    kind: str = ""
    payload: Any = None
    result: Any = None
    error: Optional[BaseException] = None
    started: Optional[float] = None  # time.monotonic() seconds
    finished: Optional[float] = None


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

    def submit(self, fn: Callable[[], Any], kind: str = "", payload: Any = None) -> Job:
        job = Job(fn, kind, payload)
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

    def poll(self) -> List[Job]:
        """Finished jobs in submission order, without blocking."""
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
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
            job.finished = time.monotonic()
            self.current = None
            self._done.put(job)
