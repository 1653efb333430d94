"""``evaluate``: simulated clicks on every labelled structure, Dice after each click (table and JSON)."""

import argparse
import json
import os
from typing import TYPE_CHECKING, Callable

from .options import add_device_arguments, checked_device
from .progress import add_quiet_argument, load_model_with_progress, note

if TYPE_CHECKING:
    from ..bench.evaluation import ClickResult

HELP = "click-simulation evaluation against a label map: Dice after each simulated click"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", help="volume (any ITK-readable file or a DICOM series folder)")
    parser.add_argument("--label", help="label map on the same grid; each non-zero value is evaluated")
    parser.add_argument("--weights", help="checkpoint file or registry id")
    parser.add_argument("--clicks", type=whole_number(1), default=10, help="clicks per structure (default 10)")
    parser.add_argument("--sampler", choices=("random", "ritm"), default="random", help="next-click rule")
    parser.add_argument("--seed", type=whole_number(0), default=0, help="random seed, a whole number >= 0")
    parser.add_argument(
        "--crop", choices=("bbox", "click"), default="bbox", help="first ROI centred on the label's box (official)"
    )
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON")
    add_device_arguments(parser)
    add_quiet_argument(parser)
    from .evaluate_dataset import add_dataset_arguments  # --dataset: every case, locally or on a server

    add_dataset_arguments(parser)


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum`` (a clear one-line error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is less than {minimum}")
        return value

    return parse


def run(args: argparse.Namespace) -> int:
    from .evaluate_dataset import check_single_case, run_dataset

    if args.dataset is not None:
        return run_dataset(args)
    check_single_case(args)
    from ..bench.evaluation import simulate
    from ..inputs import check_label_map
    from ..wording import count
    from .images import read_image, write_text
    from .outputs import StagedOutputs, check_output_path, check_outputs_spare_inputs

    given = (("--image", args.image), ("--label", args.label), ("--weights", args.weights))
    inputs = [(option, path) for option, path in given if os.path.exists(path)]  # never overwritten
    if args.json:
        check_outputs_spare_inputs({"--json": check_output_path(args.json, "--json")}, inputs)
    device = checked_device(args)
    image = read_image(args.image)
    labels, values = check_label_map(read_image(args.label), image, f"the label map {args.label}")
    model = load_model_with_progress(args, device)
    results = {}
    for number, value in enumerate(values, 1):
        progress = _click_progress(args, f"label {value} ({number} of {count(len(values), 'structure')})")
        results[value] = simulate(
            model, image, labels == value, args.clicks, args.sampler, args.seed, args.crop, on_click=progress
        )
    print(_table(results, args.clicks))
    if args.json:
        with StagedOutputs(protected=[path for _, path in inputs]) as outputs:
            outputs.stage(args.json, lambda path: write_text(json.dumps(_as_json(args, results), indent=2), path))
    return 0


def _click_progress(args: argparse.Namespace, structure: str) -> Callable[["ClickResult"], None]:
    """Progress for one structure: ``label 3 (1 of 4 structures): click 2 of 10, Dice 0.8123`` per click."""
    clicks = 0

    def clicked(step: "ClickResult") -> None:
        nonlocal clicks
        clicks += 1
        note(args, f"{structure}: click {clicks} of {args.clicks}, Dice {step.dice:.4f}")

    return clicked


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
