"""A stand-in for Slicer's main loop: it holds Python's GIL while idle and runs the module's poll only on its timer.

In Slicer the main thread sits in Qt's event loop holding the GIL (CTK's Python manager never calls
``PyEval_SaveThread``), so a Python worker thread runs only while the main thread is inside Python code that
releases it. This loop does the same: between timer ticks it sleeps in libc's ``usleep`` called through
``ctypes.PyDLL``, which keeps the GIL during the call (``ctypes.CDLL`` would release it), and on each tick it calls
the module's timer callback, as a ``qt.QTimer`` does (a tick that overran its interval is followed at once by the
next one, without a burst of catch-up ticks).

Used by ``bench-mainloop`` (:mod:`.mainloop`) and by the tests' ``under_main_loop`` fixture
(Testing/support/mainloop.py): one copy of the loop for both. Needs only the standard library.
"""

import ctypes
import ctypes.util
import time
from typing import Callable

_LIBC = ctypes.PyDLL(ctypes.util.find_library("c") or "libc.so.6")
_LIBC.usleep.argtypes = [ctypes.c_uint]

EVENT_S = 0.001
"""Seconds the loop spends on other events (with the GIL) between two ticks, however late the tick is."""


def hold_gil(seconds: float) -> None:
    """Sleep ``seconds`` without releasing the GIL: no other Python thread runs meanwhile."""
    _LIBC.usleep(max(int(seconds * 1e6), 0))


def run_loop(tick: Callable[[], bool], interval_s: float, timeout_s: float = 120.0) -> float:
    """Call ``tick`` every ``interval_s`` seconds, holding the GIL in between, until it returns False (idle).
    Returns the seconds the loop ran. Raises TimeoutError after ``timeout_s``."""
    start = time.perf_counter()
    next_tick = start + interval_s
    while True:
        now = time.perf_counter()
        hold_gil(max(next_tick - now, EVENT_S))
        fired = time.perf_counter()
        next_tick = fired + interval_s
        if not tick():
            return time.perf_counter() - start
        if fired - start > timeout_s:
            raise TimeoutError(f"the module was still busy after {timeout_s} s under the main loop")
