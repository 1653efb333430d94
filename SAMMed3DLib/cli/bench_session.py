"""``bench-session``: click-to-mask timings of InteractiveSession against the official-style pipeline."""

import argparse
from pathlib import Path

from ..device import DEVICES, PRECISIONS

HELP = "benchmark interactive clicks (first click, refinement, peak RSS) against the official-style pipeline"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu", choices=DEVICES)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--no-reference", action="store_true", help="time SAMMed3DLib alone (no torchio/medim)")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="also run ours with the image encoder in this precision (bf16 on a CPU needs AVX512-BF16 or AMX) "
        "and report its times and its mask's Dice against fp32",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..bench.session import run_session_benchmark
    from .options import checked_device
    from .outputs import check_output_path, write_json_report

    if args.json:
        check_output_path(args.json, "--json")  # before the run, not after it
    device = checked_device(args)  # one clear message before any run, not a child's traceback
    report = run_session_benchmark(
        str(device), args.threads, reference=not args.no_reference, precision=args.precision
    )
    write_json_report(args.json, report)
    return 0
