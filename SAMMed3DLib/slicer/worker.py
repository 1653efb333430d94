"""The module's worker: one daemon thread that runs jobs one at a time, in order, each with its ``Future``.

A daemon thread, so that quitting Slicer never waits for it: a job still running then (a click on the CPU, a
request to a server that does not answer) is abandoned with the process. ``concurrent.futures``'
``ThreadPoolExecutor`` cannot be used: Python joins its threads at exit, so the application waited for the
running job, up to a server request's time-out.
"""

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Optional, Tuple

Job = Tuple[Future, Callable[[], Any]]


class Worker:
    """Jobs run on one daemon thread named ``name``, started on the first :meth:`submit`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._jobs: queue.SimpleQueue[Optional[Job]] = queue.SimpleQueue()
        self._thread: Optional[threading.Thread] = None

    def submit(self, job: Callable[[], Any]) -> Future:
        """Run ``job`` after the jobs before it; its outcome (result or exception) in the returned future."""
        future: Future = Future()
        self._jobs.put((future, job))
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return future

    def stop(self) -> None:
        """The thread ends once the jobs submitted so far have run or been cancelled; nothing waits for it."""
        self._jobs.put(None)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue  # cancelled before it started
            try:
                future.set_result(job())
            except BaseException as exc:  # noqa: BLE001 - handed to whoever collects the future
                future.set_exception(exc)
            del future, job, item  # a finished job's result must not outlive its collection (a mask snapshot
            # held here would make the session's next write copy the whole volume)
