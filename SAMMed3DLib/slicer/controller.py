"""What the Slicer module does, without Qt: clicks in markups point lists → engine → the chosen segment.

:class:`SegmentationController` owns the model cache, one :class:`~SAMMed3DLib.InteractiveSession` per
(volume, segment) and the undo history of the segment in the scene. Model loading and inference run on a
:class:`~SAMMed3DLib.slicer.worker.BackgroundWorker`; every MRML read/write happens in :meth:`poll` on the
main thread (Slicer calls it from a ``qt.QTimer``, tests through :meth:`wait`). Actions (clicks, undo, redo,
reset, finish) are queued and run in order, so a click made while a prediction runs is never lost.
"""

import collections
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from .. import regions
from ..errors import InputError, SAMMed3DError
from . import mrml
from .models import DEFAULT_MODEL, DEVICES, ModelStore, Options, device_note, download_checkpoint
from .worker import BackgroundWorker, Job, Progress

__all__ = ["DEFAULT_MODEL", "DEVICES", "Inputs", "Options", "SegmentationController"]

MAX_CACHED_TARGETS = 4  # sessions kept for (volume, segment) pairs the user may come back to
Point = Tuple[float, float, float]  # RAS, mm


@dataclass
class Inputs:
    """The MRML nodes the panel selects (any may be None)."""

    volume: Any = None
    segmentation: Any = None
    segment_id: str = ""
    positive: Any = None  # vtkMRMLMarkupsFiducialNode
    negative: Any = None


@dataclass
class Step:
    """One applied click: where and which polarity, and what it did to the segment (None: nothing)."""

    point: Point
    positive: bool
    edit: Optional[mrml.SegmentEdit]


@dataclass
class Target:
    """Everything about one (volume, segmentation, segment): session, geometry and undo/redo history."""

    key: Tuple
    image: Any  # SimpleITK.Image of the volume
    geometry: mrml.VolumeGeometry
    segmentation: Any
    segment_id: str
    embeddings: Any = None  # EmbeddingCache shared by the targets of one volume
    initial_mask: Any = None
    session: Any = None
    done: List[Step] = field(default_factory=list)  # at most the session's undo history, newest last
    undone: List[Step] = field(default_factory=list)
    extra_region: Optional[regions.Region] = None  # old content to clear on the first step (fresh start)
    settled_points: List[Tuple[Point, bool]] = field(default_factory=list)  # clicks no longer undoable
    settled_edit: Optional[mrml.SegmentEdit] = None  # their net effect on the segment (for reset)

    def points(self) -> List[Tuple[Point, bool]]:
        """Every click the session holds, oldest first: (RAS point, positive)."""
        return self.settled_points + [(step.point, step.positive) for step in self.done]

    def settle_beyond(self, limit: int) -> None:
        """Keep at most ``limit`` undoable steps (as the session does); older ones become settled."""
        while len(self.done) > limit:
            step = self.done.pop(0)
            self.settled_points.append((step.point, step.positive))
            self.settled_edit = mrml.merge_edits(self.settled_edit, step.edit)


@dataclass
class Action:
    """A queued user action with the panel selection it was made with (the selection may change meanwhile)."""

    kind: str  # click | undo | redo | reset | finish | switch
    inputs: Inputs
    point: Optional[Point] = None
    positive: bool = True


class SegmentationController:
    """Main-thread orchestrator; see the module docstring. ``on_message(text, is_error)`` reports to the GUI."""

    def __init__(self, worker: Optional[BackgroundWorker] = None, model_loader: Optional[Callable] = None) -> None:
        self.worker = worker or BackgroundWorker()
        self.options = Options()
        self.inputs = Inputs()
        self.on_message: Optional[Callable[[str, bool], None]] = None
        self.messages: List[Tuple[str, bool]] = []
        self.status = ""
        self.download_progress: Optional[Progress] = None
        self.models = ModelStore(model_loader)
        self._images: Dict[Tuple, Tuple[Any, mrml.VolumeGeometry, Any]] = {}
        self._targets: collections.OrderedDict[Tuple, Target] = collections.OrderedDict()
        self._actions: Deque[Action] = collections.deque()
        self._running: Optional[Job] = None
        self._consumed: Dict[str, int] = {}  # markups node id → control points already turned into clicks
        self._continue: set = set()  # target keys whose next session starts from the segment's content

    # --- what the GUI calls ---------------------------------------------------------------------------------

    def set_options(self, **changes: Any) -> None:
        """Change :class:`Options` fields; sessions in progress follow (a new model or device starts new ones)."""
        old, self.options = self.options, replace(self.options, **changes)
        if old.auto_extend != self.options.auto_extend:
            for target in self._targets.values():
                if target.session is not None:  # a plain attribute, read once per click by the session
                    target.session.auto_extend = self.options.auto_extend
        if (old.model, old.device) != (self.options.model, self.options.device) and self._targets:
            # Sessions hold the previous network: start new ones that continue from the segments as they are.
            self._continue.update(self._targets)
            self._targets.clear()
            self._queue("switch")

    def set_model(self, name: str, model: Any, device_type: str = "cpu") -> None:
        """Use an already-built model under ``name`` (tests, or a model another module loaded)."""
        self.options = replace(self.options, model=name)
        self.models.put(name, self.options.device, model, device_type)

    def set_inputs(self, inputs: Inputs) -> None:
        """New panel selection. Changing volume or segment starts over with that pair's own clicks."""
        switched = self._target_key(inputs) != self._target_key(self.inputs)
        self.inputs = inputs
        if switched:
            self._queue("switch")

    def process_new_points(self) -> None:
        """Queue the control points placed since the last call (call it on markups point events)."""
        for node, positive in ((self.inputs.positive, True), (self.inputs.negative, False)):
            if node is None:
                continue
            points = mrml.control_points_ras(node)
            consumed = self._consumed.get(mrml.node_id(node), 0)
            for point in points[consumed:]:
                self._actions.append(Action("click", self.inputs, point, positive))
            self._consumed[mrml.node_id(node)] = max(consumed, len(points))
        self._start_next()

    def discard_new_points(self, reason: str) -> None:
        """Remove the control points placed since the last :meth:`process_new_points` without running them,
        and report ``reason`` once (e.g. the user declined to install PyTorch)."""
        removed = False
        for node in (self.inputs.positive, self.inputs.negative):
            if node is None:
                continue
            consumed = self._consumed.get(mrml.node_id(node), 0)
            removed |= mrml.point_count(node) > consumed
            mrml.keep_points(node, consumed)
        if removed:
            self._report(reason, True)

    def undo(self) -> None:
        self._queue("undo")

    def redo(self) -> None:
        self._queue("redo")

    def reset(self) -> None:
        """Restore the segment as it was before the first click and clear the points."""
        self._queue("reset")

    def finish(self) -> None:
        """Keep the segment as it is, forget clicks and history; the next click starts a new session."""
        self._queue("finish")

    @property
    def busy(self) -> bool:
        return self._running is not None or bool(self._actions) or self.worker.busy

    @property
    def can_undo(self) -> bool:
        target = self._current_target()
        return bool(target and target.done and target.session is not None and target.session.can_undo)

    @property
    def can_redo(self) -> bool:
        target = self._current_target()
        return bool(target and target.undone and target.session is not None and target.session.can_redo)

    def poll(self) -> bool:
        """Apply finished work to the scene and start queued work (main thread). Returns ``busy``."""
        for job in self.worker.poll():
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
        self.worker.submit(lambda: download_checkpoint(options, progress), "download", progress)
        return progress

    def cleanup(self) -> None:
        self.worker.shutdown()
        self._targets.clear()
        self.models.clear()

    # --- queue ----------------------------------------------------------------------------------------------

    def _queue(self, kind: str) -> None:
        self._actions.append(Action(kind, self.inputs))
        self._start_next()

    def _start_next(self) -> None:
        while self._running is None and not self.worker.busy and self._actions:
            action = self._actions.popleft()
            try:
                self._running = self._start(action)
            except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
                self._fail(action, exc)

    def _collect(self, job: Job) -> None:
        if job is self._running:
            self._running = None
        try:
            self._finish_job(job)
        except Exception as exc:  # noqa: BLE001 - reported once in the panel; never raised into Qt callbacks
            if job.kind == "download":
                self._report(f"Unexpected error: {exc!r}", True)
                return
            if job.kind == "click":
                self._forget_click(*job.payload)
            self._fail(job.payload[1], exc)

    def _start(self, action: Action) -> Optional[Job]:
        if action.kind == "finish":
            self._drop_target(action.inputs)
            return None
        if action.kind == "switch":
            self._show_points(action.inputs)
            return None
        if action.kind == "click":
            return self._start_click(action)
        target = self._targets.get(self._target_key(action.inputs))
        if target is None or target.session is None:
            return None  # nothing to undo, redo or reset yet
        # The session keeps history_limit steps: undo/redo only what it can, so scene and session stay in step.
        if action.kind == "undo" and target.done and target.session.can_undo:
            return self.worker.submit(target.session.undo, "undo", (target, action))
        if action.kind == "redo" and target.undone and target.session.can_redo:
            return self.worker.submit(target.session.redo, "redo", (target, action))
        if action.kind == "reset":
            return self.worker.submit(target.session.reset, "reset", (target, action))
        return None

    def _finish_job(self, job: Job) -> None:
        if job.kind == "download":
            self._finish_download(job)
            return
        target, action = job.payload
        if job.error is not None:
            self._fail(action, job.error)
            return
        if job.kind == "click":
            self._apply_click(target, action, job.result)
        elif job.kind == "undo":
            self._apply_undo(target, action.inputs)
        elif job.kind == "redo":
            self._apply_redo(target, action.inputs)
        elif job.kind == "reset":
            self._apply_reset(target, action.inputs)

    def _fail(self, action: Action, error: BaseException) -> None:
        """Report one message and leave the scene as before: the click's point goes, queued clicks too."""
        if action.kind == "click":
            self._remove_unapplied_points(action.inputs)
        text = str(error) if isinstance(error, SAMMed3DError) else f"Unexpected error: {error!r}"
        self._report(text, True)

    # --- targets and models ---------------------------------------------------------------------------------

    @staticmethod
    def _target_key(inputs: Inputs) -> Tuple:
        return mrml.node_id(inputs.volume), mrml.node_id(inputs.segmentation), inputs.segment_id

    def _current_target(self) -> Optional[Target]:
        return self._targets.get(self._target_key(self.inputs))

    def _volume_image(self, volume) -> Tuple[Any, mrml.VolumeGeometry, Any]:
        """The volume as an engine image, converted once per image content and transform (cached), with
        the embedding cache its sessions share (segments of one volume never encode a ROI twice)."""
        from ..session import EmbeddingCache  # torch loads only when the engine is first used

        harden = self.options.harden_transforms
        mrml.check_scalar_volume(volume)
        key = mrml.volume_cache_key(volume, harden)
        if key not in self._images:
            self._images = {k: v for k, v in self._images.items() if k[0] != key[0]}
            geometry = mrml.volume_geometry(volume, harden=harden)
            self._images[key] = (mrml.volume_to_sitk(volume, harden=harden), geometry, EmbeddingCache())
        return self._images[key]

    def _start_click(self, action: Action) -> Job:
        """Check every input first (nothing in the scene changes on bad input), then run the click."""
        inputs = action.inputs
        image, geometry, embeddings = self._volume_image(inputs.volume)
        mrml.check_segmentation(inputs.segmentation, geometry, mrml.node_name(inputs.volume))
        if not mrml.has_segment(inputs.segmentation, inputs.segment_id):
            raise InputError("Select a segment (or add one with 'New segment') first.")
        if not mrml.ras_inside(geometry, action.point):
            raise InputError("The point is outside the volume; click inside the image.")
        load, warning = self.models.job(self.options)
        if warning:
            self._report(warning, False)  # a warning: the click still runs, on the CPU
        target = self._prepare_target(inputs, image, geometry, embeddings)
        return self.worker.submit(lambda: self._click(load, target, action), "click", (target, action))

    def _prepare_target(self, inputs: Inputs, image: Any, geometry: mrml.VolumeGeometry, embeddings: Any) -> Target:
        """The (cached) target of ``inputs`` on ``geometry``; reads the segment, writes nothing."""
        key = self._target_key(inputs)
        target = self._targets.get(key)
        if target is not None and target.geometry == geometry:
            self._targets.move_to_end(key)
            return target
        target = Target(key, image, geometry, inputs.segmentation, inputs.segment_id, embeddings)
        existing = mrml.segment_region(inputs.segmentation, inputs.segment_id, geometry)
        continuing = key in self._continue
        self._continue.discard(key)
        if existing is not None and (self.options.start_from_existing or continuing):
            target.initial_mask = mrml.segment_to_sitk(inputs.segmentation, inputs.segment_id, geometry, image)
        else:
            target.extra_region = existing  # a fresh start replaces what the segment held
        self._targets[key] = target
        while len(self._targets) > MAX_CACHED_TARGETS:
            self._targets.popitem(last=False)
        return target

    def device_note(self) -> str:
        """'CPU' / 'CUDA' / 'MPS' of the loaded model, and a warning when the request fell back to the CPU."""
        return device_note(self.options.device)

    # --- worker-thread parts --------------------------------------------------------------------------------

    def _click(self, load: Callable[[], Any], target: Target, action: Action) -> Any:
        """Worker thread: the session's StepResult of the click."""
        from .. import InteractiveSession
        from .. import session as engine_session  # HISTORY_LIMIT read now: tests may lower it

        model = load()
        if target.session is None:
            target.session = InteractiveSession(
                model,
                target.image,
                initial_mask=target.initial_mask,
                auto_extend=self.options.auto_extend,
                embedding_cache=target.embeddings,
                history_limit=engine_session.HISTORY_LIMIT,
            )
        return target.session.add_click(action.point, positive=action.positive)

    # --- main-thread parts: write the scene -----------------------------------------------------------------

    def _apply_click(self, target: Target, action: Action, result: Any) -> None:
        session = target.session
        mrml.prepare_segmentation(target.segmentation, target.geometry, mrml.node_name(action.inputs.volume))
        region = regions.union(result.changed, target.extra_region)
        edit = mrml.apply_mask(
            target.segmentation,
            target.segment_id,
            target.geometry,
            session.mask,
            region,
            protect_others=self.options.protect_others,
        )
        target.extra_region = None  # only now: a failed write leaves it for the next click
        target.done.append(Step(action.point, action.positive, edit))
        target.undone.clear()
        target.settle_beyond(session.history_limit)
        self.status = self._timing_text(result)

    def _forget_click(self, target: Target, action: Action) -> None:
        """A click that ran but could not be written to the scene: take it back from the session for good.
        Committing it dropped the session's redo history (and, with a full history, its oldest step)."""
        if target.session is not None and len(target.session.clicks) > len(target.points()):
            target.session.discard_last_step()
            target.undone.clear()
            target.settle_beyond(target.session.history_limit - 1)

    def _write_step(self, target: Target, step: Step, undo: bool) -> None:
        """Write ``step``'s edit out of (``undo``) or back into the segment. The session has already undone or
        redone the step: if the write fails, it goes back the other way (to match the scene) and the error rises."""
        try:
            if step.edit is not None:
                mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=undo)
        except Exception:
            (target.session.redo if undo else target.session.undo)()
            raise

    def _apply_undo(self, target: Target, inputs: Inputs) -> None:
        step = target.done[-1]
        self._write_step(target, step, undo=True)
        target.undone.append(target.done.pop())
        self._remove_last_point(step, inputs)
        self.status = f"undone ({len(target.done)} clicks)"

    def _apply_redo(self, target: Target, inputs: Inputs) -> None:
        step = target.undone[-1]
        self._write_step(target, step, undo=False)
        target.done.append(target.undone.pop())
        node = inputs.positive if step.positive else inputs.negative
        if node is not None:
            # Counted first: adding the point fires the event the panel turns into process_new_points().
            self._consumed[mrml.node_id(node)] = mrml.point_count(node) + 1
            mrml.add_point(node, step.point)
        self.status = f"redone ({len(target.done)} clicks)"

    def _apply_reset(self, target: Target, inputs: Inputs) -> None:
        edits = [step.edit for step in reversed(target.done)] + [target.settled_edit]
        for edit in edits:
            if edit is not None:
                mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, edit, undo=True)
        self._drop_target(inputs)
        self.status = "reset"

    def _drop_target(self, inputs: Inputs) -> None:
        """Forget the target's session and history (the segment stays as it is) and clear the points."""
        if self._targets.pop(self._target_key(inputs), None) is not None:
            self.status = "finished"
        self._show_points(inputs)

    def _show_points(self, inputs: Inputs) -> None:
        """Fill the point lists with the clicks of ``inputs``' target (none for a new one)."""
        target = self._targets.get(self._target_key(inputs))
        clicks = target.points() if target is not None else []
        for node, positive in ((inputs.positive, True), (inputs.negative, False)):
            if node is None:
                continue
            points = [point for point, polarity in clicks if polarity == positive]
            self._consumed[mrml.node_id(node)] = len(points)  # before the point events fire (see _apply_redo)
            mrml.set_points(node, points)

    def _remove_last_point(self, step: Step, inputs: Inputs) -> None:
        node = inputs.positive if step.positive else inputs.negative
        if mrml.point_count(node) == 0:
            return
        mrml.keep_points(node, mrml.point_count(node) - 1)
        self._consumed[mrml.node_id(node)] = max(self._consumed.get(mrml.node_id(node), 1) - 1, 0)

    def _remove_unapplied_points(self, inputs: Inputs) -> None:
        """Drop queued clicks and the control points that were never applied (after a failure)."""
        self._actions = collections.deque(a for a in self._actions if a.kind != "click")
        target = self._targets.get(self._target_key(inputs))
        applied = {True: 0, False: 0}
        for _, positive in target.points() if target else []:
            applied[positive] += 1
        for node, positive in ((inputs.positive, True), (inputs.negative, False)):
            if node is None:
                continue
            mrml.keep_points(node, applied[positive])
            self._consumed[mrml.node_id(node)] = mrml.point_count(node)
        if target is not None and not target.points():
            self._targets.pop(target.key, None)  # a session that never produced a step is not worth keeping

    def _finish_download(self, job: Job) -> None:
        if job.error is not None:
            self._report(str(job.error) if isinstance(job.error, SAMMed3DError) else repr(job.error), True)
        else:
            self._report(f"Model ready: {job.result}", False)
        self.download_progress = None

    def _timing_text(self, result: Any) -> str:
        """Status line of a click's StepResult: encoder and total time, device."""
        timings = result.timings
        parts = []
        if result.encoded:
            parts.append(f"encoded {timings.get('encode', 0.0):.1f} s")
        parts.append(f"refined {1000 * timings.get('total', 0.0):.0f} ms")
        parts.append(self.models.device_type(self.options).upper())
        return " · ".join(parts)

    def _report(self, text: str, is_error: bool) -> None:
        self.messages.append((text, is_error))
        if self.on_message is not None:
            self.on_message(text, is_error)

    @property
    def last_error(self) -> Optional[str]:
        errors = [text for text, is_error in self.messages if is_error]
        return errors[-1] if errors else None
