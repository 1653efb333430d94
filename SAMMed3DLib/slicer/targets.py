"""What the controller keeps per (volume, segmentation, segment): the engine session and the scene edits that
are no longer in the session's history (:class:`Target`, cached in :class:`Targets`), and the volumes as engine
images (:class:`VolumeCache`). The undo history itself is the session's: each step carries its
:class:`SceneStep` (the edit it made to the segment) as the step's payload; undo, redo and reset write those
edits back (:func:`write_travel`, :func:`write_reset`). :class:`Targets` also remembers each segment's clicks after
its session ends (:class:`SegmentClicks`: what the worklist saves as the case's prompts). Nothing here calls the
controller.
"""

import collections
import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import SimpleITK as sitk

from .. import regions
from ..errors import InputError
from . import mrml

TargetKey = Tuple[Optional[str], Optional[str], str]  # (volume node ID, segmentation node ID, segment ID)
Click = Tuple[Tuple[float, float, float], bool]  # (RAS point in mm, positive)
MAX_CACHED_TARGETS = 4  # sessions kept for (volume, segment) pairs the user may come back to


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


@dataclass(frozen=True)
class SegmentClicks:
    """The clicks that made a segment's content, oldest first, across its sessions: a session that continued from
    the segment's content adds its clicks to those before it, one that replaced the content starts afresh.
    ``from_mask``: the first of those sessions started from content no recorded click made (a segment loaded
    from a file, or painted), so replaying the clicks from an empty mask gives something else."""

    clicks: Tuple[Click, ...] = ()
    from_mask: bool = False


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
    before: SegmentClicks = SegmentClicks()  # what made the segment's content when this session started
    continued: bool = False  # the session started from that content (else it replaces it)
    volume: Any = None  # the volume node (the object: a reloaded scene reuses IDs)
    closes: int = 0  # the scene's close count when the target was made (freshness.SceneWatch)
    seen: Any = None  # the segment as the controller last wrote or read it (bool, z-y-x, whole grid)
    stamp: Tuple = ()  # mrml.segment_stamp after that write or read
    notice: str = ""  # a message to give once the running step is written
    image_stamp: Tuple = ()  # mrml.image_stamp when the running click started

    def clicks(self) -> Tuple[Click, ...]:
        """The session's clicks, oldest first: (RAS point in mm, positive); none before the first click."""
        return tuple(self.session.clicks) if self.session is not None else ()

    def segment_clicks(self) -> SegmentClicks:
        """What made the segment's content now: the clicks before this session, then this session's when it
        continued from them, this session's alone when it replaced them; without clicks (none yet, all undone,
        reset) the content is what it was before the session."""
        clicks = self.clicks()
        if not clicks:
            return self.before
        if self.continued:
            return SegmentClicks(self.before.clicks + clicks, self.before.from_mask)
        return SegmentClicks(clicks)


def write_travel(target: Target, result: Any, undo: bool) -> Optional[regions.Region]:
    """Main thread: write an undone (``undo``) or redone step's edit (``result``: its StepResult) out of or back
    into the segment; the region written (None: none). If the write fails, the session goes back the other way (to
    match the scene) and the error rises."""
    step = result.payload
    try:
        if isinstance(step, SceneStep) and step.edit is not None:
            mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, step.edit, undo=undo)
            return step.edit.region
        return None
    except Exception:
        (target.session.redo if undo else target.session.undo)()
        raise


def write_reset(target: Target, payloads: List[Any]) -> None:
    """Main thread: revert every step of the session (``payloads``, newest first, from :func:`rewind`) and the
    steps that fell off its history, in one write. If the write fails, the session redoes them (to match the
    scene) and the error rises."""
    edit = folded(target.settled, payloads[::-1])
    try:
        if edit is not None:
            mrml.revert_edit(target.segmentation, target.segment_id, target.geometry, edit, undo=True)
    except Exception:
        for _ in payloads:
            target.session.redo()
        raise


class Targets:
    """The targets of the (volume, segment) pairs clicked lately, oldest first, at most
    :data:`MAX_CACHED_TARGETS`. What forgets targets returns their open sessions: the caller closes a server's."""

    def __init__(self) -> None:
        self._targets: collections.OrderedDict[TargetKey, Target] = collections.OrderedDict()
        self._continue: Set[TargetKey] = set()  # keys whose next session starts from the segment's content
        self._ended: Dict[TargetKey, SegmentClicks] = {}  # the clicks of segments whose target was forgotten

    def get(self, key: TargetKey) -> Optional[Target]:
        return self._targets.get(key)

    def with_session(self, key: TargetKey) -> Optional[Target]:
        """The target of ``key`` once its session is open, else None."""
        target = self._targets.get(key)
        return target if target is not None and target.session is not None else None

    def __contains__(self, key: TargetKey) -> bool:
        return key in self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def __iter__(self) -> Iterator[TargetKey]:
        return iter(self._targets)

    def sessions(self) -> List[Any]:
        """The open sessions, oldest target first."""
        return [target.session for target in self._targets.values() if target.session is not None]

    def drop(self, *keys: TargetKey) -> List[Any]:
        """Forget these targets (their segments' clicks are remembered); returns their open sessions."""
        targets = [self._targets.pop(key, None) for key in keys]
        for target in filter(None, targets):
            self._ended[target.key] = target.segment_clicks()
        return [target.session for target in targets if target is not None and target.session is not None]

    def segment_clicks(self, segmentation_id: str) -> Dict[str, SegmentClicks]:
        """Segment ID → its :class:`SegmentClicks`, for the segments of the segmentation node ``segmentation_id``
        that were clicked (the latest volume's when several were)."""
        found = {key: clicks for key, clicks in self._ended.items() if key[1] == segmentation_id}
        found.update({key: t.segment_clicks() for key, t in self._targets.items() if key[1] == segmentation_id})
        return {key[2]: clicks for key, clicks in found.items() if clicks.clicks}

    def forget_nodes(self, node_ids: Set[str]) -> List[Any]:
        """Forget the targets and remembered clicks of these volume or segmentation nodes (removed from the
        scene); returns the open sessions."""
        keys = [key for key in self._targets if node_ids & set(key[:2])]
        sessions = self.drop(*keys)
        self._ended = {key: c for key, c in self._ended.items() if not node_ids & set(key[:2])}
        self._continue = {key for key in self._continue if not node_ids & set(key[:2])}
        return sessions

    def continue_all(self) -> List[Any]:
        """Forget every target; the next session of each starts from its segment as it is then (a new model,
        device or server). Returns their open sessions."""
        self._continue.update(self._targets)
        return self.drop(*self._targets)

    def forget(self, *keys: TargetKey) -> List[Any]:
        """Forget these targets and all that is remembered of their segments (their scene closed, or their nodes
        left it or were replaced: a reloaded scene reuses node IDs). Returns their open sessions."""
        sessions = self.drop(*keys)
        for key in keys:
            self._ended.pop(key, None)
            self._continue.discard(key)
        return sessions

    def clear(self) -> List[Any]:
        """Forget every target and all that is remembered of segments (the scene closed). Returns the open
        sessions."""
        sessions = self.forget(*self._targets)
        self._ended.clear()
        self._continue.clear()
        return sessions

    def prepare(self, inputs: Inputs, image: Any, geometry: mrml.VolumeGeometry, embeddings: Any,
                start_from_existing: bool, closes: int = 0) -> Tuple[Target, List[Any]]:  # fmt: skip
        """The (cached) target of ``inputs`` on ``geometry``, and the open sessions of the targets it replaced or
        pushed out of the cache; reads the segment once, writes nothing. ``closes``: the scene's close count. Called
        as a click starts: the target's ``image_stamp`` is the volume's then."""
        key = inputs.key
        target = self._targets.get(key)
        if target is not None and target.geometry == geometry:
            self._targets.move_to_end(key)
            target.image_stamp = mrml.image_stamp(inputs.volume)  # the click is written only if it is still this
            return target, []
        evicted = self.drop(key)  # a volume on a new grid: its old session cannot continue
        target = Target(key, image, geometry, inputs.segmentation, inputs.segment_id, embeddings,
                        volume=inputs.volume, closes=closes)  # fmt: skip
        voxels = mrml.whole_segment(inputs.segmentation, inputs.segment_id, geometry)
        target.seen, target.stamp = voxels, mrml.segment_stamp(inputs.segmentation, inputs.segment_id)
        target.image_stamp = mrml.image_stamp(inputs.volume)
        existing = mrml.voxels_region(voxels)
        continuing = key in self._continue
        self._continue.discard(key)
        if existing is not None:  # what made it: the last record, else something no click did (a file, a brush)
            target.before = self._ended.get(key) or SegmentClicks(from_mask=True)
        if existing is not None and (start_from_existing or continuing):
            target.initial_mask = mrml.voxels_to_sitk(voxels, image)
            target.continued = True
        else:
            target.replaced = existing  # a fresh start replaces what the segment held
        self._targets[key] = target
        while len(self._targets) > MAX_CACHED_TARGETS:
            evicted += self.drop(next(iter(self._targets)))
        return target, evicted


class VolumeCache:
    """Volumes as engine images, checked and converted once per image content and transform, each with the
    embedding cache its sessions share (segments of one volume never encode a ROI twice). A volume read again
    (its node or image data was modified) whose grid and voxels are unchanged keeps its image object and
    embeddings: a session's image is current exactly while it is the object this cache hands out."""

    def __init__(self) -> None:
        self._images: Dict[Tuple, Tuple[Any, mrml.VolumeGeometry, Any]] = {}

    def forget(self, volume_ids: Set[str]) -> None:
        """Drop the cached images of these volume nodes (removed from the scene)."""
        self._images = {k: v for k, v in self._images.items() if k[0] not in volume_ids}

    def get(self, volume, harden: bool, local: bool = True) -> Tuple[Any, mrml.VolumeGeometry, Any]:
        """(SimpleITK image, grid in world RAS, EmbeddingCache) of ``volume``; raises ``InputError`` for bad input.
        ``local`` False (sessions on a server): no EmbeddingCache (None), so torch is not imported."""
        if volume is None or volume.GetImageData() is None:
            mrml.check_scalar_volume(volume)  # the one error for a missing volume or image
        key = mrml.volume_cache_key(volume, harden)
        if key not in self._images:
            image, geometry = mrml.read_volume(volume, harden=harden)
            older = [v for k, v in self._images.items() if k[0] == key[0]]
            self._images = {k: v for k, v in self._images.items() if k[0] != key[0]}  # one version per volume
            same = older and same_voxels(older[0], image, geometry)
            self._images[key] = older[0] if same else (image, geometry, None)
        image, geometry, embeddings = self._images[key]
        if local and embeddings is None:
            from ..embeddings import EmbeddingCache  # torch loads only when the local engine is first used

            embeddings = EmbeddingCache()
            self._images[key] = (image, geometry, embeddings)
        return image, geometry, embeddings

    def drop_embeddings(self) -> None:
        """Forget every embedding cache (each holds the network that filled it): after the network is released."""
        self._images = {key: (image, geometry, None) for key, (image, geometry, _) in self._images.items()}

    def checked(self, inputs: Inputs, harden: bool, local: bool = True) -> Tuple[Any, mrml.VolumeGeometry, Any]:
        """:meth:`get` for the volume of ``inputs``, after checking that its segmentation fits the volume's grid
        and has the segment; raises ``InputError`` for bad input (nothing in the scene changes)."""
        image, geometry, embeddings = self.get(inputs.volume, harden, local)
        mrml.check_segmentation(inputs.segmentation, geometry, mrml.node_name(inputs.volume))
        if not mrml.has_segment(inputs.segmentation, inputs.segment_id):
            raise InputError("Select a segment (or add one with 'New segment') first.")
        return image, geometry, embeddings


def same_voxels(cached: Tuple[Any, mrml.VolumeGeometry, Any], image: Any, geometry: mrml.VolumeGeometry) -> bool:
    """The volume read again holds what the cached entry (image, grid, embeddings) holds."""
    old = cached[0]
    return (cached[1] == geometry and old.GetPixelID() == image.GetPixelID()
            and np.array_equal(sitk.GetArrayViewFromImage(old), sitk.GetArrayViewFromImage(image)))  # fmt: skip


def without_mask(result: Any) -> Any:
    """A step's result to keep (status line, tests) without its mask: a step's mask shares the session's pixels,
    and while one is held the session's next write first copies the whole volume (~40 ms for 512 x 512 x 300)."""
    return dataclasses.replace(result, mask=None)
