"""Points from 3D Slicer markups files (``.mrk.json``) and from ``R,A,S`` text, as RAS millimetres."""

import json
import os
from pathlib import Path
from typing import List, Tuple

from .errors import InputError

Point = Tuple[float, float, float]

_TO_RAS = {"RAS": (1.0, 1.0, 1.0), "LPS": (-1.0, -1.0, 1.0)}


def read_markups(path: "os.PathLike[str] | str") -> List[Point]:
    """Every control point of every markup in a Slicer ``.mrk.json`` file, converted to RAS mm.

    Slicer writes ``coordinateSystem`` "LPS" by default (and assumes LPS when it is absent); "RAS" is
    honoured too. No points, another coordinate system or an unreadable file → InputError.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path} is not a readable markups JSON file ({exc})") from exc
    markups = document.get("markups") if isinstance(document, dict) else None
    if not isinstance(markups, list):
        raise InputError(f"{path} is not a Slicer markups file: it has no 'markups' list")
    points = [p for markup in markups for p in _markup_points(markup, path)]
    if not points:
        raise InputError(f"{path} has no control points")
    return points


def _markup_points(markup: dict, path: Path) -> List[Point]:
    system = str(markup.get("coordinateSystem", "LPS")).upper()
    if system not in _TO_RAS:
        raise InputError(f"{path}: unknown coordinateSystem {markup.get('coordinateSystem')!r}; expected LPS or RAS")
    sign = _TO_RAS[system]
    points = []
    for control in markup.get("controlPoints") or []:
        position = control.get("position") if isinstance(control, dict) else None
        try:
            values = [float(v) for v in position]
        except (TypeError, ValueError):
            values = []
        if len(values) != 3:
            raise InputError(f"{path}: a control point has no valid 3-D position ({position!r})")
        points.append(tuple(v * s for v, s in zip(values, sign)))
    return points


def parse_points(spec: str) -> List[Point]:
    """``"R,A,S"`` (mm, RAS) → one point; a path to a markups file → its points."""
    if spec.lower().endswith(".json") or os.path.isfile(spec):
        return read_markups(spec)
    parts = spec.replace(";", ",").split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3:
        raise InputError(f"{spec!r} is neither 'R,A,S' in mm nor a markups file")
    return [values]
