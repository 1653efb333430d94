"""A worker's engine thread: its sessions' steps one at a time, refinements before encodes (no Ray).

On one device (a GPU, or a CPU's cores) steps run one after the other anyway. In arrival order, a refinement
(~0.1-0.5 s on a CPU) waited behind every other user's queued first click, each running the image encoder
(1.3-1.8 s): seconds. Here a refinement waits for at most one encode already running, and for the refinements
queued before it; encodes run in arrival order whenever no refinement waits.
"""

import itertools
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Dict, Tuple

import numpy as np

from ..coordinates import ras_to_lps

REFINE, ENCODE = 0, 1
"""Step priorities (lower runs first)."""


def priority(session: Any, op: str, args: Dict[str, Any]) -> int:
    """``ENCODE`` for a click that will run the image encoder (the session's first click, or one outside its
    current ROI); ``REFINE`` for every other step, including clicks the engine will refuse."""
    if op != "click":
        return REFINE
    roi = session.roi
    if roi is None:
        return ENCODE
    try:
        point = ras_to_lps(np.asarray(args.get("point"), dtype=float))
        return REFINE if roi.contains(point) else ENCODE
    except (TypeError, ValueError, OverflowError):
        return REFINE


class EngineThread:
    """One daemon thread running submitted work by priority, then arrival (see the module docstring)."""

    def __init__(self, name: str = "engine") -> None:
        self._queue: queue.PriorityQueue[Tuple[int, int, Callable[[], Any], Future]] = queue.PriorityQueue()
        self._arrival = itertools.count()
        threading.Thread(target=self._serve, daemon=True, name=name).start()

    def run(self, work: Callable[[], Any], rank: int = REFINE) -> Any:
        """``work()``'s result (or exception), run on the engine thread with priority ``rank``."""
        future: Future = Future()
        self._queue.put((rank, next(self._arrival), work, future))
        return future.result()

    def pending(self) -> int:
        """Work queued and not yet started."""
        return self._queue.qsize()

    def _serve(self) -> None:
        while True:
            _, _, work, future = self._queue.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:  # handed to the caller, which raises it
                future.set_exception(exc)
