"""What the Slicer module does, without Qt: clicks in markups point lists → engine → the chosen segment.

:class:`SegmentationController` is the module's Logic (SAMMed3D.py mixes it into ``ScriptedLoadableModuleLogic``).
It owns the model cache and one :class:`~SAMMed3DLib.InteractiveSession` per (volume, segment) (a
:class:`~SAMMed3DLib.remote.RemoteSession` with the Server device: :mod:`.remote_models`). There is one
history: the session's. Each session step carries the edit it made to the segment as its payload, so undo, redo
and reset read the edits back from the session; steps that fall off the session's history hand their payloads
back and are folded into one edit that reset still reverts. The point lists are a view of the session's clicks
(:mod:`.markups`): a new Defined point is a click, a click's point the user deletes is put back with a message.

Model loading and inference run on a :class:`~.worker.BackgroundWorker`; every MRML read/write happens on the
main thread in :meth:`poll` (Slicer calls it from a ``qt.QTimer``, tests through :meth:`wait`). Actions are
queued and run in order, so a click made while a prediction runs is never lost.
"""

import collections
from dataclasses import replace
from functools import singledispatchmethod
from typing import Any, Callable, Deque, List, Optional, Tuple

from .. import regions
from ..errors import InputError, SAMMed3DError
from . import markups, mrml
from .actions import Action, Click, Finish, Redo, Reset, Show, Undo
from .models import DEFAULT_MODEL, DEVICE_CHOICES, DEVICES, ModelStore, ModuleOptions, device_note, download_checkpoint
from .placing import PlaceMode
from .remote_models import ServerActions, closer, open_session
from .targets import Inputs, SceneStep, Target, TargetKey, VolumeCache, folded, rewind
from .worker import BackgroundWorker, Job, Progress

__all__ = ["DEFAULT_MODEL", "DEVICE_CHOICES", "DEVICES", "Inputs", "ModuleOptions", "SegmentationController"]

MAX_CACHED_TARGETS = 4  # sessions kept for (volume, segment) pairs the user may come back to
TORCH_NEEDED = "SAM-Med3D needs PyTorch: the point was removed. Place it again to be asked to install PyTorch."
DELETED_POINT = "A click's point cannot be deleted on its own; it was put back. Use Undo (Ctrl+Z) or Reset."


class SegmentationController(ServerActions):
    """Main-thread orchestrator; see the module docstring. ``on_message(text, is_error)`` reports to the GUI,
    ``on_place_mode()`` tells it that place mode started or ended."""

    def __init__(self, worker: Optional[BackgroundWorker] = None, model_loader: Optional[Callable] = None) -> None:
        self.worker = worker or BackgroundWorker()
        self.options = ModuleOptions()
        self.inputs = Inputs()
        self.on_message: Optional[Callable[[str, bool], None]] = None
        self.on_place_mode: Optional[Callable[[], None]] = None
        self.on_work: Optional[Callable[[], None]] = None  # work was queued: the GUI starts polling
        self.messages: List[Tuple[str, bool]] = []
        self.status = ""
        self.download_progress: Optional[Progress] = None
        self.models = ModelStore(model_loader)
        self.history_limit: Optional[int] = None  # undo steps per session; None: the engine's default
        self.place_mode = PlaceMode(self.process_points, self._place_mode_changed)
        self._volumes = VolumeCache()
        self._targets: collections.OrderedDict[TargetKey, Target] = collections.OrderedDict()
        self._actions: Deque[Action] = collections.deque()
        self._running: Optional[Tuple[Action, Job]] = None
        self._continue: set = set()  # target keys whose next session starts from the segment's content
        self._showing = False  # the controller itself is changing the point lists: their events are ours
        self._last_error: Optional[str] = None
        self.last_step: Any = None  # the engine's StepResult last written to the scene (status line, tests)
        self.dependencies_ready: Callable[[], bool] = lambda: True  # the GUI installs PyTorch (asks) here

    # --- what the GUI calls ---------------------------------------------------------------------------------

    def set_options(self, **changes: Any) -> None:
        """Change :class:`ModuleOptions` fields; sessions in progress follow (a new model or device starts new
        ones that continue from the segments as they are)."""
        old, self.options = self.options, replace(self.options, **changes)
        if old.auto_extend != self.options.auto_extend:
            for target in self._targets.values():
                if target.session is not None:  # a plain attribute, read once per click by the session
                    target.session.auto_extend = self.options.auto_extend
        where = ("model", "device", "server_url", "server_token")
        if any(getattr(old, f) != getattr(self.options, f) for f in where) and self._targets:
            self._continue.update(self._targets)
            self._drop(*self._targets)
            self._queue(Show)

    def set_model(self, name: str, model: Any, device_type: str = "cpu") -> None:
        """Use an already-built model under ``name`` (tests, or a model another module loaded)."""
        self.options = replace(self.options, model=name)
        self.models.put(name, self.options.device, model, device_type)

    def set_inputs(self, inputs: Inputs) -> None:
        """New panel selection. Changing volume or segment shows that pair's own clicks."""
        switched = inputs.key != self.inputs.key
        self.inputs = inputs
        self.place_mode.watch((inputs.positive, inputs.negative))
        if switched:
            self._queue(Show)

    def enter(self, scene) -> None:
        """The module is shown: observe the point lists and place mode of ``scene``; the lists show the selected
        target's clicks (points placed in them meanwhile, from elsewhere, are not clicks)."""
        self.place_mode.enter(scene, (self.inputs.positive, self.inputs.negative))
        self._show_points()

    def exit(self) -> None:
        """The module is left: no observers, no place mode in our lists, Slicer's active place list restored."""
        self.place_mode.exit()

    def start_placing(self, positive: bool) -> None:
        """Place mode into the positive (green) or negative (red) list: every click in a view is a prompt."""
        node = self.inputs.positive if positive else self.inputs.negative
        if node is not None and self.place_mode.entered:
            self.place_mode.start(node)

    def stop_placing(self) -> None:
        self.place_mode.stop()

    @property
    def placing(self) -> Optional[bool]:
        """True / False while placing positive / negative clicks, None otherwise."""
        node = self.place_mode.placing_into()
        return None if node is None else node is self.inputs.positive

    def process_points(self) -> None:
        """Turn new Defined points into queued clicks and put back clicks' points the user deleted (call it on
        the point lists' events; Preview points are ignored)."""
        if self._showing:
            return
        lists = self._compared_lists()
        if any(new for _, _, new, _ in lists) and not self.dependencies_ready():
            self._discard(lists, TORCH_NEEDED)
            return
        deleted = False
        for node, positive, new, missing in lists:
            for point_id, point in new:
                node.SetNthControlPointLocked(node.GetNthControlPointIndexByID(point_id), True)
                self._actions.append(Click(self.inputs, point, positive, point_id))
            deleted |= bool(missing)
        self._cancel_deleted_clicks()
        if deleted:
            self._show_points()
            self._report(DELETED_POINT, True)
        self._start_next()

    def discard_new_points(self, reason: str) -> None:
        """Remove new Defined points without running them and report ``reason`` once (e.g. the user declined to
        install PyTorch)."""
        self._discard(self._compared_lists(), reason)

    def _discard(self, lists: List[Tuple[Any, bool, list, list]], reason: str) -> None:
        removed = False
        for node, _, new, _ in lists:
            self._showing = True
            try:
                for point_id, _ in new:
                    markups.remove_point(node, point_id)
            finally:
                self._showing = False
            removed |= bool(new)
        if removed:
            self._report(reason, True)

    def _compared_lists(self) -> List[Tuple[Any, bool, list, list]]:
        """(node, positive, new Defined points, clicks whose point is gone) of each point list, compared once."""
        return [
            (node, positive, *markups.compare(node, self._shown_clicks(positive), self._waiting_ids(positive)))
            for node, positive in self.inputs.point_lists()
        ]

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
        return self._running is not None or bool(self._actions) or self.worker.busy

    def target(self) -> Optional[Target]:
        """The selected (volume, segment)'s target, None before its first click."""
        return self._targets.get(self.inputs.key)

    @property
    def can_undo(self) -> bool:
        target = self._targets.get(self.inputs.key)
        return bool(target and target.session is not None and target.session.can_undo)

    @property
    def can_redo(self) -> bool:
        target = self._targets.get(self.inputs.key)
        return bool(target and target.session is not None and target.session.can_redo)

    def poll(self, wait_s: float = 0.0) -> bool:
        """Apply finished work to the scene and start queued work (main thread); while the worker runs, wait up
        to ``wait_s`` seconds for it (the wait releases the GIL: see :mod:`.worker`). Returns ``busy``."""
        self._start_next()
        for job in self.worker.poll(wait_s):
            self._collect(job)
        self._start_next()
        return self.busy

    def wait(self, timeout: float = 120.0) -> None:
        """Poll until idle (headless tests, the self-test); seconds."""
        while self.busy:
            for job in self.worker.wait(timeout):
                self._collect(job)
            self._start_next()

    def download(self, progress: Optional[Progress] = None) -> Progress:
        """Fetch the selected registry model into the cache on the worker; cancel with ``progress.cancel()``."""
        progress = progress or Progress()
        self.download_progress = progress
        options = self.options
        job = Job(lambda: download_checkpoint(options, progress), self._downloaded, self._download_failed)
        self.worker.submit(job)
        if self.on_work is not None:
            self.on_work()
        return progress

    def device_note(self) -> str:
        """What the panel shows about the device (see :func:`.models.device_note`), or about the server."""
        if self.uses_server:
            return self.models.servers.note(self.options)
        return device_note(self.options.device)

    def running_for(self) -> float:
        """Seconds the current background job has been running (0 when idle)."""
        return self.worker.running_for()

    def cleanup(self) -> None:
        self.exit()
        self._drop(*self._targets)  # their server sessions close on the worker before it stops
        self.worker.shutdown()
        self.models.clear()

    @property
    def last_error(self) -> Optional[str]:
        """The newest error message, None once a later step was written to the scene successfully."""
        return self._last_error

    # --- queue ----------------------------------------------------------------------------------------------

    def _queue(self, kind: type) -> None:
        self._actions.append(kind(self.inputs))
        self._start_next()

    def _start_next(self) -> None:
        while self._running is None and not self.worker.busy and self._actions:
            action = self._actions.popleft()
            try:
                job = self._start(action)
            except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
                self._fail(action, exc)
                continue
            if job is not None:
                self._running = (action, self.worker.submit(job))
        if self.on_work is not None and self.busy:
            self.on_work()

    def _collect(self, job: Job) -> None:
        action = None
        if self._running is not None and self._running[1] is job:
            action, self._running = self._running[0], None
        try:
            job.complete()
        except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
            self._fail(action, exc)

    def _fail(self, action: Optional[Action], error: BaseException) -> None:
        """Report one message and leave the scene as before: a failed click's point goes, queued clicks too."""
        if isinstance(action, Click):
            self._actions = collections.deque(a for a in self._actions if not isinstance(a, Click))
            target = self._targets.get(action.inputs.key)
            if target is not None and not target.clicks():
                self._drop(target.key)  # a session that never produced a step is not worth keeping
            self._show_points()
        text = str(error) if isinstance(error, SAMMed3DError) else f"Unexpected error: {error!r}"
        self._report(text, True)

    def _job(self, fn: Callable[[], Any], on_done: Callable[[Any], None], action: Action) -> Job:
        """A worker job whose failure is reported as ``action``'s."""
        return Job(fn, on_done, lambda error: self._fail(action, error))

    # --- one handler per action (main thread; a returned job runs on the worker) ----------------------------

    @singledispatchmethod
    def _start(self, action: Action) -> Optional[Job]:
        raise TypeError(f"no handler for {type(action).__name__}")

    @_start.register
    def _start_click(self, action: Click) -> Job:
        """Check every input first (nothing in the scene changes on bad input), then run the click."""
        inputs = action.inputs
        image, geometry, embeddings = self._volumes.get(inputs.volume, self.options.harden_transforms,
                                                        local=not self.uses_server)
        mrml.check_segmentation(inputs.segmentation, geometry, mrml.node_name(inputs.volume))
        if not mrml.has_segment(inputs.segmentation, inputs.segment_id):
            raise InputError("Select a segment (or add one with 'New segment') first.")
        load, warning = self.models.job(self.options)
        if warning:
            self._report(warning, False)  # a warning: the click still runs, on the CPU
        target = self._prepare_target(inputs, image, geometry, embeddings)
        auto_extend = self.options.auto_extend
        return self._job(lambda: self._click(load, target, action, auto_extend),
                         lambda result: self._apply_click(target, result), action)  # fmt: skip

    @_start.register
    def _start_undo(self, action: Undo) -> Optional[Job]:
        return self._start_travel(action, undo=True)

    @_start.register
    def _start_redo(self, action: Redo) -> Optional[Job]:
        return self._start_travel(action, undo=False)

    def _start_travel(self, action: Action, undo: bool) -> Optional[Job]:
        """Undo or redo one session step, when the session has one (its history is the only one)."""
        target = self._session_target(action)
        if target is None or not (target.session.can_undo if undo else target.session.can_redo):
            return None
        step = target.session.undo if undo else target.session.redo
        return self._job(step, lambda result: self._apply_travel(target, result, undo=undo), action)

    @_start.register
    def _start_reset(self, action: Reset) -> Optional[Job]:
        target = self._session_target(action)
        if target is None:
            return None
        return self._job(lambda: rewind(target.session), lambda done: self._apply_reset(target, *done), action)

    @_start.register
    def _start_finish(self, action: Finish) -> None:
        if action.inputs.key in self._targets:
            self._drop(action.inputs.key)
            self.status = "finished"
        self._show_points()

    @_start.register
    def _start_show(self, action: Show) -> None:
        self._show_points()

    # --- targets --------------------------------------------------------------------------------------------

    def _drop(self, *keys: TargetKey) -> None:
        """Forget these targets; their server sessions are closed on the worker (after the job it runs)."""
        for key in keys:
            target = self._targets.pop(key, None)
            close = closer(target.session) if target is not None else None
            if close is not None:
                self.worker.submit(Job(close))

    def _session_target(self, action: Action) -> Optional[Target]:
        target = self._targets.get(action.inputs.key)
        return target if target is not None and target.session is not None else None

    def _prepare_target(self, inputs: Inputs, image: Any, geometry: mrml.VolumeGeometry, embeddings: Any) -> Target:
        """The (cached) target of ``inputs`` on ``geometry``; reads the segment once, writes nothing."""
        key = inputs.key
        target = self._targets.get(key)
        if target is not None and target.geometry == geometry:
            self._targets.move_to_end(key)
            return target
        target = Target(key, image, geometry, inputs.segmentation, inputs.segment_id, embeddings)
        voxels = mrml.whole_segment(inputs.segmentation, inputs.segment_id, geometry)
        existing = mrml.voxels_region(voxels)
        continuing = key in self._continue
        self._continue.discard(key)
        if existing is not None and (self.options.start_from_existing or continuing):
            target.initial_mask = mrml.voxels_to_sitk(voxels, image)
        else:
            target.replaced = existing  # a fresh start replaces what the segment held
        self._targets[key] = target
        while len(self._targets) > MAX_CACHED_TARGETS:
            self._drop(next(iter(self._targets)))
        return target

    # --- worker-thread part ---------------------------------------------------------------------------------

    def _click(self, load: Callable[[], Any], target: Target, action: Click, auto_extend: bool) -> Any:
        """Worker thread: the session's step result after the click (its payload to be filled on the main thread)."""
        model = load()
        if target.session is None:
            target.session = open_session(model, target, auto_extend, self.history_limit)
        return target.session.add_click(action.point, positive=action.positive, payload=SceneStep())

    # --- main-thread parts: write the scene -----------------------------------------------------------------

    def _apply_click(self, target: Target, result: Any) -> None:
        """Write the click's mask into the segment; a write that fails takes the click back from the session."""
        target.settled = folded(target.settled, result.dropped)  # fell off the history whatever happens next
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
        self.last_step, self._last_error = result, None
        self.status = self._timing_text(result)
        self._show_points()
        self._tell_replayed(result)

    def _apply_travel(self, target: Target, result: Any, undo: bool) -> None:
        """Write an undone (``undo``) or redone step's edit out of or back into the segment. If the write fails,
        the session goes back the other way (to match the scene) and the error rises."""
        step = result.payload
        try:
            if isinstance(step, SceneStep) and step.edit is not None:
                mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=undo)
        except Exception:
            (target.session.redo if undo else target.session.undo)()
            raise
        self.last_step, self._last_error = result, None
        self.status = f"{'undone' if undo else 'redone'} ({len(result.clicks)} clicks)"
        self._show_points()
        self._tell_replayed(result)

    def _apply_reset(self, target: Target, payloads: List[Any], replayed: str) -> None:
        """Revert every step of the session (``payloads``, newest first, from :func:`.targets.rewind`) and the
        steps that fell off its history, in one write; then forget the target. ``replayed``: see ``rewind``."""
        edit = folded(target.settled, payloads[::-1])
        try:
            if edit is not None:
                mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, edit, undo=True)
        except Exception:
            for _ in payloads:
                target.session.redo()
            raise
        self._drop(target.key)
        self.status = "reset"
        self._show_points()
        if replayed:
            self._report(replayed, False)

    def _show_points(self) -> None:
        """Make the point lists show the selected target's clicks and the clicks still waiting to run."""
        self._showing = True
        try:
            for node, positive in self.inputs.point_lists():
                markups.show(node, self._shown_clicks(positive), self._waiting_ids(positive))
        finally:
            self._showing = False

    def _shown_clicks(self, positive: bool) -> List[markups.Point]:
        target = self._targets.get(self.inputs.key)
        clicks = target.clicks() if target is not None else ()
        return [point for point, polarity in clicks if polarity == positive]

    def _waiting(self) -> List[Click]:
        running = [self._running[0]] if self._running is not None else []
        return [a for a in [*running, *self._actions] if isinstance(a, Click) and a.inputs.key == self.inputs.key]

    def _waiting_ids(self, positive: bool) -> List[str]:
        return [a.point_id for a in self._waiting() if a.positive == positive]

    def _cancel_deleted_clicks(self) -> None:
        """Queued clicks whose point the user deleted before they ran are dropped."""
        def exists(action: Action) -> bool:
            if not isinstance(action, Click):
                return True
            node = action.inputs.positive if action.positive else action.inputs.negative
            return node is not None and node.GetNthControlPointIndexByID(action.point_id) >= 0

        self._actions = collections.deque(a for a in self._actions if exists(a))

    def _downloaded(self, path: Any) -> None:
        self._report(f"Model ready: {path}", False)
        self.download_progress = None

    def _download_failed(self, error: BaseException) -> None:
        self._report(str(error) if isinstance(error, SAMMed3DError) else repr(error), True)
        self.download_progress = None

    def _timing_text(self, result: Any) -> str:
        parts = []
        if result.encoded:
            parts.append(f"encoded {result.timings.get('encode', 0.0):.1f} s")
        parts.append(f"refined {1000 * result.timings.get('total', 0.0):.0f} ms")
        parts.append(self.models.device_type(self.options).upper())
        return " · ".join(parts)

    def _place_mode_changed(self) -> None:
        if self.on_place_mode is not None:
            self.on_place_mode()

    def _report(self, text: str, is_error: bool) -> None:
        self.messages.append((text, is_error))
        if is_error:
            self._last_error = text
        if self.on_message is not None:
            self.on_message(text, is_error)

