"""The user actions the controller queues, one type each, with the panel selection they were made with (the
selection may change before they run); the background work that is no queued action (a download, a connection
test, an errand); and :class:`Pending`, the record of work handed to the worker thread. The controller has one
handler per type for starting, finishing and failing."""

import collections
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Deque, Iterable, List, Tuple

from .markups import Point
from .models import Progress
from .targets import Inputs


@dataclass(frozen=True)
class Action:
    inputs: Inputs


@dataclass(frozen=True)
class Click(Action):
    """A Defined control point turned into a click: its world RAS position (mm), polarity and control-point ID."""

    point: Point
    positive: bool
    point_id: str


@dataclass(frozen=True)
class Undo(Action):
    pass


@dataclass(frozen=True)
class Redo(Action):
    pass


@dataclass(frozen=True)
class Reset(Action):
    """Restore the segment as it was before the first click and forget the clicks."""


@dataclass(frozen=True)
class Finish(Action):
    """Keep the segment as it is and forget the clicks; the next click starts a new session."""


@dataclass(frozen=True)
class Show(Action):
    """Show the clicks of the selected target in the point lists (after a switch of volume, segment or model)."""


@dataclass(frozen=True)
class Preload(Action):
    """Load the network of ``options`` (:class:`~.models.ModuleOptions`) ahead of the first click, quietly: a
    failure is a reason in the status line, never a message box (the click reports it as usual). ``warm``: then
    run it once on a blank crop, unless a click is already waiting (:meth:`.models.ModelStore.warm_job`)."""

    options: Any
    warm: bool = False


@dataclass(frozen=True)
class Download:
    """Background work: the Download button's fetch of the selected model; ``progress`` shows and cancels it."""

    progress: Progress


@dataclass(frozen=True)
class ConnectionTest:
    """Background work: Test connection's question to the server at ``url`` (its answer is one line)."""

    url: str


@dataclass(frozen=True)
class Errand:
    """Background work whose outcome nobody needs (closing a server session, warming the worker thread)."""


@dataclass
class Pending:
    """Work handed to the worker thread: the action (or background work) it is for, its future, the target its
    result is written to (None: none), and since when it can run (``time.monotonic()`` seconds: its submission
    to an idle worker, or the collection of the work before it, as the one worker thread runs them in order)."""

    action: Any
    future: Future
    target: Any = None
    started: float = field(default_factory=time.monotonic)


def abandon(pending: Deque[Pending]) -> None:
    """Nothing will collect this work: cancel the jobs that have not started (a download too) but the errands
    (a server session to close), and forget all of it."""
    for work in pending:
        if isinstance(work.action, Download):
            work.action.progress.cancel()
        if not isinstance(work.action, Errand):
            work.future.cancel()
    pending.clear()


def with_points(queued: Iterable[Action]) -> Deque[Action]:
    """The queued actions but the clicks whose control point is gone (the user deleted it before they ran)."""

    def placed(action: Action) -> bool:
        if not isinstance(action, Click):
            return True
        node = action.inputs.positive if action.positive else action.inputs.negative
        return node is not None and node.GetNthControlPointIndexByID(action.point_id) >= 0

    return collections.deque(action for action in queued if placed(action))


def new_clicks(inputs: Inputs, compared: Iterable[Tuple[Any, bool, List[Tuple[str, Point]], Any]]) -> List[Click]:
    """The clicks of the new Defined points in ``compared`` (:func:`.markups.compare_lists`), made with
    ``inputs``; each point is locked (a click's point is not dragged)."""
    clicks = []
    for node, positive, new, _ in compared:
        for point_id, point in new:
            node.SetNthControlPointLocked(node.GetNthControlPointIndexByID(point_id), True)
            clicks.append(Click(inputs, point, positive, point_id))
    return clicks
