"""What the Slicer module does, without Qt: clicks in markups point lists → engine → the chosen segment.

:class:`SegmentationController` is the module's Logic (SAMMed3D.py mixes it into ``ScriptedLoadableModuleLogic``).
It owns the model cache and one :class:`~SAMMed3DLib.InteractiveSession` per (volume, segment) (a
:class:`~SAMMed3DLib.remote.RemoteSession` with the Server device: :mod:`.remote_models`). There is one
history: the session's. Each session step carries the edit it made to the segment as its payload, so undo, redo
and reset read the edits back from the session; steps that fall off the session's history hand their payloads
back and are folded into one edit that reset still reverts. The point lists are a view of the session's clicks
(:mod:`.point_lists`, :mod:`.markups`): a new Defined point is a click, a click's point the user deletes or moves
is put back with a message.

The scene is the truth; a session is a cache of it, checked cheaply before each click, undo, redo and reset and
before a click's result is written (:mod:`.freshness`, applied in :mod:`.checks`).

Model loading and inference run on one daemon worker thread (:mod:`.worker`), one job at a time in order,
so a session is never stepped from two threads; every MRML read/write happens on the main thread, in
:meth:`~SegmentationController.poll` (Slicer calls it from a ``qt.QTimer``, tests through ``wait``), which hands
each finished job's future to this class's handler for its action type. Actions are queued and run in order, so
a click made while a prediction runs is never lost.

Calls go down only: nothing below calls back into this file (no callbacks are handed down). A refinement click,
4 files: the point list's event → the Logic (SAMMed3D.py, this class) ``process_points`` → ``_start_click`` → on
the worker thread the session's own ``add_click`` (session.py) → ``poll`` → ``_finish_click`` →
:func:`.mrml.apply_mask` (mrml.py). A target's first click also asks the GUI's ``dependencies_ready`` and runs
:func:`first_click` on the worker: the model (models.py), the session (remote_models.py), the same ``add_click``;
the model is usually loaded by then, on the same worker, ahead of the click (loading.py: the model side).
"""

import collections
import concurrent.futures
import time
from dataclasses import replace
from functools import partial, singledispatchmethod
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .. import regions
from ..errors import InputError
from . import actions, feedback, freshness, markups, mrml, targets
from .actions import Action, Click, ConnectionTest, Download, Errand, Finish, Pending, Preload, Redo, Reset, Show, Undo
from .checks import SceneChecks, first_click
from .feedback import DELETED_POINT, MOVED_POINT, TORCH_NEEDED, Reporter
from .loading import ModelLoading
from .models import DEFAULT_MODEL, DEVICE_CHOICES, DEVICES, ModelStore, ModuleOptions, Progress
from .point_lists import PointLists
from .remote_models import closer, error_line
from .targets import Inputs, SegmentClicks, Target, TargetKey, Targets, VolumeCache
from .worker import Worker

__all__ = ["DEFAULT_MODEL", "DEVICE_CHOICES", "DEVICES", "DELETED_POINT", "POLL_INTERVAL_S", "POLL_WAIT_S",
           "TORCH_NEEDED", "Inputs", "ModuleOptions", "SegmentationController"]  # fmt: skip

POLL_INTERVAL_S = 0.0
"""Period of the GUI's poll timer (seconds) while work is pending: 0, a Qt timer that fires whenever the event
queue is empty, since each poll already waits (a first tick 20 ms late delayed every click by 20 ms)."""
POLL_WAIT_S = 0.05
"""How long each poll waits for the worker (seconds): the GUI stays responsive at this granularity, and the
worker gets the GIL for all but the main loop's own event handling between ticks (Slicer's main thread holds
the GIL in its event loop; waiting on a future releases it. SAMMed3DLib/bench/gil_loop.py: a stand-in loop)."""


class SegmentationController(Reporter, SceneChecks, ModelLoading, PointLists):
    """Main-thread orchestrator; see the module docstring. ``on_message(text, is_error)`` reports to the GUI
    (:class:`.feedback.Reporter`), ``on_place_mode()`` tells it that place mode started or ended."""

    def __init__(self, model_loader: Optional[Callable] = None) -> None:
        Reporter.__init__(self)
        SceneChecks.__init__(self)
        ModelLoading.__init__(self)
        PointLists.__init__(self)
        self.options = ModuleOptions()
        self.inputs = Inputs()
        self.on_place_mode: Optional[Callable[[], None]] = None
        self.on_work: Optional[Callable[[], None]] = None  # work was queued: the GUI starts polling
        self.status = ""
        self.download_progress: Optional[Progress] = None
        self.models = ModelStore(model_loader)
        self.history_limit: Optional[int] = None  # undo steps per session; None: the engine's default
        self._volumes = VolumeCache()
        self._targets = Targets()
        self._actions: Deque[Action] = collections.deque()
        self._pending: Deque[Pending] = collections.deque()  # handed to the worker thread, not collected yet
        self._worker: Optional[Worker] = None  # one thread: jobs run one at a time, in order
        self.last_step: Any = None  # the StepResult last written to the scene, without its mask (status, tests)
        self.dependencies_ready: Callable[[], bool] = lambda: True  # the GUI installs PyTorch (asks) here

    # --- what the GUI calls ---------------------------------------------------------------------------------

    def set_options(self, **changes: Any) -> None:
        """Change :class:`ModuleOptions` fields; sessions in progress follow (a new model or device starts new
        ones that continue from the segments as they are)."""
        old, self.options = self.options, replace(self.options, **changes)
        if old.auto_extend != self.options.auto_extend:
            for session in self._targets.sessions():  # a plain attribute, read once per click by the session
                session.auto_extend = self.options.auto_extend
        where = ("model", "device", "precision", "server_url", "server_token")
        if any(getattr(old, f) != getattr(self.options, f) for f in where) and len(self._targets):
            self._close(self._targets.continue_all())
            self._queue(Show)
        self._model_choice_changed(old)

    def set_model(self, name: str, model: Any, device_type: str = "cpu") -> None:
        """Use an already-built model under ``name`` (tests, or a model another module loaded)."""
        self.options = replace(self.options, model=name)
        self.models.put(self.options, model, device_type)

    def set_inputs(self, inputs: Inputs) -> None:
        """New panel selection. Changing volume or segment shows that pair's own clicks."""
        old = self.inputs
        switched = inputs.key != old.key or (inputs.volume, inputs.segmentation) != (old.volume, old.segmentation)
        self.inputs = inputs
        self.place_mode.watch((inputs.positive, inputs.negative))
        self._observe()
        if switched:
            self._queue(Show)
            self._preload()

    def enter(self, scene) -> None:
        """The module is shown: observe the point lists and place mode of ``scene``; the lists show the selected
        target's clicks (points placed in them meanwhile, from elsewhere, are not clicks)."""
        self._watch.watch(scene)  # from now on, until cleanup: a scene closed while the module is hidden counts
        self.place_mode.enter(scene, (self.inputs.positive, self.inputs.negative))
        self._observe()
        self._show_points()
        self._preload()

    def exit(self) -> None:
        """The module is left: no observers, no place mode in our lists, Slicer's active place list restored."""
        self.place_mode.exit()
        self._observe()

    def process_points(self) -> None:
        """Turn new Defined points into queued clicks and put back clicks' points the user deleted (the point
        lists' events call it; Preview points are ignored). A target's first click asks ``dependencies_ready``
        first; a session in progress has them (a new model, device or server starts a new session)."""
        if self._showing or self._watch.busy:  # a closing or importing scene's points are no clicks
            return
        lists, moved = markups.split_moved(self._compared_lists(), self._click_points)
        first = self._targets.with_session(self.inputs.key) is None
        if any(new for _, _, new, _ in lists) and first and not self.dependencies_ready():
            self._discard(lists, TORCH_NEEDED)
            return
        clicks = actions.new_clicks(self.inputs, lists)  # their points are locked: not dragged unless unlocked
        self._click_points.update((c.inputs.positive if c.positive else c.inputs.negative, c.point_id) for c in clicks)
        self._actions.extend(clicks)
        deleted = any(missing for *_, missing in lists)
        self._actions = actions.with_points(self._actions)  # a click whose point the user deleted is dropped
        if deleted or moved:  # a moved point goes back where it was, a deleted one comes back
            self._show_points()
            self._report(MOVED_POINT if moved else DELETED_POINT, True)
        self._start_next()

    def undo(self) -> None:
        self._queue(Undo)

    def redo(self) -> None:
        self._queue(Redo)

    def reset(self) -> None:
        """Restore the segment as it was before the first click and clear the points."""
        self._queue(Reset)

    def finish(self) -> None:
        """Keep the segment as it is, forget clicks and history; the next click starts a new session."""
        self._queue(Finish)

    @property
    def busy(self) -> bool:
        return bool(self._pending) or bool(self._actions)

    def target(self) -> Optional[Target]:
        """The selected (volume, segment)'s target, None before its first click."""
        return self._targets.get(self.inputs.key)

    @property
    def can_undo(self) -> bool:
        target = self._targets.with_session(self.inputs.key)
        return bool(target and target.session.can_undo)

    @property
    def can_redo(self) -> bool:
        target = self._targets.with_session(self.inputs.key)
        return bool(target and target.session.can_redo)

    def poll(self, wait_s: float = 0.0) -> bool:
        """Apply finished work to the scene and start queued work (main thread); while the worker runs, wait up
        to ``wait_s`` seconds for it (the wait releases the GIL: see the module docstring). Returns ``busy``."""
        self._start_next()
        self._collect(wait_s)
        self._start_next()
        return self.busy

    def wait(self, timeout: float = 120.0) -> None:
        """Poll until idle (headless tests, the self-test); ``timeout`` seconds for the worker's jobs."""
        while self.busy:
            _, running = concurrent.futures.wait([work.future for work in self._pending], timeout=timeout)
            if running:
                raise TimeoutError(f"background job still running after {timeout} s")
            self._collect(0.0)
            self._start_next()

    def run_errand(self, job: Callable[[], Any], errand: Any = None) -> None:
        """Run ``job`` on the worker thread after the work before it; its outcome goes to the handlers of
        ``errand`` (default :class:`.actions.Errand`: nobody needs it, e.g. a benchmark warming the thread)."""
        self._submit(Errand() if errand is None else errand, job)
        if self.on_work is not None:
            self.on_work()

    def running_for(self) -> float:
        """Seconds the oldest uncollected job has been able to run (0 when idle): the GUI shows progress only
        past a delay. Under Slicer's GIL the worker runs only inside :meth:`poll`, which collects a job as soon
        as it ends, so this is when the job started to within a poll."""
        return time.monotonic() - self._pending[0].started if self._pending else 0.0

    def segment_clicks(self, segmentation) -> Dict[str, SegmentClicks]:
        """Segment ID → the clicks that made it (:class:`.targets.SegmentClicks`) on the segmentation node."""
        return self._targets.segment_clicks(segmentation.GetID())

    def forget_nodes(self, *nodes) -> None:
        """These volume or segmentation nodes leave the scene: their sessions, clicks and images go too."""
        ids = {node.GetID() for node in nodes if node is not None}
        self._close(self._targets.forget_nodes(ids))
        self._volumes.forget(ids)

    def cleanup(self) -> None:
        """Module reload or application exit: returns at once, whatever the worker runs (see _stop_worker)."""
        self.exit()
        self._watch.watch(None)
        self._close(self._targets.clear())  # their server sessions close on the worker before it stops
        self._stop_worker()
        self.models.clear()

    # --- queue and worker thread ----------------------------------------------------------------------------

    def _queue(self, kind: type) -> None:
        self._actions.append(kind(self.inputs))
        self._start_next()

    def _start_next(self) -> None:
        """Start queued actions in order while the worker has nothing (an action may hand it a job)."""
        self._forget_stale()
        while not self._pending and self._actions:
            action = self._actions.popleft()
            try:
                self._start(action)
            except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
                self._fail(action, exc)
        if self.on_work is not None and self.busy:
            self.on_work()

    def _submit(self, action: Any, job: Callable[[], Any], target: Optional[Target] = None) -> None:
        """Hand ``job`` to the worker thread (started on first use); :meth:`_collect` hands its outcome to the
        handlers of ``action`` with ``target``."""
        if self._worker is None:
            self._worker = Worker("SAMMed3D-worker")
        self._pending.append(Pending(action, self._worker.submit(job), target))

    def _collect(self, wait_s: float) -> None:
        """Hand finished jobs to their handlers, oldest first (the one worker thread finishes them in that
        order); when the oldest has not finished, first wait up to ``wait_s`` seconds for it."""
        if wait_s > 0 and self._pending:
            concurrent.futures.wait([self._pending[0].future], timeout=wait_s)
        while self._pending and self._pending[0].future.done():
            self._settle(self._pending.popleft())
            if self._pending:
                self._pending[0].started = time.monotonic()  # it runs now that the job before it ended

    def _settle(self, work: Pending) -> None:
        """One finished job to the handler of its action; a handler that fails is reported too."""
        try:
            error = work.future.exception()
            if error is None:
                self._finish(work.action, work.target, work.future.result())
            else:
                self._fail(work.action, error)
        except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
            self._fail(work.action if isinstance(work.action, Action) else None, exc)

    def _stop_worker(self) -> None:
        """Let the worker thread end after the server sessions to close; jobs that have not started are
        dropped, a download is cancelled, and the running job is abandoned: nothing collects any of them."""
        actions.abandon(self._pending)
        self._actions.clear()
        if self._worker is not None:
            self._worker.stop()  # a daemon thread: quitting never waits for it
            self._worker = None

    # --- one handler per action (main thread): start it; finish or fail its job -----------------------------

    @singledispatchmethod
    def _start(self, action: Action) -> None:
        raise TypeError(f"no handler for {type(action).__name__}")

    @_start.register
    def _start_click(self, action: Click) -> None:
        """Check every input first (nothing in the scene changes on bad input), then hand the worker the
        session's own ``add_click`` (a target's first click: :func:`first_click`)."""
        inputs = action.inputs
        image, geometry, embeddings = self._volumes.checked(inputs, self.options.harden_transforms,
                                                            local=not self.uses_server)
        load, warning = self.models.job(self.options)
        if warning:
            self._report(warning, False)  # a warning: the click still runs, on the CPU
        target, evicted = self._targets.prepare(inputs, image, geometry, embeddings, self.options.start_from_existing,
                                                self._watch.closes)  # fmt: skip
        self._close(evicted)
        if target.session is None:
            job = partial(first_click, load, target, action, self.options.auto_extend, self.history_limit)
        else:
            job = self._click_job(target, action, image, embeddings, load)  # the scene checked (checks.py)
        self._submit(action, job, target)

    @_start.register(Undo)
    @_start.register(Redo)
    def _start_travel(self, action: Action) -> None:
        """Undo or redo one session step, when the session has one (its history is the only one)."""
        undo = isinstance(action, Undo)
        target = self._targets.with_session(action.inputs.key)
        job = self._travel_job(target, undo) if target is not None else None  # a hand edit is adopted first
        if job is not None:
            self._submit(action, job, target)

    @_start.register
    def _start_reset(self, action: Reset) -> None:
        target = self._targets.with_session(action.inputs.key)
        if target is not None:
            self._submit(action, self._travel_job(target, None), target)

    @_start.register
    def _start_finish(self, action: Finish) -> None:
        if action.inputs.key in self._targets:
            self._drop(action.inputs.key)
            self.status = "finished"
        self._show_points()

    @_start.register
    def _start_show(self, action: Show) -> None:
        self._show_points()

    @_start.register
    def _start_preload(self, action: Preload) -> None:
        self._submit(action, self._preload_job(action))

    @singledispatchmethod
    def _finish(self, action: Any, target: Optional[Target], result: Any) -> None:
        """An errand's job ended: nothing to do."""

    @_finish.register
    def _finish_click(self, action: Click, target: Target, result: Any) -> None:
        """Write the click's mask into the segment (if still current); a write that fails takes the click back."""
        if not self._still_current(target, result):  # checks.py
            return
        try:
            mrml.prepare_segmentation(target.segmentation, target.geometry)
            region = regions.union(result.changed, target.replaced)
            result.payload.edit = mrml.apply_mask(
                target.segmentation, target.segment_id, target.geometry, result.mask, region,
                protect_others=self.options.protect_others,
            )  # fmt: skip
        except Exception:
            target.session.discard_last_step()
            raise
        target.replaced = None  # only now: a failed write leaves it for the next click
        freshness.wrote(target, region)
        self.last_step, self._last_error = targets.without_mask(result), None
        self.status = feedback.click_status(result, self.models.device_type(self.options))
        self._show_points()
        self._tell(target, result)

    @_finish.register(Undo)
    @_finish.register(Redo)
    def _finish_travel(self, action: Action, target: Target, result: Any) -> None:
        """The undone or redone step into the segment (:func:`.targets.write_travel`); status, points."""
        undo = isinstance(action, Undo)
        target.settled = targets.folded(target.settled, result.dropped)  # an adopted hand edit may push one out
        freshness.wrote(target, targets.write_travel(target, result, undo))
        self.last_step, self._last_error = targets.without_mask(result), None
        self.status = feedback.travel_status(result, undo)
        self._show_points()
        self._tell(target, result)

    @_finish.register
    def _finish_reset(self, action: Reset, target: Target, rewound: Tuple[List[Any], str]) -> None:
        """Revert every step of the session and those that fell off its history (:func:`.targets.write_reset`);
        then forget the target. ``rewound``: see :func:`.targets.rewind`."""
        payloads, replayed = rewound
        targets.write_reset(target, payloads)
        self._drop(target.key)
        self.status = "reset"
        self._show_points()
        for text in filter(None, (target.notice, replayed)):
            self._report(text, False)

    @_finish.register
    def _finish_download(self, action: Download, target: None, path: str) -> None:
        self._report(f"Model ready: {path}", False)
        self.download_progress = None
        self._retry_preload()

    @_finish.register
    def _finish_test(self, action: ConnectionTest, target: None, line: str) -> None:
        self._report(line, False)

    @_finish.register
    def _finish_preload(self, action: Preload, target: None, seconds: Optional[float]) -> None:
        self._preloaded(action, seconds)

    @singledispatchmethod
    def _fail(self, action: Any, error: BaseException) -> None:
        """Report one message and leave the scene as before: a failed click's point goes; so do the clicks queued
        after it, unless the click itself was refused (bad input): each queued click is judged on its own."""
        if isinstance(action, Click):
            if not isinstance(error, InputError):
                self._actions = collections.deque(a for a in self._actions if not isinstance(a, Click))
            target = self._targets.get(action.inputs.key)
            if target is not None and not target.clicks():
                self._drop(target.key)  # a session that never produced a step is not worth keeping
            self._show_points()
        self._report(feedback.error_text(error), True)

    @_fail.register
    def _fail_download(self, action: Download, error: BaseException) -> None:
        self._report(feedback.download_error_text(error), True)
        self.download_progress = None

    @_fail.register
    def _fail_test(self, action: ConnectionTest, error: BaseException) -> None:
        self._report(error_line(error, action.url), True)

    @_fail.register
    def _fail_preload(self, action: Preload, error: BaseException) -> None:
        """Quietly: the reason goes to the status line (:mod:`.loading`); the click reports it as usual."""
        self._preloaded(action, error)

    @_fail.register
    def _fail_errand(self, action: Errand, error: BaseException) -> None:
        """Nobody needs an errand's outcome (closing a server session fails quietly: the server frees it)."""

    # --- targets --------------------------------------------------------------------------------------------

    def _drop(self, *keys: TargetKey) -> None:
        """Forget these targets; their server sessions are closed on the worker (after the job it runs)."""
        self._close(self._targets.drop(*keys))

    def _close(self, sessions: List[Any]) -> None:
        for close in filter(None, map(closer, sessions)):
            self._submit(Errand(), close)

    # --- the point lists' and place mode's events (main thread; the lists themselves: point_lists.py) --------

    def _points_changed(self, caller: Any, event: str) -> None:
        self.process_points()

    def _place_mode_changed(self, caller: Any, event: str) -> None:
        if self.on_place_mode is not None:
            self.on_place_mode()
