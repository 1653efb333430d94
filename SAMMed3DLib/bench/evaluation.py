"""Click-simulation evaluation: segment each labelled structure with simulated clicks, Dice after each.

The first click lies inside the structure; every next click comes from the current error: positive in
a false-negative voxel, negative in a false positive. ``random`` picks any error voxel uniformly (the
official SAM-Med3D validation); ``ritm`` clicks the centre — the voxel farthest from the boundary — of
the largest error region (the RITM protocol). Arrays are z-y-x; points handed to the session are RAS mm.
"""

from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..metrics import dice
from ..roi import voxel_to_ras
from ..session import InteractiveSession

SAMPLERS = ("random", "ritm")
CROPS = ("bbox", "click")


@dataclass(frozen=True)
class ClickResult:
    point_ras: Tuple[float, float, float]
    positive: bool
    dice: float
    seconds: float


def random_click(truth: np.ndarray, prediction: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, bool]:
    """A uniformly random error voxel (z, y, x) and whether it is a missed (positive) voxel."""
    missed = truth & ~prediction
    error = missed | (prediction & ~truth)
    voxels = np.argwhere(error)
    voxel = voxels[rng.integers(len(voxels))]
    return voxel, bool(missed[tuple(voxel)])


def ritm_click(truth: np.ndarray, prediction: np.ndarray, rng: np.random.Generator) -> Tuple[np.ndarray, bool]:
    """Centre (distance-transform maximum) of the largest connected error region; positive if it is missed."""
    missed = truth & ~prediction
    extra = prediction & ~truth
    best: Optional[Tuple[int, np.ndarray, bool]] = None
    for error, positive in ((missed, True), (extra, False)):
        if not error.any():
            continue
        region, size = _largest_component(error)
        if best is None or size > best[0]:
            best = (size, region, positive)
    size, region, positive = best
    padded = np.pad(region, 1).astype(np.uint8)
    distance = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(
            sitk.GetImageFromArray(padded), insideIsPositive=True, squaredDistance=False, useImageSpacing=False
        )
    )[1:-1, 1:-1, 1:-1]
    return np.array(np.unravel_index(int(np.argmax(np.where(region, distance, -np.inf))), region.shape)), positive


def _largest_component(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    components = sitk.ConnectedComponent(sitk.GetImageFromArray(mask.astype(np.uint8)))
    labels = sitk.GetArrayFromImage(sitk.RelabelComponent(components))  # 1 = largest
    largest = labels == 1
    return largest, int(largest.sum())


SAMPLER_FUNCTIONS = {"random": random_click, "ritm": ritm_click}


def _bounds(mask: np.ndarray, margin: int) -> Tuple[slice, ...]:
    """z-y-x slices of the mask's bounding box grown by ``margin`` voxels."""
    voxels = np.argwhere(mask)
    lo = np.maximum(voxels.min(0) - margin, 0)
    hi = np.minimum(voxels.max(0) + 1 + margin, mask.shape)
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def bbox_corners_ras(image: sitk.Image, truth: np.ndarray) -> List[Tuple[float, float, float]]:
    """RAS mm of the two extreme voxel centres of the structure's bounding box."""
    voxels = np.argwhere(truth)
    return [voxel_to_ras(image, voxels.min(0)[::-1]), voxel_to_ras(image, voxels.max(0)[::-1])]


def simulate(
    model,
    image: sitk.Image,
    truth: np.ndarray,
    clicks: int,
    sampler: str = "random",
    seed: int = 0,
    crop: str = "bbox",
    session_factory: Callable[..., InteractiveSession] = InteractiveSession,
    on_click: Optional[Callable[[ClickResult], None]] = None,
) -> List[ClickResult]:
    """Run ``clicks`` simulated clicks on one structure (boolean z-y-x ``truth``) and report Dice after each
    (``on_click`` is called with each result as it comes, for progress)."""
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; use {' or '.join(SAMPLERS)}")
    if crop not in CROPS:
        raise InputError(f"unknown crop {crop!r}; use {' or '.join(CROPS)}")
    if not truth.any():
        raise InputError("the structure to evaluate is empty")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"the seed must be a whole number >= 0, got {seed!r}")
    if isinstance(clicks, bool) or not isinstance(clicks, (int, np.integer)) or clicks < 1:
        raise InputError(f"the number of clicks must be a whole number >= 1, got {clicks!r}")
    rng = np.random.default_rng(seed)
    session = session_factory(model, image)
    if crop == "bbox":
        session.focus(bbox_corners_ras(image, truth))
    prediction = np.zeros_like(truth, dtype=bool)
    results: List[ClickResult] = []
    for _ in range(clicks):
        if results and results[-1].dice == 1.0:  # the first prediction is empty and the truth is not
            break
        # Sampling looks only near the structure and the prediction: cheap on large volumes.
        window = _bounds(truth | prediction, margin=2)
        voxel, positive = SAMPLER_FUNCTIONS[sampler](truth[window], prediction[window], rng)
        voxel = voxel + np.array([s.start for s in window])
        point = voxel_to_ras(image, voxel[::-1])
        step = session.add_click(point, positive)
        prediction = sitk.GetArrayViewFromImage(step.mask) > 0
        results.append(ClickResult(point, positive, dice(prediction, truth), step.timings["total"]))
        if on_click is not None:
            on_click(results[-1])
    return results
