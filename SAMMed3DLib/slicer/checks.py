"""The controller's checks of the scene before and after each step (:class:`SceneChecks`, mixed into
:class:`~.controller.SegmentationController`): the rule and the checks themselves are :mod:`.freshness`'s; this
class applies them to the controller's targets, queue and messages. Main thread."""

import collections
from functools import partial
from operator import methodcaller
from typing import Any, Callable, Optional

from . import freshness, mrml, targets
from .actions import Click
from .remote_models import open_session
from .targets import SceneStep, Target


def first_click(load: Callable[[], Any], target: Target, click: Click, auto_extend: bool,
                history_limit: Optional[int]) -> Any:  # fmt: skip
    """Worker thread, a target's first click: the model (``load``), the target's new session, its first step (the
    target was made from the scene just before: nothing to check)."""
    target.session = open_session(load(), target, auto_extend, history_limit)
    return target.session.add_click(click.point, positive=click.positive, payload=SceneStep())


class SceneChecks:
    """Mixed into the controller, which owns ``_targets``, ``_actions``, ``inputs``, ``options``, ``history_limit``
    and the ``_close``, ``_report``, ``_show_points`` this class uses."""

    def __init__(self) -> None:
        self._watch = freshness.SceneWatch()  # the scene's closes and imports
        self._closes_seen = 0  # a target forgotten after a close ended with the scene: no message

    def _forget_stale(self) -> None:
        """Forget the targets whose scene closed or whose nodes left it (closing their server sessions), and the
        queued actions on such nodes; one message when clicks ended that way (not with the scene)."""
        if self._watch.closes != self._closes_seen:  # what is remembered by node ID belongs to the closed scene
            self._close(self._targets.clear())
        sessions, had_clicks = freshness.forget_stale(self._targets, self._watch.closes, self.inputs)
        self._close(sessions)
        self._actions = collections.deque(a for a in self._actions if freshness.live(a.inputs))
        if had_clicks and self._watch.closes == self._closes_seen:
            self._report(freshness.NODE_GONE, True)
        self._closes_seen = self._watch.closes

    def _click_job(self, target: Target, click: Click, image: Any, embeddings: Any,
                   load: Callable[[], Any]) -> Callable[[], Any]:  # fmt: skip
        """The worker's job for a click of a target with a session: the session's own ``add_click`` when the scene
        still matches it, else that click after the session caught up (:func:`.freshness.checked_job`)."""
        edit = self._hand_edit(target)  # first: a renewal starts from the segment as it is
        renewal = self._renewal(target, image, embeddings, load)
        if edit is None and renewal is None:  # the session's own step, as the click path promises
            return partial(target.session.add_click, click.point, positive=click.positive, payload=SceneStep())
        return freshness.checked_job(target, partial(_click_step, click), edit, renewal)

    def _travel_job(self, target: Target, undo: Optional[bool]) -> Optional[Callable[[], Any]]:
        """The worker's job for an undo (``undo`` True), redo (False) or reset (None) of a target with a session,
        after any hand edit is adopted (so that Undo steps back over it); None: nothing to undo or redo."""
        edit = self._hand_edit(target)
        if undo is None:
            return freshness.checked_job(target, targets.rewind, edit)
        if edit is None and not (target.session.can_undo if undo else target.session.can_redo):
            return None
        return freshness.checked_job(target, methodcaller("undo" if undo else "redo"), edit)

    def _renewal(self, target: Target, image: Any, embeddings: Any, load: Callable[[], Any]) -> Optional[Callable]:
        """When the volume's voxels changed since the target's session read them: the job continuing it on the
        new ones from the segment as it is (:func:`.freshness.renew`), else None."""
        if target.image is image:
            return None
        target.notice = freshness.NEW_VOXELS
        initial_mask = mrml.voxels_to_sitk(target.seen, image)  # checked just before: the scene's segment
        opener = partial(open_session, auto_extend=self.options.auto_extend, history_limit=self.history_limit)
        return partial(freshness.renew, target, load, opener, image, embeddings, initial_mask)

    def _hand_edit(self, target: Target) -> Optional[freshness.HandEdit]:
        """The segment's edits made outside the module since the target's last step (the session adopts them)."""
        edit = freshness.hand_edit(target)
        if edit is not None:
            target.notice = freshness.HAND_EDIT
        return edit

    def _still_current(self, target: Target, result: Any) -> bool:
        """A click's result may be written: its target is still the one of its key (the scene did not close, its
        nodes were not removed) and neither its segment nor its volume's voxels changed while it ran (then the click
        is taken back from the session, its point goes, and the user is told)."""
        if self._targets.get(target.key) is not target:
            return False
        target.settled = targets.folded(target.settled, result.dropped)  # fell off the history whatever happens
        changed = freshness.changed_while_running(target, target.image_stamp)
        if changed:
            target.session.discard_last_step()
            self._show_points()
            self._report(changed, True)
        return not changed

    def _tell(self, target: Target, result: Any) -> None:
        """The messages of a step just written: the target's notice (new voxels, a hand edit), a server's replay."""
        if target.notice:
            self._report(target.notice, False)
            target.notice = ""
        self._tell_replayed(result)


def _click_step(click: Click, session: Any) -> Any:
    """Worker thread: the click as the session's next step."""
    return session.add_click(click.point, positive=click.positive, payload=SceneStep())
