"""``evaluate``: simulated clicks on every labelled structure, Dice after each click (table and JSON)."""

import argparse
import json

HELP = "click-simulation evaluation against a label map: Dice after each simulated click"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, help="volume (any ITK-readable file or a DICOM series folder)")
    parser.add_argument("--label", required=True, help="label map on the same grid; each non-zero value is evaluated")
    parser.add_argument("--weights", required=True, help="checkpoint file or registry id")
    parser.add_argument("--clicks", type=int, default=10, help="clicks per structure (default 10)")
    parser.add_argument("--sampler", choices=("random", "ritm"), default="random", help="next-click rule")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--crop", choices=("bbox", "click"), default="bbox", help="first ROI centred on the label's box (official)"
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"))
    from .evaluate_dataset import add_dataset_arguments  # --dataset: every case, locally or on a server

    add_dataset_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from .evaluate_dataset import check_single_case, run_dataset

    if args.dataset is not None:
        return run_dataset(args)
    check_single_case(args)
    import numpy as np
    import SimpleITK as sitk

    from ..bench.evaluation import simulate
    from ..errors import InputError
    from ..model import load_model
    from ..roi import check_same_grid
    from .images import StagedOutputs, check_output_path, read_image, write_text

    if args.clicks < 1:
        raise InputError("--clicks must be at least 1")
    if args.json:
        check_output_path(args.json, "--json")
    image = read_image(args.image)
    label = read_image(args.label)
    check_same_grid(label, image, f"the label map {args.label}")
    labels = sitk.GetArrayFromImage(label)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise InputError(f"{args.label} has no labelled voxels")
    model = load_model(args.weights, device=args.device)
    results = {}
    for value in values:
        clicks = simulate(model, image, labels == value, args.clicks, args.sampler, args.seed, args.crop)
        results[value] = clicks
    print(_table(results, args.clicks))
    if args.json:
        with StagedOutputs() as outputs:
            outputs.stage(args.json, lambda path: write_text(json.dumps(_as_json(args, results), indent=2), path))
    return 0


def _table(results: dict, clicks: int) -> str:
    header = "label " + " ".join(f"{f'click {i + 1}':>8}" for i in range(clicks))
    rows = [header]
    for value, steps in results.items():
        rows.append(f"{value:>5} " + " ".join(f"{s.dice:8.4f}" for s in steps))
    return "\n".join(rows)


def _as_json(args: argparse.Namespace, results: dict) -> dict:
    return {
        "image": str(args.image),
        "label": str(args.label),
        "weights": str(args.weights),
        "sampler": args.sampler,
        "seed": args.seed,
        "crop": args.crop,
        "labels": {
            str(value): [
                {"point_ras": list(s.point_ras), "positive": s.positive, "dice": s.dice, "seconds": s.seconds}
                for s in steps
            ]
            for value, steps in results.items()
        },
    }
