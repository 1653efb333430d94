"""What the module panel sets up, without Qt and without torch: default nodes, new segments, the model list.

``params`` is the module's parameter node (or anything with the same attributes: ``inputVolume``,
``segmentation``, ``segmentId``, ``positivePoints``, ``negativePoints``); ``scene`` is the MRML scene.
Importing this module must work before PyTorch is installed: the panel sets up first, then installs it.
"""

import importlib
import importlib.util
from typing import Any, List, Tuple

from . import markups, mrml

PIP_PACKAGES = ("platformdirs", "filelock")
"""Small packages the weights cache needs that Slicer's Python may lack (installed with pip on first use)."""


def missing_packages() -> List[str]:
    """Those of :data:`PIP_PACKAGES` that cannot be imported yet."""
    importlib.invalidate_caches()  # pip may just have installed them
    return [name for name in PIP_PACKAGES if importlib.util.find_spec(name) is None]


def registry_models(registry: Any = None) -> List[Tuple[str, str, str]]:
    """(id, name, description) of each model in the registry (default model_weights.json). Raises
    ``ImportError`` while :data:`PIP_PACKAGES` are missing and ``SAMMed3DError`` for a broken registry."""
    from ..weights import load_registry

    return [(e.id, e.name, e.description) for e in load_registry(registry).values()]


def ensure_defaults(scene, params) -> None:
    """Select the first scalar volume, and create the green (positive) and red (negative) point lists,
    unless the parameters already have them."""
    if params.inputVolume is None:
        params.inputVolume = mrml.first_scalar_volume(scene)
    for attribute, (name, colour) in zip(("positivePoints", "negativePoints"), markups.POINT_LISTS):
        if getattr(params, attribute) is None:
            setattr(params, attribute, markups.new_point_list(scene, name, colour))


def add_segment(scene, params) -> str:
    """Add an empty segment to the selected segmentation (creating one on the input volume's grid when there
    is none), select it and return its id."""
    if params.segmentation is None:
        params.segmentation = mrml.new_segmentation(scene, params.inputVolume)
    params.segmentId = mrml.add_empty_segment(params.segmentation)
    return params.segmentId


def show_segment(selector, segmentation, segment_id: str) -> None:
    """Show ``segmentation`` and its segment ``segment_id`` in a qMRMLSegmentSelectorWidget. Its signals are
    blocked meanwhile: on a new node it announces its first segment, which would overwrite the saved choice."""
    was_blocked = selector.blockSignals(True)
    try:
        selector.setCurrentNode(segmentation)
        if segment_id:
            selector.setCurrentSegmentID(segment_id)
    finally:
        selector.blockSignals(was_blocked)
