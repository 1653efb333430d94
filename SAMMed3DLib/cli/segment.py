"""``segment``: clicks in → mask out, through the same InteractiveSession the Slicer module uses."""

import argparse
import json
import os
import sys
import time
from typing import TYPE_CHECKING, List, Tuple

from .markups import POINT_LIKE
from .options import add_device_arguments, checked_device
from .progress import add_quiet_argument, load_model_with_progress

if TYPE_CHECKING:
    import SimpleITK as sitk

HELP = "segment a structure from positive/negative clicks (RAS mm or Slicer .mrk.json) and write the mask"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser._negative_number_matcher = POINT_LIKE  # "-12.5,30,4" or "-inf,0,0" is a point, not an option
    parser.add_argument("--image", required=True, help="volume: NIfTI, NRRD, MHA, ... or a DICOM series folder")
    parser.add_argument(
        "--positive", required=True, nargs="+", metavar="P", help="R,A,S in mm, or a Slicer markups file (.mrk.json)"
    )
    parser.add_argument("--negative", nargs="+", default=[], metavar="N", help="as --positive, for background")
    parser.add_argument("--weights", required=True, help="checkpoint file or registry id")
    parser.add_argument("--out", required=True, help="output mask (uint8 0/1 on the image grid)")
    parser.add_argument("--save-roi", metavar="FILE", help="also write the normalised 128³ model input (NIfTI)")
    parser.add_argument("--timings", action="store_true", help="print one JSON line of step times (seconds)")
    add_device_arguments(parser)
    add_quiet_argument(parser)
    parser.add_argument("--auto-extend", action="store_true", help="follow objects larger than the 192 mm ROI")


def input_files(args: argparse.Namespace) -> List[Tuple[str, str]]:
    """(option, path) of every input given as a file or folder: none of them may be overwritten."""
    inputs = [("--image", args.image), ("--weights", args.weights)]
    inputs += [(option, spec) for option in ("--positive", "--negative") for spec in getattr(args, option[2:])]
    return [(option, path) for option, path in inputs if os.path.exists(path)]


def written_line(path: str, mask: "sitk.Image", seconds: float) -> str:
    """``wrote mask.nii.gz: 18,234 voxels, 27.4 ml, 1.9 s``: what the mask holds (1 ml = 1000 mm³)."""
    import numpy as np
    import SimpleITK as sitk

    from ..wording import count

    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    millilitres = voxels * float(np.prod(mask.GetSpacing())) / 1000.0
    return f"wrote {path}: {count(voxels, 'voxel')}, {millilitres:.1f} ml, {seconds:.1f} s"


def run(args: argparse.Namespace) -> int:
    from ..session import InteractiveSession
    from .images import check_format_holds, check_volume_path, read_image, write_image
    from .markups import parse_points
    from .outputs import StagedOutputs, check_distinct_outputs, check_output_path, check_outputs_spare_inputs

    start = time.perf_counter()
    volumes = {"--out": args.out, "--save-roi": args.save_roi}
    outputs = {option: check_output_path(path, option) for option, path in volumes.items() if path}
    check_distinct_outputs(outputs)  # before any work, as the checks above and below
    inputs = input_files(args)
    check_outputs_spare_inputs(outputs, inputs)
    for option, path in outputs.items():
        check_volume_path(path, option)
    device = checked_device(args)
    positives = [p for spec in args.positive for p in parse_points(spec)]
    negatives = [p for spec in args.negative for p in parse_points(spec)]
    tick = time.perf_counter()
    image = read_image(args.image)
    check_format_holds(image, outputs["--out"], "--out")
    read_s = time.perf_counter() - tick
    if args.device not in ("auto", device.type):
        print(f"warning: {args.device} is not available; running on {device.type}", file=sys.stderr)
    tick = time.perf_counter()
    model = load_model_with_progress(args, device)
    load_s = time.perf_counter() - tick
    session = InteractiveSession(model, image, auto_extend=args.auto_extend)
    steps = []
    for point, positive in [(p, True) for p in positives] + [(n, False) for n in negatives]:
        result = session.add_click(point, positive)
        steps.append({k: round(v, 4) for k, v in result.timings.items()})
    tick = time.perf_counter()
    with StagedOutputs(protected=[path for _, path in inputs]) as staged:  # both files or neither
        staged.stage(args.out, lambda path: write_image(session.mask, path))
        if args.save_roi:
            staged.stage(args.save_roi, lambda path: write_image(session.roi_input_image(), path))
    write_s = time.perf_counter() - tick
    print(written_line(args.out, session.mask, time.perf_counter() - start))
    if args.save_roi:
        print(f"wrote {args.save_roi}: the normalised model input of the last click's ROI (128x128x128 at 1.5 mm)")
    if args.timings:
        report = {
            "read_image": round(read_s, 4),
            "load_model": round(load_s, 4),
            "clicks": steps,
            "write": round(write_s, 4),
            "total": round(time.perf_counter() - start, 4),
            "device": device.type,
        }
        print(json.dumps(report))
    return 0
