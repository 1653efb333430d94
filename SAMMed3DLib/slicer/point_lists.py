"""The controller's point lists (:class:`PointLists`, mixed into :class:`~.controller.SegmentationController`):
the positive and negative markups lists are a view of the selected target's clicks and of the clicks waiting to
run (:mod:`.markups` compares and rewrites them), and place mode puts a view click into one of them
(:mod:`.placing`). Which events are observed is decided here; the handlers that receive them stay in the
controller, where a point list's event enters the click path. Main thread."""

from typing import Any, List, Optional, Set, Tuple

from . import markups
from .actions import Click
from .placing import PlaceMode


class PointLists:
    """Mixed into the controller, which owns ``inputs``, ``_targets``, ``_pending``, ``_actions``, ``_report`` and
    the event handlers ``_points_changed`` and ``_place_mode_changed`` this class uses."""

    def __init__(self) -> None:
        self.place_mode = PlaceMode()
        self._observations: List[Tuple[Any, int]] = []  # (node, observer tag) of place_mode.events()
        self._observed: List[Tuple[Any, int, bool]] = []
        self._click_points: Set[Tuple[Any, str]] = set()  # (point list, point ID) of points that show clicks
        self._showing = False  # the controller itself is changing the point lists: their events are ours

    # --- what the GUI calls ---------------------------------------------------------------------------------

    def start_placing(self, positive: bool) -> None:
        """Place mode into the positive (green) or negative (red) list: every click in a view is a prompt."""
        self.place_mode.start(positive)

    def stop_placing(self) -> None:
        self.place_mode.stop()

    @property
    def placing(self) -> Optional[bool]:
        """True / False while placing positive / negative clicks, None otherwise."""
        return self.place_mode.placing()

    def discard_new_points(self, reason: str) -> None:
        """Remove new Defined points without running them and report ``reason`` once (e.g. the user declined to
        install PyTorch)."""
        self._discard(self._compared_lists(), reason)

    # --- the lists as a view of the clicks ------------------------------------------------------------------

    def _discard(self, lists: List[markups.Compared], reason: str) -> None:
        self._showing = True
        try:
            removed = markups.remove_new(lists)
        finally:
            self._showing = False
        if removed:
            self._report(reason, True)

    def _compared_lists(self) -> List[markups.Compared]:
        """Each point list compared once with the selected target's clicks and waiting clicks."""
        return markups.compare_lists(self.inputs.point_lists(), self._clicks(), self._waiting())

    def _observe(self) -> None:
        """Observe what place mode names (nothing while the module is hidden), with the controller's own
        handlers: a point list's event lands in its ``process_points``, place mode's in the GUI's hook."""
        events = self.place_mode.events()
        if events == self._observed:
            return
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        handlers = {True: self._points_changed, False: self._place_mode_changed}
        self._observations = [(node, node.AddObserver(event, handlers[points])) for node, event, points in events]
        self._observed = events

    def _show_points(self) -> None:
        """Make the point lists show the selected target's clicks and the clicks still waiting to run."""
        self._showing = True
        try:
            markups.show_lists(self.inputs.point_lists(), self._clicks(), self._waiting())
            self._click_points = markups.point_ids(self.inputs.point_lists())
        finally:
            self._showing = False

    def _clicks(self) -> Tuple[Tuple[markups.Point, bool], ...]:
        """The selected target's clicks: (world RAS mm, positive), oldest first."""
        target = self._targets.get(self.inputs.key)
        return target.clicks() if target is not None else ()

    def _waiting(self) -> List[Tuple[str, bool]]:
        """(point ID, positive) of the selected target's clicks handed to the worker or queued, oldest first."""
        queued = [*(work.action for work in self._pending), *self._actions]
        return [(a.point_id, a.positive) for a in queued if isinstance(a, Click) and a.inputs.key == self.inputs.key]
