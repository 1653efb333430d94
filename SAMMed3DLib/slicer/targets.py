"""What the controller keeps per (volume, segmentation, segment): the engine session and the scene edits that
are no longer in the session's history. The undo history itself is the session's: each step carries its
:class:`SceneStep` (the edit it made to the segment) as the step's payload.
"""

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .. import regions
from . import mrml

TargetKey = Tuple[Optional[str], Optional[str], str]  # (volume node ID, segmentation node ID, segment ID)


@dataclass(frozen=True)
class Inputs:
    """The MRML nodes the panel selects (any may be None)."""

    volume: Any = None
    segmentation: Any = None
    segment_id: str = ""
    positive: Any = None  # vtkMRMLMarkupsFiducialNode
    negative: Any = None

    @property
    def key(self) -> TargetKey:
        return _node_id(self.volume), _node_id(self.segmentation), self.segment_id

    def point_lists(self) -> Tuple[Tuple[Any, bool], ...]:
        """(point list, positive) of the lists that are set."""
        return tuple((node, positive) for node, positive in ((self.positive, True), (self.negative, False)) if node)


def _node_id(node) -> Optional[str]:
    return node.GetID() if node is not None else None


@dataclass
class SceneStep:
    """Payload of one session step: what the step did to the segment (filled in on the main thread after the
    engine step returned; None when it changed nothing)."""

    edit: Optional[mrml.SegmentEdit] = None


def folded(edit: Optional[mrml.SegmentEdit], payloads: Sequence[Any]) -> Optional[mrml.SegmentEdit]:
    """``edit`` followed by the edits of ``payloads`` (oldest first): one edit doing all of them."""
    for payload in payloads:
        if isinstance(payload, SceneStep):
            edit = mrml.merge_edits(edit, payload.edit)
    return edit


def rewind(session: Any) -> Tuple[List[Any], str]:
    """Worker thread: undo every step of ``session``; their payloads, newest first, and the message of a server
    session that had to be replayed meanwhile ("" if none)."""
    payloads, replayed = [], ""
    while session.can_undo:
        result = session.undo()
        payloads.append(result.payload)
        replayed = getattr(result, "message", "") or replayed
    return payloads, replayed


@dataclass
class Target:
    """One (volume, segmentation, segment): the image, its grid, the session and the scene state outside it."""

    key: TargetKey
    image: Any  # SimpleITK.Image of the volume
    geometry: mrml.VolumeGeometry
    segmentation: Any
    segment_id: str
    embeddings: Any = None  # EmbeddingCache shared by the targets of one volume
    initial_mask: Any = None
    session: Any = None
    replaced: Optional[regions.Region] = None  # old content a fresh start clears with its first step
    settled: Optional[mrml.SegmentEdit] = None  # net edit of the steps that fell off the session's history

    def clicks(self) -> Tuple[Tuple[Tuple[float, float, float], bool], ...]:
        """The session's clicks, oldest first: (RAS point in mm, positive); none before the first click."""
        return tuple(self.session.clicks) if self.session is not None else ()


class VolumeCache:
    """Volumes as engine images, checked and converted once per image content and transform, each with the
    embedding cache its sessions share (segments of one volume never encode a ROI twice)."""

    def __init__(self) -> None:
        self._images: Dict[Tuple, Tuple[Any, mrml.VolumeGeometry, Any]] = {}

    def get(self, volume, harden: bool, local: bool = True) -> Tuple[Any, mrml.VolumeGeometry, Any]:
        """(SimpleITK image, grid in world RAS, EmbeddingCache) of ``volume``; raises ``InputError`` for bad input.
        ``local`` False (sessions on a server): no EmbeddingCache (None), so torch is not imported."""
        if volume is None or volume.GetImageData() is None:
            mrml.check_scalar_volume(volume)  # the one error for a missing volume or image
        key = mrml.volume_cache_key(volume, harden)
        if key not in self._images:
            image, geometry = mrml.read_volume(volume, harden=harden)
            self._images = {k: v for k, v in self._images.items() if k[0] != key[0]}  # one version per volume
            self._images[key] = (image, geometry, None)
        image, geometry, embeddings = self._images[key]
        if local and embeddings is None:
            from ..embeddings import EmbeddingCache  # torch loads only when the local engine is first used

            embeddings = EmbeddingCache()
            self._images[key] = (image, geometry, embeddings)
        return image, geometry, embeddings
