"""``segment-dataset``: one mask per case of a folder of images, from recorded Slicer markups prompts.

Case ``NAME`` is the image ``NAME.nii.gz`` (or .nii, .nrrd, .mha, .mhd) in ``--images``. Its clicks, in
``--prompts``, are either

- ``NAME.prompts.mrk.json``, the worklist's record of each segment's clicks in the order they were made
  (:mod:`SAMMed3DLib.prompts`): each segment is replayed in its own session, and the mask is a label map with
  value 1 for the file's first segment, 2 for the second, ... (where two overlap, the earlier segment keeps the
  voxel, as the module's "protect other segments" does); or
- the points of ``NAME.mrk.json`` (positive) and, if present, ``NAME.negative.mrk.json`` (negative), positives
  first: one mask (0/1).

The mask goes to ``--out/NAME.nii.gz``. With ``--server`` the cases run on a SAM-Med3D server (spread over its
workers); otherwise here, one at a time. Exit status 1 if a case failed.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Callable, List

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..prompts import SUFFIX, SegmentPrompts, read_prompts
from ..wording import count
from .batch import FILES, Case, image_cases, run_cases, session_opener, summary, write_case_output, write_staged
from .options import add_device_arguments

HELP = "segment every image of a folder from recorded markups prompts (.mrk.json), locally or on a server"
REPORT = "segment-dataset-report.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", required=True, type=Path, help="folder of images, one per case")
    parser.add_argument(
        "--prompts", required=True, type=Path,
        help="folder of NAME.prompts.mrk.json (each segment's clicks, as the worklist saves them) or NAME.mrk.json "
        "(+ NAME.negative.mrk.json)",
    )  # fmt: skip
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
        inputs = {"segments": prompts / f"{name}{SUFFIX}", "positive": prompts / f"{name}.mrk.json",
                  "negative": prompts / f"{name}.negative.mrk.json"}  # fmt: skip
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


def segments_of(case: Case) -> List[SegmentPrompts]:
    """The case's segments to replay: those of its prompts file that have clicks, else one segment made of its
    positive and negative markups files."""
    if case.inputs["segments"].is_file():
        segments = [s for s in read_prompts(case.inputs["segments"]) if s.clicks]
        if not segments:
            raise InputError(f"{case.inputs['segments']} holds no clicks")
        return segments
    return [SegmentPrompts("1", tuple(clicks_of(case)))]


def replay(open_session: Callable, image: sitk.Image, clicks) -> sitk.Image:
    """The mask of one session from ``open_session(image)`` after ``clicks`` ((RAS mm, positive), in order)."""
    session = open_session(image)
    try:
        for point, positive in clicks:
            session.add_click(point, positive)
        return session.mask
    finally:
        close = getattr(session, "close", None)
        if close is not None:
            close()


def label_map(masks: List[sitk.Image]) -> sitk.Image:
    """One mask: the only one as it is, or a label map (1 for the first, ...; the earlier keeps shared voxels)."""
    if len(masks) == 1:
        return masks[0]
    labels = np.zeros(sitk.GetArrayViewFromImage(masks[0]).shape, np.uint8 if len(masks) < 256 else np.uint16)
    for value, mask in enumerate(masks, 1):
        labels[(sitk.GetArrayViewFromImage(mask) > 0) & (labels == 0)] = value
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(masks[0])
    return image


def segment_case(case: Case, open_session: Callable) -> str:
    """Segment one case, each segment in its own session from ``open_session(image)``; write the mask atomically."""
    from .images import read_image, write_image

    segments = segments_of(case)
    with FILES:
        image = read_image(case.image)
    mask = label_map([replay(open_session, image, segment.clicks) for segment in segments])
    with FILES:
        write_case_output(case, lambda path: write_image(mask, path))
    clicks = count(sum(len(s.clicks) for s in segments), "click")
    if case.inputs["segments"].is_file():
        return f"{clicks}; labels " + ", ".join(f"{i}={s.name}" for i, s in enumerate(segments, 1))
    return clicks


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
