"""``download``: fetch a checkpoint (registry id or URL) into the cache and print its path last on stdout."""

import argparse
import re
import sys
import time
from typing import Optional, TextIO

from ..errors import DownloadError
from ..weights import DEFAULT_MAX_SIZE, DEFAULT_MAX_TIME, DEFAULT_RETRIES, DownloadOptions, resolve_checkpoint
from ..weights.options import check_positive
from .models import add_location_arguments, human_size

HELP = "download a checkpoint into the cache (registry id or --url) and print its path"
CONNECT_TIMEOUT = 10.0  # seconds
SIZE_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}  # decimal, as human_size prints them


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("model", nargs="?", metavar="MODEL_ID", help="registry id (see the 'models' command)")
    what.add_argument("--url", help="http(s)://, file:// or gdrive:<id> URL of a checkpoint")
    parser.add_argument("--sha256", help="expected SHA-256 of the file (64 hex digits)")
    add_location_arguments(parser)
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries per URL (default %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without data (or under 1 kB of it) before retrying"
    )
    parser.add_argument(
        "--max-time", type=float, default=DEFAULT_MAX_TIME, help="seconds for the whole download (default %(default)g)"
    )
    parser.add_argument(
        "--max-size",
        default=str(DEFAULT_MAX_SIZE),
        help="largest file accepted when the registry does not give its size, in bytes or with k/M/G (default 4 GiB)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


class ProgressBar:
    """Draws ``name  42% [#####.....] 120.0 MB / 284.0 MB  11.3 MB/s`` on ``stream``, at most 10 times a second."""

    def __init__(self, name: str, stream: TextIO = sys.stderr, width: int = 24) -> None:
        self.name, self.stream, self.width = name, stream, width
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: Optional[int], rate: float) -> bool:
        now = time.monotonic()
        if now - self.last >= 0.1 or (total is not None and done >= total):
            self.last = now
            self.stream.write("\r" + self.line(done, total, rate))
            self.stream.flush()
            self.drawn = True
        return True

    def line(self, done: int, total: Optional[int], rate: float) -> str:
        speed = f"{human_size(int(rate))}/s"
        if not total:
            return f"{self.name}  {human_size(done)}  {speed}   "
        filled = int(self.width * min(done / total, 1.0))
        bar = "#" * filled + "." * (self.width - filled)
        return f"{self.name} {100 * done / total:3.0f}% [{bar}] {human_size(done)} / {human_size(total)}  {speed}   "

    def finish(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def run(args: argparse.Namespace) -> int:
    if args.sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", args.sha256):
        raise DownloadError(f"--sha256 must be 64 hexadecimal digits, not {args.sha256!r}")
    options = download_options(args)
    spec = args.url or args.model
    bar = None if args.quiet else ProgressBar(spec.rsplit("/", 1)[-1])
    try:
        path = resolve_checkpoint(spec, options, progress=bar, sha256=args.sha256)
    finally:
        if bar is not None:
            bar.finish()
    print(path)
    return 0


def download_options(args: argparse.Namespace) -> DownloadOptions:
    """The command's settings, each checked with the option's own name in the message."""
    check_positive(args.timeout, "--timeout", "seconds")
    check_positive(args.max_time, "--max-time", "seconds")
    if args.retries < 0:
        raise DownloadError(f"--retries must be 0 or more, not {args.retries}")
    return DownloadOptions(
        cache_dir=args.cache_dir,
        registry=args.registry,
        timeout=(min(CONNECT_TIMEOUT, args.timeout), args.timeout),
        retries=args.retries,
        max_time=args.max_time,
        max_size=parse_size(args.max_size, "--max-size"),
    )


def parse_size(text: str, name: str) -> int:
    """Bytes from ``123``, ``500k``, ``1.5G`` (decimal units); one DownloadError naming ``name`` otherwise."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kKmMgGtT]?)[bB]?\s*", text)
    value = float(match.group(1)) * SIZE_UNITS[match.group(2).lower()] if match else 0.0
    if value < 1:
        raise DownloadError(f"{name} must be a positive size in bytes (e.g. 4000000000 or 4G), not {text!r}")
    return int(value)
