"""``evaluate --dataset DIR``: the click simulation on every case of a dataset, locally or on a server.

``DIR/imagesTr/NAME.nii.gz`` (the layout SAM-Med3D's data use; ``images/`` also works) is evaluated against
``DIR/labelsTr/NAME.nii.gz`` (or ``labels/``), every non-zero label value as one structure. Each case's
Dice after every click goes to ``--out/NAME.json`` (atomically; a re-run skips cases already there); the
summary gives the mean Dice per click count over all structures. Exit status 1 if a case failed.
"""

import argparse
import json
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..errors import InputError
from ..wording import count
from .batch import FILES, Case, Outcome, image_cases, run_cases, session_opener, summary, write_case_output


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--dataset`` options; ``--image``, ``--label`` and ``--weights`` become optional (checked in run)."""
    group = parser.add_argument_group("dataset mode")
    group.add_argument("--dataset", type=Path, help="folder with imagesTr/ and labelsTr/: evaluate every case")
    group.add_argument("--out", type=Path, help="with --dataset: folder for the per-case results (NAME.json)")
    group.add_argument("--server", help="with --dataset: URL of a SAM-Med3D server to run the cases on")
    group.add_argument("--token-file", type=Path, help="file holding the server's bearer token")
    group.add_argument("--jobs", type=int, help="cases at a time (default: the server's worker count; locally 1)")
    group.add_argument("--redo", action="store_true", help="redo cases whose results already exist")


def check_single_case(args: argparse.Namespace) -> None:
    """Without --dataset, --image, --label and --weights are required."""
    missing = [f"--{name}" for name in ("image", "label", "weights") if not getattr(args, name)]
    if missing:
        raise InputError(f"give {', '.join(missing)} (or --dataset DIR to evaluate a whole dataset)")


def dataset_cases(folder: Path, out: Path) -> List[Case]:
    """Cases of ``folder``'s images with their label maps (a case without one fails on its own)."""
    images = next((folder / n for n in ("imagesTr", "images") if (folder / n).is_dir()), None)
    labels = next((folder / n for n in ("labelsTr", "labels") if (folder / n).is_dir()), None)
    if images is None or labels is None:
        raise InputError(f"{folder} needs an imagesTr/ (or images/) and a labelsTr/ (or labels/) folder")
    label_files = image_cases(labels) if any(labels.iterdir()) else {}
    return [Case(name, path, {"label": label_files.get(name, labels / f"{name}.nii.gz")}, out / f"{name}.json")
            for name, path in image_cases(images).items()]


def evaluate_case(case: Case, args: argparse.Namespace, factory: Callable) -> str:
    """Simulate clicks on every structure of one case; write ``NAME.json``; the final mean Dice."""
    from ..bench.evaluation import simulate
    from ..inputs import check_label_map
    from .images import read_image, write_text

    with FILES:
        image = read_image(case.image)
        label = read_image(case.inputs["label"])
    labels, values = check_label_map(label, image, f"the label map {case.inputs['label'].name}")
    results: Dict[str, List[float]] = {}
    opened: list = []  # remote sessions are closed here, not left to the server's idle time-out

    def open_session(_model, im):
        opened.append(factory(im))
        return opened[-1]

    for value in values:
        try:
            steps = simulate(None, image, labels == value, args.clicks, args.sampler, args.seed, args.crop,
                             session_factory=open_session)
        finally:
            while opened:
                getattr(opened.pop(), "close", lambda: None)()
        results[str(value)] = [s.dice for s in steps]
    text = json.dumps({"case": case.name, "clicks": args.clicks, "sampler": args.sampler, "seed": args.seed,
                       "dice": results}, indent=2)
    write_case_output(case, lambda path: write_text(text, path))
    return f"{count(len(values), 'structure')}, Dice {np.mean([d[-1] for d in results.values()]):.4f}"


def dice_table(outcomes: List[Outcome], cases: List[Case], clicks: int) -> str:
    """Mean Dice per click count over the structures of every finished case (a structure that reached
    Dice 1 early keeps it for the later counts)."""
    curves = []
    for case in cases:
        if case.output.is_file():
            for dice in json.loads(case.output.read_text(encoding="utf-8"))["dice"].values():
                curves.append(dice + [dice[-1]] * (clicks - len(dice)) if dice else [0.0] * clicks)
    if not curves:
        return "no finished case"
    means = np.mean(np.array(curves), axis=0)
    return f"mean Dice over {count(len(curves), 'structure')}\n" + "  ".join(
        f"{i + 1}: {m:.4f}" for i, m in enumerate(means))


def run_dataset(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    if args.clicks < 1:
        raise InputError("--clicks must be at least 1")
    if args.out is None:
        raise InputError("--dataset needs --out DIR for the per-case results")
    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be at least 1, got {args.jobs}")
    cases = dataset_cases(args.dataset, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    factory, jobs = session_opener(args, "evaluate")
    outcomes = run_cases(cases, lambda case: evaluate_case(case, args, factory), args.jobs or jobs, redo=args.redo)
    print(summary(outcomes, time.perf_counter() - start))
    print(dice_table(outcomes, cases, args.clicks))
    return 1 if any(o.status == "failed" for o in outcomes) else 0
