"""``download``: fetch a checkpoint (registry id or URL) into the cache and print its path last on stdout."""

import argparse
import re
import sys
import time
from typing import Optional, TextIO

from ..errors import DownloadError
from ..weights import resolve_checkpoint
from ..weights.download import DEFAULT_RETRIES
from .models import add_location_arguments, human_size

HELP = "download a checkpoint into the cache (registry id or --url) and print its path"
CONNECT_TIMEOUT = 10.0  # seconds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("model", nargs="?", metavar="MODEL_ID", help="registry id (see the 'models' command)")
    what.add_argument("--url", help="http(s)://, file:// or gdrive:<id> URL of a checkpoint")
    parser.add_argument("--sha256", help="expected SHA-256 of the file (64 hex digits)")
    add_location_arguments(parser)
    parser.add_argument("--retries", type=int, default=DEFAULT_RETRIES, help="retries per URL (default %(default)s)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds without data before retrying")
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
    spec = args.url or args.model
    bar = None if args.quiet else ProgressBar(spec.rsplit("/", 1)[-1])
    try:
        path = resolve_checkpoint(
            spec,
            registry=args.registry,
            cache_dir=args.cache_dir,
            progress=bar,
            timeout=(CONNECT_TIMEOUT, args.timeout),
            retries=args.retries,
            sha256=args.sha256,
        )
    finally:
        if bar is not None:
            bar.finish()
    print(path)
    return 0
