"""Progress on standard error for the commands that take long: what is being done, and a bar for an implicit
download of the weights. Shown on a terminal only: silent under ``--quiet`` and when standard error is a file or
a pipe (a log, a batch job), where a line per step would only bury the messages that matter."""

import argparse
import sys
from contextlib import contextmanager
from typing import Iterator, Optional

from .download import ProgressBar


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet", action="store_true", help="no progress on standard error (shown only on a terminal anyway)"
    )


def stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # no standard error, or a closed one
        return False


def shown(args: argparse.Namespace) -> bool:
    """Whether this run shows progress: not ``--quiet``, and standard error is a terminal."""
    return not getattr(args, "quiet", False) and stderr_is_terminal()


def note(args: argparse.Namespace, text: str) -> None:
    """One progress line on standard error, when progress is :func:`shown`."""
    if shown(args):
        print(text, file=sys.stderr, flush=True)


@contextmanager
def download_bar(args: argparse.Namespace) -> Iterator[Optional[ProgressBar]]:
    """A progress bar for the download ``--weights ID`` may start (None when progress is not shown); it draws
    only if bytes arrive, so a cached checkpoint shows nothing."""
    bar = ProgressBar(str(args.weights).rsplit("/", 1)[-1], sys.stderr) if shown(args) else None
    try:
        yield bar
    finally:
        if bar is not None:
            bar.finish()


def load_model_with_progress(args: argparse.Namespace, device, **settings):
    """``load_model(args.weights)`` on ``device`` in ``args.precision``, with a bar if it downloads."""
    from ..model import load_model

    with download_bar(args) as bar:
        return load_model(args.weights, device=device, precision=args.precision, progress=bar, **settings)
