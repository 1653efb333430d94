"""``bench-mainloop``: the Slicer module's first click and a download under a GIL-holding stand-in main loop,
against the same work run directly; and the worker's starvation without a waiting poll (needs slicer-core)."""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="interleaved runs of each side (the fastest counts)")
    parser.add_argument("--megabytes", type=int, default=96, help="size of the downloaded checkpoint (MiB)")
    parser.add_argument("--steps", type=int, default=50, help="1 ms GIL-releasing steps of the starvation job")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--weights", default=None, help="checkpoint (path or downloaded registry id) for the click; "
                        "default: the tiny random-weight network")
    parser.add_argument("--user-wait", type=float, default=3.0,
                        help="seconds the user takes between selecting the volume and the first click")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch's CPU threads, for every side (default: torch's, one per core)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (the folder holding SAMMed3DLib/) whose module's first click is "
                             "measured in the same run, for comparison")


def run(args: argparse.Namespace) -> int:
    from ..bench.mainloop import format_report, require_slicer_core, run_mainloop_benchmark
    from ..errors import InputError
    from .outputs import check_output_path, write_json_report

    if args.repeats < 1 or args.megabytes < 1 or args.steps < 1:
        raise InputError("--repeats, --megabytes and --steps must be positive")
    if args.threads is not None and args.threads < 1:
        raise InputError("--threads must be positive")
    if not 0 <= args.user_wait <= 60:
        raise InputError("--user-wait must be between 0 and 60 seconds")
    if args.baseline is not None and not (args.baseline / "SAMMed3DLib" / "slicer" / "controller.py").is_file():
        raise InputError(f"--baseline {args.baseline}: not a checkout holding SAMMed3DLib/")
    if args.json:
        check_output_path(args.json, "--json")  # before the run, not after it
    require_slicer_core()
    report = run_mainloop_benchmark(args.repeats, args.megabytes, args.steps, args.weights, args.user_wait,
                                    args.baseline, args.threads)
    print(format_report(report))
    write_json_report(args.json, report)
    return 0
