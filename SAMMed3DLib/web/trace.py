"""A time line of the station's work on a click, for finding where a click's time goes.

With ``SAMMED3D_WEB_TRACE=FILE`` in its environment (``bench-web`` passes its environment on), the station
writes one line per event to ``FILE``: monotonic milliseconds, the thread, the event and its detail
(tab-separated). Events: the mouse button at the view (``LeftButtonPressEvent`` ... and the view), the click's
Defined point (``points``), the worker's job (``submit``, ``job-start``, ``job-end``), the poll that collects
it (``collect``), the segment write (``apply-mask``, ``write-segment`` and their ``-end``), each view's render
(``render``/``render-end`` and the view), each pushed frame (``push`` and the view), the page state's click
count (``state-clicks``), and the event loop's stalls over 20 ms (``loop-stall``). Without the variable nothing
is patched and nothing is written.
"""

import asyncio
import os
import threading
import time
from typing import Any, Callable, Optional

ENV = "SAMMED3D_WEB_TRACE"
STALL_MS = 20.0
_out: Optional[Any] = None
_lock = threading.Lock()


def event(name: str, detail: Any = "") -> None:
    """One line of the time line (nothing when tracing is off)."""
    if _out is None:
        return
    line = f"{time.monotonic() * 1000:.1f}\t{threading.current_thread().name}\t{name}\t{detail}\n"
    with _lock:
        _out.write(line)
        _out.flush()


def _wrap(owner: Any, attribute: str, before: Callable[..., None], after: Optional[Callable[..., None]] = None) -> None:
    original = getattr(owner, attribute)

    def traced(*args: Any, **kwargs: Any) -> Any:
        before(*args, **kwargs)
        try:
            return original(*args, **kwargs)
        finally:
            if after is not None:
                after(*args, **kwargs)

    setattr(owner, attribute, traced)


def _view_name(window: Any) -> str:
    return getattr(window, "trace_name", "?")


def install() -> bool:
    """Patch the station's pieces to write the time line when ``SAMMED3D_WEB_TRACE`` names a file."""
    global _out
    path = os.environ.get(ENV)
    if not path or _out is not None:
        return _out is not None
    _out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the process's life

    from trame_rca.schedulers import RcaImageRenderScheduler
    from trame_slicer.rca_view.rca_view_factory import RcaWindow

    from ..slicer import controller, mrml, worker

    def interaction(window: Any, message: dict) -> None:
        kind = message.get("type", "")
        if "Press" in kind or "Release" in kind:
            event(kind, _view_name(window))

    _wrap(RcaWindow, "process_interaction_event", interaction)
    images = RcaWindow.img_cols_rows

    def img_cols_rows(window: Any) -> Any:
        event("render", _view_name(window))
        try:
            return images.fget(window)
        finally:
            event("render-end", _view_name(window))

    RcaWindow.img_cols_rows = property(img_cols_rows)
    push_callback = RcaImageRenderScheduler.set_push_callback

    def set_push_callback(scheduler: Any, callback: Callable) -> None:
        def pushed(image: Any, meta: Any) -> Any:
            event("push", _view_name(scheduler.rca))
            return callback(image, meta)

        push_callback(scheduler, pushed)

    RcaImageRenderScheduler.set_push_callback = set_push_callback
    _wrap(controller.SegmentationController, "process_points", lambda *a, **k: event("points"))
    _wrap(mrml, "apply_mask", lambda *a, **k: event("apply-mask"), lambda *a, **k: event("apply-mask-end"))
    _wrap(mrml, "write_segment", lambda *a, **k: event("write-segment"), lambda *a, **k: event("write-segment-end"))
    submit = worker.Worker.submit

    def traced_submit(self: Any, job: Callable[[], Any]) -> Any:
        def run() -> Any:
            event("job-start")
            try:
                return job()
            finally:
                event("job-end")

        event("submit")
        return submit(self, run)

    worker.Worker.submit = traced_submit
    collect = controller.SegmentationController._collect

    def traced_collect(self: Any, wait_s: float) -> None:
        done = bool(self._pending and self._pending[0].future.done())
        if done:
            event("collect")
        collect(self, wait_s)
        if done:
            event("collect-end")

    controller.SegmentationController._collect = traced_collect
    return True


def name_view(view: Any, name: str) -> None:
    """Give the trame-rca window of ``view`` a name for the time line."""
    scheduler = getattr(getattr(view, "_scheduled_render", None), "_scheduler", None)
    if scheduler is not None:
        scheduler.rca.trace_name = name


async def watch_loop() -> None:
    """Note every stall of the event loop over :data:`STALL_MS`."""
    period = 0.005
    while _out is not None:
        started = time.monotonic()
        await asyncio.sleep(period)
        late = (time.monotonic() - started - period) * 1000
        if late > STALL_MS:
            event("loop-stall", f"{late:.0f}")
