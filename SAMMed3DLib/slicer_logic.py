"""What the Slicer module does, without Qt: clicks in markups point lists → engine → the chosen segment.

:class:`SegmentationController` owns the model cache, one :class:`~SAMMed3DLib.InteractiveSession` per
(volume, segment) and the undo history of the segment in the scene. Model loading and inference run on a
:class:`~SAMMed3DLib.slicer_worker.BackgroundWorker`; every MRML read/write happens in :meth:`poll` on the
main thread (Slicer calls it from a ``qt.QTimer``, tests through :meth:`wait`). Actions (clicks, undo, redo,
reset, finish) are queued and run in order, so a click made while a prediction runs is never lost.
"""

import collections
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

from . import mrml, regions
from .errors import InputError, SAMMed3DError
from .slicer_worker import BackgroundWorker, Job, Progress

DEFAULT_MODEL = "sam-med3d-turbo"
DEVICES = ("auto", "cuda", "mps", "cpu")
MAX_CACHED_TARGETS = 4  # sessions kept for (volume, segment) pairs the user may come back to
Point = Tuple[float, float, float]


@dataclass(frozen=True)
class Options:
    """User choices. ``model``: registry id or checkpoint path; ``device``: auto/cuda/mps/cpu."""

    model: str = DEFAULT_MODEL
    device: str = "auto"
    auto_extend: bool = False
    start_from_existing: bool = False
    protect_others: bool = True
    harden_transforms: bool = False
    registry: Optional[str] = None  # model_weights.json path; None = the default one
    cache_dir: Optional[str] = None  # checkpoint cache; None = the default one


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
    done: List[Step] = field(default_factory=list)
    undone: List[Step] = field(default_factory=list)
    extra_region: Optional[regions.Region] = None  # old content to clear on the first step (fresh start)


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
        self._model_loader = model_loader
        self._models: Dict[Tuple[str, str], Tuple[Any, str]] = {}
        self._images: Dict[Tuple, Tuple[Any, mrml.VolumeGeometry, Any]] = {}
        self._targets: collections.OrderedDict[Tuple, Target] = collections.OrderedDict()
        self._actions: Deque[Action] = collections.deque()
        self._running: Optional[Job] = None
        self._consumed: Dict[str, int] = {}  # markups node id → control points already turned into clicks
        self._continue: set = set()  # target keys whose next session starts from the segment's content

    # --- what the GUI calls ---------------------------------------------------------------------------------

    def set_options(self, **changes) -> None:
        old, self.options = self.options, replace(self.options, **changes)
        if (old.model, old.device) != (self.options.model, self.options.device) and self._targets:
            # Sessions hold the previous network: start new ones that continue from the segments as they are.
            self._continue.update(self._targets)
            self._targets.clear()
            self._queue("switch")

    def set_model(self, name: str, model: Any, device_type: str = "cpu") -> None:
        """Use an already-built model under ``name`` (tests, or a model another module loaded)."""
        self.options = replace(self.options, model=name)
        self._models[(name, self.options.device)] = (model, device_type)

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
        return bool(target and target.done)

    @property
    def can_redo(self) -> bool:
        target = self._current_target()
        return bool(target and target.undone)

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
        spec, options = self.options.model, self.options
        self.worker.submit(lambda: self._resolve_weights(spec, options, progress), "download", progress)
        return progress

    def cleanup(self) -> None:
        self.worker.shutdown()
        self._targets.clear()
        self._models.clear()

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
        self._finish_job(job)

    def _start(self, action: Action) -> Optional[Job]:
        if action.kind == "finish":
            self._drop_target(action.inputs)
            return None
        if action.kind == "switch":
            self._show_points(action.inputs)
            return None
        if action.kind == "click":
            target = self._prepare_target(action.inputs)
            if not mrml.ras_inside(target.geometry, action.point):
                raise InputError("The point is outside the volume; click inside the image.")
            load = self._model_job(target)
            return self.worker.submit(lambda: self._click(load, target, action), "click", (target, action))
        target = self._targets.get(self._target_key(action.inputs))
        if target is None or target.session is None:
            return None  # nothing to undo, redo or reset yet
        if action.kind == "undo" and target.done:
            return self.worker.submit(target.session.undo, "undo", (target, action))
        if action.kind == "redo" and target.undone:
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
            self._apply_click(target, action)
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
        from .session import EmbeddingCache  # torch loads only when the engine is first used

        harden = self.options.harden_transforms
        mrml.check_scalar_volume(volume)
        key = mrml.volume_cache_key(volume, harden)
        if key not in self._images:
            self._images = {k: v for k, v in self._images.items() if k[0] != key[0]}
            geometry = mrml.volume_geometry(volume, harden=harden)
            self._images[key] = (mrml.volume_to_sitk(volume, harden=harden), geometry, EmbeddingCache())
        return self._images[key]

    def _prepare_target(self, inputs: Inputs) -> Target:
        image, geometry, embeddings = self._volume_image(inputs.volume)
        mrml.prepare_segmentation(inputs.segmentation, geometry, mrml.node_name(inputs.volume))
        if not mrml.has_segment(inputs.segmentation, inputs.segment_id):
            raise InputError("Select a segment (or add one with 'New segment') first.")
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

    def _model_job(self, target: Target) -> Callable[[], Any]:
        """A function for the worker that returns the (cached) model, loading it on first use."""
        options = self.options
        key = (options.model, options.device)
        if not options.model:
            raise InputError("Choose a model (or a local checkpoint) first.")
        if key in self._models:
            model = self._models[key][0]
            return lambda: model
        self._check_weights_present(options)
        note = self.device_note()
        if "not available" in note:
            self._report(note, False)  # a warning: the click still runs, on the CPU
        return lambda: self._load_model(key, options)

    def _check_weights_present(self, options: Options) -> None:
        """A registry model must have been downloaded (Download button); clicks never start a 400 MB download."""
        if Path(options.model).is_file() or options.model.startswith(("file:", "http:", "https:")):
            return
        from .weights import cached_path, load_registry

        registry = load_registry(options.registry)
        entry = registry.get(options.model)
        if entry is None:
            if any(c in options.model for c in "/\\") or options.model.endswith((".pth", ".pt")):
                raise InputError(f"Checkpoint file not found: {options.model}")
            raise InputError(f"Unknown model '{options.model}'. Choose one from the list or a local checkpoint.")
        if not cached_path(entry, options.cache_dir).is_file():
            raise InputError(f"The model '{entry.name}' is not downloaded yet: press Download first.")

    def _resolve_weights(self, spec: str, options: Options, progress: Optional[Progress]) -> str:
        from .weights import resolve_checkpoint

        return str(
            resolve_checkpoint(
                spec, registry=options.registry, cache_dir=options.cache_dir, progress=progress and progress.update
            )
        )

    def _load_model(self, key: Tuple[str, str], options: Options):
        """Worker thread: weights file → network on the resolved device (cached for later clicks)."""
        from .device import resolve_device
        from .model import load_model

        device = resolve_device(options.device)
        path = self._resolve_weights(options.model, options, None)
        model = (self._model_loader or load_model)(path, device=device)
        self._models[key] = (model, device.type)
        return model

    def device_note(self) -> str:
        """'CPU' / 'CUDA' / 'MPS' of the loaded model, and a warning when the request fell back to the CPU."""
        from .device import resolve_device

        requested = self.options.device
        actual = resolve_device(requested).type
        if requested not in ("auto", "cpu") and actual == "cpu":
            return f"{requested.upper()} is not available here; running on the CPU (much slower)."
        return "running on the CPU (much slower than a GPU)" if actual == "cpu" else f"running on {actual.upper()}"

    # --- worker-thread parts --------------------------------------------------------------------------------

    def _click(self, load: Callable[[], Any], target: Target, action: Action):
        from . import InteractiveSession

        model = load()
        if target.session is None:
            target.session = InteractiveSession(
                model,
                target.image,
                initial_mask=target.initial_mask,
                auto_extend=self.options.auto_extend,
                embedding_cache=target.embeddings,
            )
        return target.session.add_click(action.point, positive=action.positive)

    # --- main-thread parts: write the scene -----------------------------------------------------------------

    def _apply_click(self, target: Target, action: Action) -> None:
        session = target.session
        region = regions.union(session.last_changed_region, target.extra_region)
        target.extra_region = None
        edit = mrml.apply_mask(
            target.segmentation,
            target.segment_id,
            target.geometry,
            session.mask,
            region,
            protect_others=self.options.protect_others,
        )
        target.done.append(Step(action.point, action.positive, edit))
        target.undone.clear()
        self.status = self._timing_text(session)

    def _apply_undo(self, target: Target, inputs: Inputs) -> None:
        step = target.done.pop()
        if step.edit is not None:
            mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=True)
        self._remove_last_point(step, inputs)
        target.undone.append(step)
        self.status = f"undone ({len(target.done)} clicks)"

    def _apply_redo(self, target: Target, inputs: Inputs) -> None:
        step = target.undone.pop()
        if step.edit is not None:
            mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=False)
        node = inputs.positive if step.positive else inputs.negative
        if node is not None:
            # Counted first: adding the point fires the event the panel turns into process_new_points().
            self._consumed[mrml.node_id(node)] = mrml.point_count(node) + 1
            mrml.add_point(node, step.point)
        target.done.append(step)
        self.status = f"redone ({len(target.done)} clicks)"

    def _apply_reset(self, target: Target, inputs: Inputs) -> None:
        for step in reversed(target.done):
            if step.edit is not None:
                mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=True)
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
        steps = target.done if target is not None else []
        for node, positive in ((inputs.positive, True), (inputs.negative, False)):
            if node is None:
                continue
            points = [step.point for step in steps if step.positive == positive]
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
        for step in target.done if target else []:
            applied[step.positive] += 1
        for node, positive in ((inputs.positive, True), (inputs.negative, False)):
            if node is None:
                continue
            mrml.keep_points(node, applied[positive])
            self._consumed[mrml.node_id(node)] = mrml.point_count(node)
        if target is not None and not target.done:
            self._targets.pop(target.key, None)  # a session that never produced a step is not worth keeping

    def _finish_download(self, job: Job) -> None:
        if job.error is not None:
            self._report(str(job.error) if isinstance(job.error, SAMMed3DError) else repr(job.error), True)
        else:
            self._report(f"Model ready: {job.result}", False)
        self.download_progress = None

    def _timing_text(self, session) -> str:
        timings = getattr(session, "last_timings", {}) or {}
        parts = []
        if getattr(session, "last_encoded", False):
            parts.append(f"encoded {timings.get('encode', 0.0):.1f} s")
        parts.append(f"refined {1000 * timings.get('total', 0.0):.0f} ms")
        model_device = self._models.get((self.options.model, self.options.device), (None, "cpu"))[1]
        parts.append(model_device.upper())
        return " · ".join(parts)

    def _report(self, text: str, is_error: bool) -> None:
        self.messages.append((text, is_error))
        if self.on_message is not None:
            self.on_message(text, is_error)

    @property
    def last_error(self) -> Optional[str]:
        errors = [text for text, is_error in self.messages if is_error]
        return errors[-1] if errors else None
