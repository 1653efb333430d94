"""``InteractiveSession``: click-by-click segmentation of one volume with undo/redo.

Within one ROI the image embedding is computed once; every further click there runs only the prompt
encoder and the mask decoder, fed with all clicks so far in that ROI and the previous low-resolution
logits (the official iterative protocol). A click outside the ROI opens a new ROI, centred to keep the
earlier clicks when they fit, and its result is merged into the mask.

Every step (click, undo, redo, reset) returns a :class:`StepResult`. Points are RAS millimetres
(Slicer's world space); regions are ``(index_start, size)`` in SimpleITK index order (x, y, z).
"""

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk
import torch

from .coordinates import lps_to_ras, ras_to_lps
from .embeddings import EmbeddingCache, Network
from .errors import InputError, NetworkOutputError, SessionBusyError
from .extension import EXTEND_SHIFT, face_seeds, touching_faces
from .handedits import HandEdits, checked, merge
from .history import HISTORY_LIMIT, History
from .inputs import check_image, check_point_inside, check_same_grid
from .modeling import IMAGE_SIZE, LOW_RES_SIZE
from .paste import mask_to_prompt, paste_logits, upsample
from .regions import Region, read_region, write_region
from .regions import union as region_union
from .roi import (
    Grid,
    Roi,
    fits_in_roi,
    model_input,
    model_input_tensor,
    roi_for_points,
    roi_image,
)

Click = Tuple[Tuple[float, float, float], bool]
"""(point in RAS mm, positive)."""
Prompt = Tuple[Tuple[int, int, int], int]
"""(ROI voxel (i, j, k), label 1/0) as the prompt encoder gets it."""
Edit = Tuple[Region, np.ndarray]
"""(region, the z-y-x voxels of the region that flipped, bit-packed): undo and redo both flip them back.
(Unpacked, boolean, for the moment between writing and packing within a step.)"""

TIMING_KEYS = ("preprocess", "encode", "decode", "paste", "total")

__all__ = ["HISTORY_LIMIT", "EmbeddingCache", "InteractiveSession", "StepResult"]


@dataclass(frozen=True)
class StepResult:
    """What one step did. ``mask``: the whole mask, uint8 0/1 on the image grid (a copy-on-write snapshot).
    ``changed``: a region holding every voxel the step may have changed (None: none). ``timings``: seconds
    per phase (``TIMING_KEYS``). ``encoded``: the image encoder ran. ``clicks``: the session's clicks after
    the step. ``payload``: add_click/reset, the one passed in; undo/redo/discard, that of the step undone or
    redone (None when there was none). ``dropped``: payloads of the oldest steps that fell off the history
    during this step (no longer undoable)."""

    mask: sitk.Image
    changed: Optional[Region]
    timings: Mapping[str, float]
    encoded: bool
    clicks: Tuple[Click, ...]
    payload: Any = None
    dropped: Tuple[Any, ...] = ()


@dataclass(frozen=True)
class _State:
    """What the next click continues from: the ROI, its prompts and last logits, all clicks, the hand edits."""

    roi: Optional[Roi] = None
    prompts: Tuple[Prompt, ...] = ()
    low_res: Optional[torch.Tensor] = None
    clicks: Tuple[Click, ...] = ()
    held: Optional[HandEdits] = None


@dataclass(frozen=True)
class _Step:
    """One undoable step: its edits of the mask, the states before and after it, the caller's payload."""

    edits: Tuple[Edit, ...]
    before: _State
    after: _State
    payload: Any = None

    @property
    def region(self) -> Optional[Region]:
        region = None
        for edit in self.edits:
            region = region_union(region, edit[0])
        return region


@dataclass
class _Work:
    """What a step measured while it ran: seconds per phase, and whether the image encoder ran."""

    timings: Dict[str, float] = field(default_factory=lambda: dict.fromkeys(TIMING_KEYS, 0.0))
    encoded: bool = False
    start: float = field(default_factory=time.perf_counter)


class InteractiveSession:
    """Interactive SAM-Med3D segmentation of ``image`` (a 3-D scalar ``SimpleITK.Image``).

    ``model``: anything with ``encode(crop [1,1,128,128,128]) -> embedding`` and
    ``decode(embedding, coords [1,N,3], labels [1,N], mask_logits [1,1,32,32,32]) -> (logits, iou)``,
    normally :func:`SAMMed3DLib.load_model`'s result. ``initial_mask``: an existing segmentation on the
    same grid to refine (non-zero = inside). ``auto_extend``: follow objects larger than the 192 mm ROI
    into neighbouring ROIs, at most ``max_extend_steps`` extra ROIs per click. ``embedding_cache``: an
    :class:`EmbeddingCache` shared with other sessions on the same image (default: a private one).
    ``history_limit``: undo steps kept; older ones come back in :attr:`StepResult.dropped`. ``clicks``: earlier
    clicks ((RAS mm, positive)) to continue from, e.g. on new voxels of the same volume: the first click's new ROI
    takes those inside it as prompts, with ``initial_mask`` as its mask prompt (a reset forgets them).

    One step at a time: a step called while another runs (from another thread) raises
    :class:`~SAMMed3DLib.errors.SessionBusyError` and changes nothing.
    """

    def __init__(
        self,
        model: Network,
        image: sitk.Image,
        *,
        initial_mask: Optional[sitk.Image] = None,
        auto_extend: bool = False,
        max_extend_steps: int = 6,
        embedding_cache: Optional[EmbeddingCache] = None,
        history_limit: int = HISTORY_LIMIT,
        clicks: Sequence[Click] = (),
    ) -> None:
        check_image(image)
        self._history: History[_Step] = History(history_limit)
        self._model = model
        self._image = image
        self._grid = Grid.of(image)
        self._initial = None if initial_mask is None else _binary_like(initial_mask, image)
        self._mask = _empty_like(image) if self._initial is None else sitk.Image(self._initial)
        self._initial_region = None if self._initial is None else _nonzero(self._initial)
        self._known = self._initial_region
        self.auto_extend = bool(auto_extend)
        self.max_extend_steps = int(max_extend_steps)
        self._state = _State(clicks=_as_clicks(clicks))
        self._embeddings = embedding_cache if embedding_cache is not None else EmbeddingCache()
        self._focus: Optional[Roi] = None
        self._busy = threading.Lock()
        self._device = getattr(model, "device", None)  # where the interpolation runs (None: the CPU)

    # ----------------------------------------------------------------- state
    @property
    def mask(self) -> sitk.Image:
        """The current mask: uint8 0/1 on the image's grid, as a snapshot that later steps leave alone.

        The snapshot is copy-on-write: free to take; the next step copies the volume once (~40 ms for
        512 x 512 x 300) only if a snapshot is still referenced when it writes. Safe to read from another
        thread while the session works on the next click.
        """
        return sitk.Image(self._mask)

    @property
    def clicks(self) -> List[Click]:
        """Clicks so far (undone ones excluded): ``(point_ras, positive)``."""
        return list(self._state.clicks)

    @property
    def can_undo(self) -> bool:
        return self._history.can_undo

    @property
    def can_redo(self) -> bool:
        return self._history.can_redo

    @property
    def history_limit(self) -> int:
        """Undo steps kept."""
        return self._history.limit

    @property
    def roi(self) -> Optional[Roi]:
        """The ROI the next click inside it continues in (None before the first click)."""
        return self._state.roi

    def roi_input_image(self) -> Optional[sitk.Image]:
        """The current ROI's normalised 128³ model input with its true geometry (None before the first click)."""
        roi = self._state.roi
        return None if roi is None else roi_image(model_input(self._image, roi), roi)

    def focus(self, points_ras: Sequence[Sequence[float]]) -> None:
        """Centre the next new ROI on the bounding box of these RAS points (as the official evaluation crops
        around a structure's bounding box); a first click outside that ROI ignores it."""
        with self._exclusive():
            if isinstance(points_ras, (str, bytes)) or not hasattr(points_ras, "__iter__"):
                raise InputError(f"focus needs a list of points (R, A, S) in mm, got {points_ras!r}")
            points = [ras_to_lps(_as_point(p, "focus point")) for p in points_ras]
            if not points:
                raise InputError("focus needs at least one point (R, A, S) in mm")
            for p in points:
                check_point_inside(self._grid, p, "focus point")
            self._focus = roi_for_points(self._grid, points)

    # ----------------------------------------------------------------- steps
    def add_click(self, point_ras: Sequence[float], positive: bool = True, *, payload: Any = None) -> StepResult:
        """Add a positive/negative click at ``point_ras`` (RAS mm); ``payload`` travels with the step.

        All or nothing: if anything fails (bad input, the network, an auto-extension step), the mask,
        clicks, history and model state stay exactly as they were and the exception propagates.
        """
        work = _Work()
        with self._step() as edits:
            point_lps = ras_to_lps(_as_point(point_ras))
            check_point_inside(self._grid, point_lps)
            state = self._state
            clicks = (*state.clicks, (tuple(float(v) for v in lps_to_ras(point_lps)), bool(positive)))
            roi, prompts, low_res = self._roi_for(state, point_lps, clicks[:-1])
            prompts = (*prompts, (_voxel(roi, point_lps), int(bool(positive))))
            low_res = self._predict(roi, prompts, low_res, work)
            self._paste(roi, low_res, work, edits, union=False)
            if self.auto_extend:
                self._extend(roi, upsample(low_res), work, edits)
            step = _Step(tuple(edits), state, _State(roi, prompts, low_res, clicks, state.held), payload)
            return self._result(work, step.region, payload, self._commit(step))

    def adopt(self, region: Region, painted: np.ndarray, erased: np.ndarray, *, payload: Any = None) -> StepResult:
        """Take an edit made outside the session (a hand-painted correction) as its current state: within
        ``region`` the ``painted`` voxels (bool, z-y-x) become inside and the ``erased`` ones outside, and stay so
        for the rest of the session (later clicks keep them; undo and reset take them back). The next click's
        previous mask is the edited mask. Undoable like a click; all or nothing."""
        work = _Work()
        with self._step() as edits:
            region, painted, erased = checked(region, painted, erased, self._image.GetSize())
            values = read_region(self._mask, region)
            changed = (painted & (values == 0)) | (erased & (values != 0))
            if changed.any():
                values[changed] ^= 1
                write_region(self._mask, region, values)
                _record(edits, region, changed)
                self._known = region_union(self._known, region)
            state = self._state
            low_res = None if state.roi is None else mask_to_prompt(self._mask, state.roi, self._device)
            after = replace(state, low_res=low_res, held=merge(state.held, region, painted, erased))
            step = _Step(tuple(edits), state, after, payload)
            return self._result(work, step.region, payload, self._commit(step))

    def undo(self) -> StepResult:
        """Go back one step (click or reset): the mask and the model state become exactly what they were."""
        return self._travel(backwards=True)

    def redo(self) -> StepResult:
        """Re-apply the step last undone."""
        return self._travel(backwards=False)

    def discard_last_step(self) -> StepResult:
        """Undo the last step exactly (as :meth:`undo`) and drop it, with any redo history, so that it cannot
        be redone: for a step whose result could not be used (e.g. the caller failed to store it)."""
        return self._travel(backwards=True, forget=True)

    def reset(self, *, payload: Any = None) -> StepResult:
        """Drop all clicks; the mask returns to the initial mask (or empty). Undoable like a click; a session
        that is already reset (no clicks, the initial mask) adds no step."""
        work = _Work()
        with self._step() as edits:
            region = region_union(self._known, self._initial_region)
            if region is not None:
                before = read_region(self._mask, region)
                after = np.zeros_like(before) if self._initial is None else read_region(self._initial, region)
                changed = before != after
                if changed.any():
                    write_region(self._mask, region, after)
                    _record(edits, region, changed)
            if not edits and not self._state.clicks:
                return self._result(work, None, payload)
            step = _Step(tuple(edits), self._state, _State(), payload)
            return self._result(work, step.region, payload, self._commit(step))

    # ----------------------------------------------------------------- internals
    def _travel(self, backwards: bool, forget: bool = False) -> StepResult:
        """Flip the edits of the step behind (undo) or ahead of (redo) the history cursor (all or nothing);
        ``forget``: then drop the undone steps."""
        work = _Work()
        with self._step() as edits:
            history, step = self._history.undo() if backwards else self._history.redo()
            if step is None:
                return self._result(work, None, None)
            for edit in reversed(step.edits) if backwards else step.edits:
                self._flip(edit)
                edits.append(edit)
            self._history = history.drop_undone() if forget else history
            self._state = step.before if backwards else step.after
            return self._result(work, step.region, step.payload)

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """Hold the session for one step; SessionBusyError (nothing changed) if another thread holds it."""
        if not self._busy.acquire(blocking=False):
            raise SessionBusyError(
                "this segmentation session is busy with another step (from another thread); "
                "wait for it to finish, then try again"
            )
        try:
            yield
        finally:
            self._busy.release()

    @contextmanager
    def _step(self) -> Iterator[List[Edit]]:
        """One step: exclusive and all or nothing.

        The block appends each edit to the yielded list as soon as it is written to the mask. If the block
        raises (anything, KeyboardInterrupt included), those edits are flipped back newest first, the state,
        known region and history are restored, and the exception propagates unchanged.
        """
        with self._exclusive():
            saved = (self._state, self._known, self._history)
            applied: List[Edit] = []
            try:
                yield applied
            except BaseException:
                for edit in reversed(applied):
                    self._flip(edit)
                self._state, self._known, self._history = saved
                raise

    def _commit(self, step: _Step) -> Tuple[Any, ...]:
        """Make ``step`` the newest in the history; the payloads of steps that fell off its far end."""
        self._history, dropped = self._history.push(step)
        self._state = step.after
        return tuple(old.payload for old in dropped)

    def _result(
        self, work: _Work, changed: Optional[Region], payload: Any, dropped: Tuple[Any, ...] = ()
    ) -> StepResult:
        """The step's result; taken while the step still holds the session, so mask and clicks belong to it."""
        work.timings["total"] = time.perf_counter() - work.start
        return StepResult(self.mask, changed, work.timings, work.encoded, self._state.clicks, payload, dropped)

    def _roi_for(
        self, state: _State, point_lps: np.ndarray, earlier: Tuple[Click, ...]
    ) -> Tuple[Roi, Tuple[Prompt, ...], Optional[torch.Tensor]]:
        """The click's ROI with the prompts and logits to continue from: the current ROI when the click
        is inside it, else a new ROI (earlier clicks inside it become prompts; the mask so far, the mask prompt)."""
        if state.roi is not None and state.roi.contains(point_lps):
            return state.roi, state.prompts, state.low_res
        earlier_lps = [ras_to_lps(p) for p, _ in earlier]
        if self._focus is not None and self._focus.contains(point_lps):
            roi = self._focus
        elif fits_in_roi(self._grid, [*earlier_lps, point_lps]):
            roi = roi_for_points(self._grid, [*earlier_lps, point_lps])
        else:
            roi = roi_for_points(self._grid, [point_lps])
        prompts = tuple(
            (_voxel(roi, p), int(positive)) for p, (_, positive) in zip(earlier_lps, earlier) if roi.contains(p)
        )
        return roi, prompts, mask_to_prompt(self._mask, roi, self._device) if self._known is not None else None

    def _predict(
        self, roi: Roi, prompts: Tuple[Prompt, ...], low_res: Optional[torch.Tensor], work: _Work
    ) -> torch.Tensor:
        """Decoder logits ``[1, 1, 32, 32, 32]`` (float32, on the model's device, where the paste interpolates
        them and the next click's mask prompt reads them) for the prompts; encodes the ROI if not cached."""
        embedding = self._embedding(roi, work)
        coords = torch.tensor([[list(v) for v, _ in prompts]], dtype=torch.float32)
        labels = torch.tensor([[label for _, label in prompts]], dtype=torch.long)
        # The official code (training and evaluation) passes zero logits, not "no mask", on the first click.
        mask_in = low_res if low_res is not None else torch.zeros(1, 1, LOW_RES_SIZE, LOW_RES_SIZE, LOW_RES_SIZE)
        start = time.perf_counter()
        logits, _ = self._model.decode(embedding, coords, labels, mask_in)
        logits = logits.detach().float()
        _check_finite(logits, "mask decoder logits")  # on a GPU this waits for the kernels: the time is the decoder's
        work.timings["decode"] += time.perf_counter() - start
        return logits

    def _embedding(self, roi: Roi, work: _Work) -> torch.Tensor:
        cached = self._embeddings.get(self._model, roi)
        if cached is not None:
            return cached
        start = time.perf_counter()
        crop = model_input_tensor(self._image, roi, self._device)[None, None]
        if crop.is_cuda:  # wait for the kernels, so that the time is the preprocessing's
            torch.cuda.synchronize(crop.device)
        work.timings["preprocess"] += time.perf_counter() - start
        start = time.perf_counter()
        embedding = self._model.encode(crop)
        if embedding.is_cuda:  # kernels run asynchronously: wait, so that the time is the encoder's
            torch.cuda.synchronize(embedding.device)
        work.timings["encode"] += time.perf_counter() - start
        work.encoded = True
        _check_finite(embedding, "image embedding")  # never cached: other sessions would reuse it
        self._embeddings.put(self._model, roi, embedding)
        return embedding

    def _paste(self, roi: Roi, logits: torch.Tensor, work: _Work, edits: List[Edit], union: bool) -> None:
        """Write the decoder's ROI logits into the mask (interpolated on the model's device); the edit (if any
        voxel may change) goes to ``edits``."""
        start = time.perf_counter()
        known = self._known if self._known is not None else ((0, 0, 0), (0, 0, 0))  # the mask is empty
        region, changed = paste_logits(self._mask, roi, logits, union=union, known=known)
        if region is not None and self._state.held is not None:  # the user's hand edits stay as they are
            changed = self._state.held.hold(self._mask, region, changed)
        if region is not None:
            _record(edits, region, changed)
            self._known = region_union(self._known, region)
        work.timings["paste"] += time.perf_counter() - start

    def _flip(self, edit: Edit) -> None:
        """Apply an edit either way: its voxels flip between the before and after values (XOR)."""
        region, flipped = edit
        values = read_region(self._mask, region)
        if flipped.dtype == bool:  # not packed yet (only while a step is being rolled back)
            changed = flipped
        else:
            changed = np.unpackbits(flipped, count=values.size).reshape(values.shape).astype(bool)
        values[changed] ^= 1
        write_region(self._mask, region, values)

    def _extend(self, roi: Roi, logits: np.ndarray, work: _Work, edits: List[Edit]) -> None:
        """Follow the mask through ROI faces it touches into neighbouring ROIs (breadth first); each
        neighbour's edit goes to ``edits`` as soon as it is written."""
        queue = [(roi, logits)]
        visited = {roi}
        while queue and len(visited) - 1 < self.max_extend_steps:
            current, current_logits = queue.pop(0)
            for axis, side in touching_faces(current, current_logits):
                if len(visited) - 1 >= self.max_extend_steps:
                    break
                seeds = face_seeds(current, current_logits, axis, side)
                centre = np.full(3, IMAGE_SIZE / 2)
                centre[axis] += EXTEND_SHIFT if side else -EXTEND_SHIFT
                neighbour = roi_for_points(self._grid, [current.grid.to_physical(centre)])
                prompts = tuple((_voxel(neighbour, s), 1) for s in seeds if neighbour.contains(s))
                if neighbour in visited or not prompts:
                    continue
                visited.add(neighbour)
                low_res = self._predict(neighbour, prompts, mask_to_prompt(self._mask, neighbour, self._device), work)
                self._paste(neighbour, low_res, work, edits, union=True)
                queue.append((neighbour, upsample(low_res)))


def _check_finite(values: torch.Tensor, what: str) -> None:
    """NetworkOutputError unless every value is finite (NaN or Inf means the network is broken, not the input)."""
    if not bool(torch.isfinite(values).all()):
        raise NetworkOutputError(
            f"the network produced non-finite values (NaN or Inf) in its {what}: its weights are probably "
            "damaged or incompatible with this architecture (or overflowed at reduced precision); "
            "download the checkpoint again or choose another one"
        )


def _record(edits: List[Edit], region: Region, changed: np.ndarray) -> None:
    """Append the edit of ``region`` (``changed``: z-y-x booleans, already written to the mask), bit-packed.
    It is appended unpacked first, so that a failure while packing still rolls it back."""
    edits.append((region, changed))
    edits[-1] = (region, np.packbits(changed))


def _as_point(point: Sequence[float], label: str = "click") -> np.ndarray:
    """``point`` as three finite floats (RAS mm); InputError naming ``label`` otherwise."""
    try:
        values = np.asarray(point, dtype=float).reshape(-1)
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: an integer beyond float range
        raise InputError(f"a {label} must be three coordinates in mm (R, A, S), got {point!r}") from exc
    if values.shape != (3,) or not np.all(np.isfinite(values)):
        raise InputError(f"a {label} must be three finite coordinates in mm (R, A, S), got {point!r}")
    return values


def _as_clicks(clicks: Sequence[Click]) -> Tuple[Click, ...]:
    """Earlier clicks ((RAS mm, positive)) as the session keeps them; InputError otherwise."""
    try:
        return tuple((tuple(map(float, _as_point(point))), bool(positive)) for point, positive in clicks)
    except (TypeError, ValueError) as exc:
        raise InputError(f"earlier clicks must be ((R, A, S) in mm, positive) pairs, got {clicks!r}") from exc


def _voxel(roi: Roi, point_lps: np.ndarray) -> Tuple[int, int, int]:
    return tuple(int(v) for v in roi.voxel_of(point_lps))


def _nonzero(mask: sitk.Image) -> Optional[Region]:
    from .paste import nonzero_region

    return nonzero_region(mask, ((0, 0, 0), tuple(mask.GetSize())))


def _empty_like(image: sitk.Image) -> sitk.Image:
    empty = sitk.Image(image.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(image)
    return empty


def _binary_like(mask: sitk.Image, image: sitk.Image) -> sitk.Image:
    """``mask != 0`` as uint8 on the image's grid; InputError if the grids differ."""
    check_same_grid(mask, image, "the initial mask")
    binary = sitk.Cast(sitk.NotEqual(mask, 0), sitk.sitkUInt8)
    binary.CopyInformation(image)
    return binary
