"""The scene is the truth; a target's session is a cache of it. What a target remembers of the scene it was made
from, the cheap checks that the scene still matches it (before each click, undo, redo and reset, and before a
finished click is written), and the worker-thread jobs that bring a session up to date. Nothing here calls the
controller; MRML reads on the main thread only.

The checks, each a few attribute reads when nothing changed (volume's voxels and segment compared voxel by voxel
only when their modification stamps moved):

- scene: closed since the target was made (:class:`SceneWatch` counts closes), or its volume or segmentation
  node is no longer in the scene, or is not the very node selected now (a reloaded scene reuses node IDs, not
  node objects): the target is stale and forgotten (:func:`forget_stale`);
- voxels: the volume's image is no longer the one the session reads (:class:`.targets.VolumeCache` hands out the
  same image object while the voxels stay equal): the session continues on the new voxels (:func:`renew`);
- segment: the labelmap stamp (:func:`.mrml.segment_stamp`) is not the one the target's own last write left: the
  voxels edited since (:func:`hand_edit`) become the session's state (its ``adopt`` step).
"""

import weakref
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Callable, List, Optional, Tuple

import numpy as np

from ..regions import Region, zyx_slices
from . import mrml
from .remote_models import closer
from .targets import Inputs, SceneStep, Target, Targets, rewind

HAND_EDIT = ("The segment was edited outside SAM-Med3D since its last step: SAM-Med3D continues from the edited "
             "segment and keeps what was painted or erased (Undo steps back over the edit).")  # fmt: skip
NEW_VOXELS = ("The volume's voxels changed since the last click: SAM-Med3D continues on the new voxels (region "
              "encoded again; clicks and segment kept; earlier clicks can no longer be undone, Reset still reverts "
              "them).")  # fmt: skip
EDITED_WHILE_RUNNING = ("The segment was edited while the click ran: the click was not applied, so that the edit "
                        "is kept. Click again.")  # fmt: skip
VOXELS_CHANGED_WHILE_RUNNING = ("The volume's voxels changed while the click ran: the click was not applied. Click "
                                "again to segment the new voxels.")  # fmt: skip
NODE_GONE = "The volume or segmentation of SAM-Med3D's clicks was removed or replaced: those clicks ended."


class SceneWatch:
    """Counts the closes of the scene it watches and knows whether that scene is closing or importing (a point
    placed meanwhile is none of the user's clicks). Passive: its own observers only update these fields."""

    def __init__(self) -> None:
        self.scene: Any = None
        self.closes = 0
        self.busy = False
        self._tags: List[int] = []

    def watch(self, scene: Any) -> None:
        """Watch ``scene`` (again: nothing; None: stop watching)."""
        if scene is self.scene:
            return
        for tag in self._tags:
            self.scene.RemoveObserver(tag)
        self.scene, self._tags, self.busy = scene, [], False
        if scene is not None:
            events = ((scene.StartCloseEvent, 1, True), (scene.StartImportEvent, 0, True),
                      (scene.EndCloseEvent, 0, False), (scene.EndImportEvent, 0, False))  # fmt: skip
            me = weakref.ref(self)  # the scene must not keep a forgotten controller's watch alive
            self._tags = [scene.AddObserver(event, partial(_seen, me, closes, busy)) for event, closes, busy in events]


def _seen(watch: "weakref.ref[SceneWatch]", closes: int, busy: bool, caller: Any, event: str) -> None:
    """A watched scene event: ``closes`` more closes, and whether the scene is now closing or importing."""
    current = watch()
    if current is not None:
        current.closes += closes
        current.busy = busy


def gone(node: Any) -> bool:
    """The node is no longer in a scene (removed, or its scene closed)."""
    return node is None or node.GetScene() is None


def stale(target: Target, closes: int, inputs: Optional[Inputs] = None) -> bool:
    """The target's scene closed since it was made (``closes``: the watch's count), a node of it left the scene,
    or ``inputs`` (of the same key) name other node objects."""
    if target.closes != closes or gone(target.volume) or gone(target.segmentation):
        return True
    same_key = inputs is not None and inputs.key == target.key
    return same_key and (inputs.volume is not target.volume or inputs.segmentation is not target.segmentation)


def forget_stale(targets: Targets, closes: int, inputs: Optional[Inputs] = None) -> Tuple[List[Any], bool]:
    """Forget the stale targets (:func:`stale`); their open sessions (the caller closes a server's), and whether
    one of them had clicks (the user must know those ended)."""
    old = [key for key in targets if stale(targets.get(key), closes, inputs)]
    had_clicks = any(targets.get(key).clicks() for key in old)
    return targets.forget(*old), had_clicks


def live(inputs: Inputs) -> bool:
    """The action's nodes are still in the scene (an action queued before a scene close is dropped)."""
    return not any(gone(node) for node in (inputs.volume, inputs.segmentation) if node is not None)


# --- the segment --------------------------------------------------------------------------------------------


def wrote(target: Target, region: Optional[Region]) -> None:
    """Main thread, after the controller wrote ``region`` of the segment: what it holds there now, and the stamp."""
    if region is not None and target.seen is not None:
        target.seen[zyx_slices(region)] = mrml.read_segment(target.segmentation, target.segment_id,
                                                            target.geometry, region)  # fmt: skip
    target.stamp = mrml.segment_stamp(target.segmentation, target.segment_id)


@dataclass(frozen=True)
class HandEdit:
    """Voxels of the segment set outside SAM-Med3D over ``region``: ``painted`` and ``erased`` (bool, z-y-x), and
    the edit as the scene saw it (what Undo of the adopt step writes back)."""

    region: Region
    painted: np.ndarray
    erased: np.ndarray
    edit: mrml.SegmentEdit


def hand_edit(target: Target) -> Optional[HandEdit]:
    """Main thread: the segment's voxels that changed since the target's last write (None: none, or no session
    yet). Cheap unless the segment's stamp moved; then the whole segment is read once and becomes ``seen``."""
    stamp = mrml.segment_stamp(target.segmentation, target.segment_id)
    if target.session is None or stamp == target.stamp or target.seen is None:
        return None
    now = mrml.whole_segment(target.segmentation, target.segment_id, target.geometry)
    seen, target.seen, target.stamp = target.seen, now, stamp
    region = mrml.voxels_region(now != seen)
    if region is None:  # another segment of the same layer changed, or the same voxels were written again
        return None
    window = zyx_slices(region)
    before, after = seen[window], now[window]
    return HandEdit(region, after & ~before, before & ~after, mrml.SegmentEdit(region, before.copy(), after.copy()))


def changed_while_running(target: Target, image: Tuple) -> Optional[str]:
    """Main thread, a click's result in hand: why it must not be written (the segment or the volume's voxels
    changed while it ran: ``image`` is the :func:`.mrml.image_stamp` taken when it started), or None."""
    if mrml.segment_stamp(target.segmentation, target.segment_id) != target.stamp:
        return EDITED_WHILE_RUNNING
    if mrml.image_stamp(target.volume) != image:
        return VOXELS_CHANGED_WHILE_RUNNING
    return None


# --- worker-thread jobs -----------------------------------------------------------------------------------


def renew(target: Target, load: Callable[[], Any], opener: Callable[..., Any], image: Any, embeddings: Any,
          initial_mask: Any) -> Tuple[Any, ...]:  # fmt: skip
    """Worker thread: the target's session continued on new voxels (``image``, its ``embeddings`` cache) by a new
    session (``opener(model, target, clicks=...)``) that starts from the segment as it is (``initial_mask``) with
    the old session's clicks. Only once it is open are the old session's steps rewound (the scene keeps their
    edits) and the target switched to it: a failure leaves the target as it was. The rewound steps' payloads come
    back oldest first, as steps that fell off the history do, so that Reset still reverts them."""
    old = target.session
    new = opener(load(), replace(target, image=image, embeddings=embeddings, initial_mask=initial_mask),
                 clicks=old.clicks)  # fmt: skip
    payloads, _ = rewind(old)
    target.session, target.image, target.embeddings, target.initial_mask = new, image, embeddings, initial_mask
    close = closer(old)
    if close is not None:
        close()
    return tuple(reversed(payloads))


def checked_job(target: Target, step: Callable[[Any], Any], edit: Optional[HandEdit] = None,
                renewal: Optional[Callable[[], Tuple[Any, ...]]] = None) -> Callable[[], Any]:  # fmt: skip
    """The worker's job for a step of a checked target: first the renewal (:func:`renew`), then the hand edit
    (the session's ``adopt``, undoable), then ``step(session)`` (the target's session of that moment). A
    StepResult comes back with the payloads the first two dropped from the history in its ``dropped``; a reset's
    (payloads, message) with them appended to its payloads."""
    return partial(_run_checked, target, step, edit, renewal)


def _run_checked(target: Target, step: Callable[[Any], Any], edit: Optional[HandEdit],
                 renewal: Optional[Callable[[], Tuple[Any, ...]]]) -> Any:  # fmt: skip
    dropped: Tuple[Any, ...] = renewal() if renewal is not None else ()
    if edit is not None:
        adopted = target.session.adopt(edit.region, edit.painted, edit.erased, payload=SceneStep(edit.edit))
        dropped += adopted.dropped
    result = step(target.session)
    if isinstance(result, tuple):  # a reset's rewind: (payloads newest first, message)
        return [*result[0], *reversed(dropped)], result[1]
    return replace(result, dropped=dropped + tuple(result.dropped)) if dropped else result
