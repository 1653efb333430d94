"""The two point lists (green positive, red negative clicks) as a view of a session's clicks.

Only control points whose position status is *Defined* are clicks. In place mode Slicer's markups widget adds a
*Preview* point to the active list on every mouse move over a view and removes it when the mouse leaves, so
points are never counted or addressed by index: a point is matched to a click by its position (world RAS, mm)
and polarity, and a point waiting for its click to run is known by its control-point ID. MRML / VTK only.
"""

from typing import Any, Iterable, List, Sequence, Set, Tuple

import numpy as np

Point = Tuple[float, float, float]  # world RAS, mm
MATCH_MM = 1e-4
"""A point and a click are the same when they are this close (mm): the session keeps the point's exact value,
and a world ↔ local round trip through a point list's parent transform changes it by far less."""

POSITIVE_COLOR = (0.2, 0.85, 0.2)  # green: positive clicks (RGB, 0..1)
NEGATIVE_COLOR = (0.9, 0.2, 0.2)  # red: negative clicks
POINT_LISTS = (("SAM positive", POSITIVE_COLOR), ("SAM negative", NEGATIVE_COLOR))
"""(name, colour) of the positive and the negative point list."""


def new_point_list(scene, name: str, colour: Sequence[float]):
    """A markups point list drawn in ``colour`` (RGB, 0..1), without point labels."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    if display is not None:
        display.SetSelectedColor(*colour)
        display.SetColor(*colour)
        display.SetPointLabelsVisibility(False)
    return node


def defined_points(node) -> List[Tuple[str, Point]]:
    """(control-point ID, world RAS position in mm) of the node's Defined points, in list order."""
    if node is None:
        return []
    points, position = [], [0.0, 0.0, 0.0]
    for i in range(node.GetNumberOfControlPoints()):
        if node.GetNthControlPointPositionStatus(i) != node.PositionDefined:
            continue  # a Preview point follows the mouse in place mode; it is not a click (yet)
        node.GetNthControlPointPositionWorld(i, position)
        points.append((node.GetNthControlPointID(i), tuple(float(v) for v in position)))
    return points


def control_points_ras(node) -> List[Point]:
    """Positions of the node's Defined control points in world RAS (mm), in list order."""
    return [point for _, point in defined_points(node)]


def add_point(node, point: Point) -> str:
    """Append a Defined control point at world RAS (mm), locked so that it is not dragged; returns its ID."""
    index = node.AddControlPointWorld(*point)
    node.SetNthControlPointLocked(index, True)
    return node.GetNthControlPointID(index)


def remove_point(node, point_id: str) -> None:
    """Remove the control point with ID ``point_id`` (nothing when it is gone already)."""
    index = node.GetNthControlPointIndexByID(point_id)
    if index >= 0:
        node.RemoveNthControlPoint(index)


def _match(points: Sequence[Tuple[str, Point]], clicks: Sequence[Point]) -> Tuple[Set[str], List[Point]]:
    """Pair points with clicks by position, each used once: (IDs of the paired points, clicks left unpaired)."""
    paired: Set[str] = set()
    missing: List[Point] = []
    for click in clicks:
        for point_id, point in points:
            if point_id not in paired and np.allclose(point, click, atol=MATCH_MM, rtol=0):
                paired.add(point_id)
                break
        else:
            missing.append(click)
    return paired, missing


def compare(node, clicks: Sequence[Point], waiting: Iterable[str]) -> Tuple[List[Tuple[str, Point]], List[Point]]:
    """The node's Defined points against ``clicks`` (world RAS) and the IDs of points ``waiting`` for their click
    to run: (points that are neither: new clicks, clicks without a point: points the user deleted)."""
    waiting = set(waiting)
    points = [(i, p) for i, p in defined_points(node) if i not in waiting]
    paired, missing = _match(points, clicks)
    return [(i, p) for i, p in points if i not in paired], missing


def show(node, clicks: Sequence[Point], waiting: Iterable[str] = ()) -> None:
    """Make the node's Defined points exactly ``clicks`` plus the ``waiting`` ones: extra points go, missing ones
    are added. Points already showing a click stay (their IDs too); Preview points are left alone."""
    if node is None:
        return
    extra, missing = compare(node, clicks, waiting)
    was_modifying = node.StartModify()
    try:
        for point_id, _ in extra:
            remove_point(node, point_id)
        for click in missing:
            add_point(node, click)
    finally:
        node.EndModify(was_modifying)


Compared = Tuple[Any, bool, List[Tuple[str, Point]], List[Point]]
"""One point list compared with its clicks: (node, positive, new points: (ID, RAS mm), clicks without a point)."""


def _of(items: Iterable[Tuple[Any, bool]], positive: bool) -> List[Any]:
    return [item for item, polarity in items if polarity == positive]


def compare_lists(lists: Iterable[Tuple[Any, bool]], clicks: Sequence[Tuple[Point, bool]],
                  waiting: Sequence[Tuple[str, bool]]) -> List[Compared]:  # fmt: skip
    """:func:`compare` for each (point list, positive) of ``lists``, against the ``clicks`` ((world RAS, positive))
    and the ``waiting`` points ((ID, positive)) of its polarity."""
    return [(node, positive, *compare(node, _of(clicks, positive), _of(waiting, positive))) for node, positive in lists]


def show_lists(lists: Iterable[Tuple[Any, bool]], clicks: Sequence[Tuple[Point, bool]],
               waiting: Sequence[Tuple[str, bool]]) -> None:  # fmt: skip
    """:func:`show` for each (point list, positive) of ``lists``: its polarity's clicks and waiting points."""
    for node, positive in lists:
        show(node, _of(clicks, positive), _of(waiting, positive))


def remove_new(compared: Sequence[Compared]) -> bool:
    """Remove the new points of :func:`compare_lists`'s result; whether there were any."""
    for node, _, new, _ in compared:
        for point_id, _ in new:
            remove_point(node, point_id)
    return any(new for _, _, new, _ in compared)


def point_ids(lists: Iterable[Tuple[Any, bool]]) -> Set[Tuple[Any, str]]:
    """(point list, control-point ID) of every Defined point in ``lists`` ((point list, positive) pairs)."""
    return {(node, point_id) for node, _ in lists for point_id, _ in defined_points(node)}


def split_moved(compared: Sequence[Compared], shown: Set[Tuple[Any, str]]) -> Tuple[List[Compared], bool]:
    """:func:`compare_lists`'s result without the "new" points that are points of ``shown`` (the points that
    showed clicks, :func:`point_ids`) moved elsewhere (unlocked and dragged), and whether there were any."""
    kept = [(node, positive, [(i, p) for i, p in new if (node, i) not in shown], missing)
            for node, positive, new, missing in compared]  # fmt: skip
    return kept, sum(len(c[2]) for c in compared) != sum(len(c[2]) for c in kept)
