"""Points from 3D Slicer markups files (``.mrk.json``) and from ``R,A,S`` text, as RAS millimetres."""

import math
import os
import re
from pathlib import Path
from typing import List, Tuple

from ..coordinates import lps_to_ras
from ..errors import InputError
from ..prompts import control_point_position, markups_document

Point = Tuple[float, float, float]

_TO_RAS = {"RAS": (1.0, 1.0, 1.0), "LPS": tuple(lps_to_ras((1.0, 1.0, 1.0)).tolist())}  # per-axis signs

POINT_LIKE = re.compile(r"^-(?:[\d.]|inf|nan)", re.IGNORECASE)
"""Command-line values that start like a negative number ("-12.5,30,4", "-inf,0,0", "-.5;1;2"): for argparse
these are points, never options, so that a bad one gets a message about the point."""


def read_markups(path: "os.PathLike[str] | str") -> List[Point]:
    """Every placed control point of every markup in a Slicer ``.mrk.json`` file, converted to RAS mm.

    Slicer writes ``coordinateSystem`` "LPS" by default (and assumes LPS when it is absent); "RAS" is
    honoured too. Points whose ``positionStatus`` is not "defined" (Slicer's "undefined" and "preview":
    not placed) are skipped; a point without the field (older files) counts as placed. No placed points,
    another coordinate system or an unreadable file → InputError.
    """
    path = Path(path)
    document, markups = markups_document(path, "Slicer markups file")
    points, skipped = [], 0
    for markup in markups:
        placed, unplaced = _markup_points(markup, path)
        points += placed
        skipped += unplaced
    if not points:
        note = f" ({skipped} not placed: positionStatus is not 'defined')" if skipped else ""
        raise InputError(f"{path} has no control points{note}")
    return points


def _markup_points(markup: dict, path: Path) -> Tuple[List[Point], int]:
    """(placed control points of one markup in RAS mm, how many were skipped as not placed)."""
    if not isinstance(markup, dict):
        raise InputError(f"{path}: a markup is not a JSON object")
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in _TO_RAS:
        raise InputError(f"{path}: unknown coordinateSystem {markup.get('coordinateSystem')!r}; expected LPS or RAS")
    sign = _TO_RAS[system]
    points, skipped = [], 0
    for control in markup.get("controlPoints") or []:
        if not isinstance(control, dict):
            raise InputError(f"{path}: a control point is not a JSON object ({control!r})")
        if str(control.get("positionStatus", "defined")).lower() != "defined":
            skipped += 1
            continue
        values = control_point_position(control.get("position"), path)
        points.append(tuple(v * s for v, s in zip(values, sign)))
    return points, skipped


def parse_points(spec: str) -> List[Point]:
    """``"R,A,S"`` (mm, RAS; ``;`` also separates) → one point; a path to a markups file → its points."""
    if spec.lower().endswith(".json") or os.path.isfile(spec):
        return read_markups(spec)
    parts = spec.replace(";", ",").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        raise InputError(f"{spec!r} is neither a point 'R,A,S' in mm nor a markups file") from None
    if len(values) != 3:
        hint = "; give each point as its own value, separated by spaces" if len(values) % 3 == 0 else ""
        raise InputError(f"{spec!r} is not one point 'R,A,S': it has {len(values)} numbers{hint}")
    if not all(math.isfinite(v) for v in values):
        raise InputError(f"the point {spec!r} must have three finite coordinates in mm")
    return [values]
