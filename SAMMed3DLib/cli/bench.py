"""``bench``: time our network against the official implementation in the same run."""

import argparse
from pathlib import Path

from ..device import DEVICES
from ..errors import InputError

HELP = "benchmark the network against the official implementation (identity, speed-up, peak memory)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed encoder runs of SAMMed3DLib (median)")
    parser.add_argument("--reference-repeats", type=int, default=3, help="timed encoder runs of the reference")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument(
        "--precision",
        choices=("bf16", "fp16"),
        default=None,
        help="also run our encoder in this precision and report its deviation from fp32",
    )
    parser.add_argument("--no-reference", action="store_true", help="time SAMMed3DLib alone")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..bench.network import BenchSettings, run_benchmark
    from .options import checked_device
    from .outputs import check_output_path, write_json_report

    if args.repeats < 1 or args.reference_repeats < 1:
        raise InputError("--repeats and --reference-repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be at least 1")
    if args.json:
        check_output_path(args.json, "--json")  # before the run, not after it
    device = checked_device(args)  # the precision rule every command follows, before any run
    settings = BenchSettings(
        repeats=args.repeats,
        reference_repeats=args.reference_repeats,
        device=str(device),
        threads=args.threads,
        precision=args.precision,
        with_reference=not args.no_reference,
    )
    report = run_benchmark(settings)
    write_json_report(args.json, report)
    return 0 if report.get("identical", True) else 1
