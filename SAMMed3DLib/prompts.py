"""Each segment's clicks of one case, in one Slicer markups file: ``NAME.prompts.mrk.json``.

The file is an ordinary Slicer markups JSON document (Slicer opens it as one point list per segment) with one
``Fiducial`` markup per segment, in segment order:

- the markup's ``name`` is the segment's name, its ``display.color`` the segment's colour (RGB, 0-1);
- its control points are the segment's clicks in the order they were made (their order matters: each click
  refines the mask of the clicks before it), positions in LPS millimetres as Slicer writes them
  (``coordinateSystem`` "LPS"; "RAS" is read too);
- a click's ``description`` is "positive" or "negative" (its ``label`` is ``+1``, ``+2``, ``-1`` ... for
  people reading the points in Slicer);
- the document's ``sammed3d`` object holds what Slicer's markups have no field for: per segment, in the same
  order, its segment ID and ``fromMask``: true when the clicks refined content they did not make (a segment
  loaded from a file or painted first), so that replaying them from an empty mask gives a different result.

``segment-dataset`` replays such a file (one session per segment, the clicks in order) into a label map.
"""

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Sequence, Tuple

from .coordinates import lps_to_ras, ras_to_lps
from .errors import InputError

SUFFIX = ".prompts.mrk.json"
SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
    "markups-schema-v1.0.3.json#"
)
POSITIVE, NEGATIVE = "positive", "negative"

Point = Tuple[float, float, float]
Click = Tuple[Point, bool]  # (RAS mm, positive)


@dataclass(frozen=True)
class SegmentPrompts:
    """One segment's clicks: ``clicks`` are (point in RAS mm, positive), oldest first; ``color`` RGB in 0-1;
    ``from_mask``: they refined segment content they did not make (see the module docstring)."""

    name: str
    clicks: Tuple[Click, ...] = ()
    color: Tuple[float, float, float] = (1.0, 1.0, 0.0)
    segment_id: str = ""
    from_mask: bool = False


def prompts_document(segments: Sequence[SegmentPrompts]) -> dict:
    """The markups JSON document (a dict) of ``segments``; see the module docstring."""
    return {
        "@schema": SCHEMA,
        "markups": [_markup(segment) for segment in segments],
        "sammed3d": {"segments": [{"id": s.segment_id, "fromMask": s.from_mask} for s in segments]},
    }


def prompts_text(segments: Sequence[SegmentPrompts]) -> str:
    """:func:`prompts_document` as indented JSON text."""
    return json.dumps(prompts_document(segments), indent=2)


def _markup(segment: SegmentPrompts) -> dict:
    counts = {True: 0, False: 0}
    points = []
    for point, positive in segment.clicks:
        counts[positive] += 1
        points.append({
            "id": str(len(points) + 1),
            "label": f"{'+' if positive else '-'}{counts[positive]}",
            "description": POSITIVE if positive else NEGATIVE,
            "position": [float(v) for v in ras_to_lps(point)],
            "positionStatus": "defined",
            "locked": True,
        })  # fmt: skip
    color = [float(c) for c in segment.color]
    return {
        "type": "Fiducial",
        "name": segment.name,
        "coordinateSystem": "LPS",
        "coordinateUnits": "mm",
        "locked": True,
        "controlPoints": points,
        "display": {"color": color, "selectedColor": color},
    }


def markups_document(path: Path, kind: str) -> Tuple[Any, List[Any]]:
    """(the parsed JSON, its ``markups`` list) of a Slicer ``.mrk.json`` file; InputError naming ``path`` (as a
    ``kind``, e.g. "prompts file") if it cannot be read, is nested too deeply or has no ``markups`` list."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable {kind} ({exc})") from exc
    except RecursionError as exc:
        raise InputError(f"{path} is not a {kind}: its JSON is nested too deeply") from exc
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list):
        raise InputError(f"{path} is not a Slicer markups file: it has no 'markups' list")
    return document, markups


def read_prompts(path: "os.PathLike[str] | str") -> List[SegmentPrompts]:
    """The segments' clicks of a ``.prompts.mrk.json`` file (RAS mm); InputError naming the file if it is not one.

    Points that are not placed (``positionStatus`` other than "defined") are skipped; a click without a
    ``description`` of "positive" or "negative" is refused (its sign would be a guess)."""
    path = Path(path)
    document, markups = markups_document(path, "prompts file")
    extras = _extras(document, len(markups), path)
    return [_segment(markup, extra, path) for markup, extra in zip(markups, extras)]


def _extras(document: dict, count: int, path: Path) -> List[dict]:
    """The ``sammed3d.segments`` entries, one per markup (empty ones when the object is absent)."""
    extra = document.get("sammed3d", {})
    segments = extra.get("segments", []) if isinstance(extra, dict) else None
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        raise InputError(f"{path}: 'sammed3d.segments' must be a list of objects")
    if segments and len(segments) != count:
        raise InputError(f"{path}: 'sammed3d.segments' has {len(segments)} entries for {count} markups")
    return segments or [{} for _ in range(count)]


def _segment(markup: Any, extra: dict, path: Path) -> SegmentPrompts:
    if not isinstance(markup, dict):
        raise InputError(f"{path}: a markup is not a JSON object")
    name = markup.get("name")
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"{path}: every markup needs a 'name' (its segment's name)")
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in ("LPS", "RAS"):
        raise InputError(f"{path}: unknown coordinateSystem {markup.get('coordinateSystem')!r}; expected LPS or RAS")
    clicks = []
    for control in markup.get("controlPoints") or []:
        if not isinstance(control, dict):
            raise InputError(f"{path}: a control point of {name!r} is not a JSON object")
        if str(control.get("positionStatus", "defined")).lower() != "defined":
            continue
        sign = control.get("description")
        if sign not in (POSITIVE, NEGATIVE):
            raise InputError(f"{path}: a click of {name!r} has description {sign!r}; expected positive or negative")
        point = control_point_position(control.get("position"), path)
        clicks.append((tuple(lps_to_ras(point).tolist()) if system == "LPS" else point, sign == POSITIVE))
    display = markup.get("display")
    color = display.get("color", SegmentPrompts.color) if isinstance(display, dict) else SegmentPrompts.color
    segment_id = extra.get("id", "")
    return SegmentPrompts(name, tuple(clicks), _color(color, path), segment_id if isinstance(segment_id, str) else "",
                          extra.get("fromMask") is True)  # fmt: skip


def control_point_position(position: object, path: Path) -> Point:
    """A markups control point's ``position``: a JSON list of three finite numbers in mm (not strings, not
    booleans); InputError naming ``path`` otherwise."""
    numbers = isinstance(position, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in position
    )
    try:
        values = tuple(float(v) for v in position) if numbers else ()
    except OverflowError:  # an integer beyond float range
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"{path}: a control point's position must be three finite numbers in mm, got {position!r}")
    return values


def _color(color: object, path: Path) -> Tuple[float, float, float]:
    ok = isinstance(color, (list, tuple)) and len(color) == 3
    ok = ok and all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 1 for c in color)
    if not ok:
        raise InputError(f"{path}: a colour must be three numbers from 0 to 1, got {color!r}")
    return tuple(float(c) for c in color)

