"""``segment-dataset``: one mask per case of a folder of images, from recorded Slicer markups prompts.

Case ``NAME`` is the image ``NAME.nii.gz`` (or .nii, .nrrd, .mha, .mhd) in ``--images``; its clicks are the
points of ``NAME.mrk.json`` (positive) and, if present, ``NAME.negative.mrk.json`` (negative) in ``--prompts``,
positives first. The mask goes to ``--out/NAME.nii.gz``. With ``--server`` the cases run on a SAM-Med3D server
(spread over its workers); otherwise here, one at a time. Exit status 1 if a case failed.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Callable, List

from ..errors import InputError
from ..wording import count
from .batch import FILES, Case, image_cases, run_cases, session_opener, summary, write_case_output, write_staged
from .options import add_device_arguments

HELP = "segment every image of a folder from recorded markups prompts (.mrk.json), locally or on a server"
REPORT = "segment-dataset-report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, type=Path, help="folder of images, one per case")
    parser.add_argument(
        "--prompts", required=True, type=Path, help="folder of NAME.mrk.json (+ NAME.negative.mrk.json)"
    )
    parser.add_argument("--out", required=True, type=Path, help="folder for the masks (NAME.nii.gz) and the report")
    parser.add_argument("--server", help="URL of a SAM-Med3D server (python -m SAMMed3DLib serve)")
    parser.add_argument("--token-file", type=Path, help="file holding the server's bearer token")
    parser.add_argument("--weights", help="checkpoint file or registry id (without --server)")
    add_device_arguments(parser)
    parser.add_argument("--jobs", type=int, help="cases at a time (default: the server's worker count; locally 1)")
    parser.add_argument("--redo", action="store_true", help="redo cases whose mask already exists")
    parser.add_argument("--auto-extend", action="store_true", help="follow objects larger than the 192 mm ROI")


def cases_of(images: Path, prompts: Path, out: Path) -> List[Case]:
    """The cases of ``images`` with their prompt files (a case without prompts fails on its own)."""
    if not prompts.is_dir():
        raise InputError(f"{prompts} is not a folder")
    cases = []
    for name, image in image_cases(images).items():
        inputs = {"positive": prompts / f"{name}.mrk.json", "negative": prompts / f"{name}.negative.mrk.json"}
        cases.append(Case(name, image, inputs, out / f"{name}.nii.gz"))
    return cases


def clicks_of(case: Case) -> list:
    """``[(point RAS mm, positive)]`` of a case: its positive points, then its negative ones."""
    from .markups import read_markups

    if not case.inputs["positive"].is_file():
        raise InputError(f"no prompts: {case.inputs['positive']} does not exist")
    clicks = [(p, True) for p in read_markups(case.inputs["positive"])]
    if case.inputs["negative"].is_file():
        clicks += [(p, False) for p in read_markups(case.inputs["negative"])]
    return clicks


def segment_case(case: Case, open_session: Callable) -> str:
    """Segment one case with a session from ``open_session(image)`` and write its mask atomically."""
    from .images import read_image, write_image

    clicks = clicks_of(case)
    with FILES:
        image = read_image(case.image)
    session = open_session(image)
    try:
        for point, positive in clicks:
            session.add_click(point, positive)
        mask = session.mask
    finally:
        close = getattr(session, "close", None)
        if close is not None:
            close()
    with FILES:
        write_case_output(case, lambda path: write_image(mask, path))
    return count(len(clicks), "click")


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    cases = cases_of(args.images, args.prompts, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    open_session, jobs = session_opener(args, "segment", auto_extend=args.auto_extend)
    outcomes = run_cases(cases, lambda case: segment_case(case, open_session), args.jobs or jobs, redo=args.redo)
    seconds = time.perf_counter() - start
    print(summary(outcomes, seconds))
    report = {"seconds": seconds, "cases": [o.__dict__ for o in outcomes]}
    from .images import write_text

    write_staged(args.out / REPORT, lambda path: write_text(json.dumps(report, indent=2), path))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
