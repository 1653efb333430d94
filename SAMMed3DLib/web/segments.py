"""The page's segment list: rows for the panel and the edits the page offers on a segmentation node (rename,
colour, delete). New segments come from the module's own ``panel.add_segment``; masks are written only by the
controller (clicks) and trame-slicer's segmentation editor (brushes)."""

import re
from typing import Dict, List, Sequence

from ..errors import InputError

MAX_NAME = 80


def _hex(rgb: Sequence[float]) -> str:
    return "#" + "".join(f"{max(0, min(255, round(255 * c))):02x}" for c in rgb[:3])


def _rgb(colour: str) -> tuple:
    if not isinstance(colour, str) or not re.fullmatch(r"#?[0-9a-fA-F]{6}([0-9a-fA-F]{2})?", colour.strip()):
        raise InputError(f"not a colour: {colour!r} (expected #rrggbb)")
    digits = colour.strip().lstrip("#")
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))


def rows(segmentation_node) -> List[Dict[str, str]]:
    """``{"id", "name", "color"}`` of each segment, in the segmentation's order (colour as ``#rrggbb``)."""
    if segmentation_node is None:
        return []
    segmentation = segmentation_node.GetSegmentation()
    found = []
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        segment = segmentation.GetSegment(segment_id)
        found.append({"id": segment_id, "name": segment.GetName(), "color": _hex(segment.GetColor())})
    return found


def _segment(segmentation_node, segment_id: str):
    segment = segmentation_node.GetSegmentation().GetSegment(str(segment_id)) if segmentation_node else None
    if segment is None:
        raise InputError(f"no segment {segment_id!r} in this case")
    return segment


def rename(segmentation_node, segment_id: str, name: str) -> None:
    name = " ".join(str(name or "").split())[:MAX_NAME]
    if not name:
        raise InputError("a segment needs a name")
    _segment(segmentation_node, segment_id).SetName(name)


def recolour(segmentation_node, segment_id: str, colour: str) -> None:
    _segment(segmentation_node, segment_id).SetColor(*_rgb(colour))


def remove(segmentation_node, segment_id: str) -> None:
    _segment(segmentation_node, segment_id)
    segmentation_node.GetSegmentation().RemoveSegment(str(segment_id))
