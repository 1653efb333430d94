"""The user actions the controller queues, one type each, with the panel selection they were made with (the
selection may change before they run). The controller has one handler per type."""

from dataclasses import dataclass

from .markups import Point
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
