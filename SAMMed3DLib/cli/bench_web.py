"""``bench-web``: click in the browser → updated slice image on the page, against the engine's own click time in
the same run (the browser station in Debian's chromium through Playwright)."""

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", default=None, help="checkpoint (path or downloaded registry id); default: the "
                                                        "tiny random-weight network")  # fmt: skip
    parser.add_argument("--clicks", type=int, default=12, help="refinement clicks after the first (default 12)")
    parser.add_argument("--volume", type=Path, default=None, help="volume to upload (default: the MNI152 sample)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between clicks (the view settles)")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the chromium executable")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from ..bench.web import format_report, run_web_benchmark
    from ..errors import InputError
    from .outputs import check_output_path, write_json_report

    if args.clicks < 1 or args.settle < 0:
        raise InputError("--clicks must be positive and --settle not negative")
    if not Path(args.chromium).exists():
        raise InputError(f"no chromium at {args.chromium} (Debian: apt-get install chromium)")
    if args.volume is not None and not args.volume.is_file():
        raise InputError(f"--volume {args.volume}: no such file")
    if args.json:
        check_output_path(args.json, "--json")
    try:
        import playwright  # noqa: F401
    except ImportError as exc:
        raise InputError("bench-web drives the page with Playwright: pip install playwright") from exc
    report = run_web_benchmark(args.weights, args.clicks, args.volume, args.settle, args.chromium)
    print(format_report(report))
    write_json_report(args.json, report)
    return 0
