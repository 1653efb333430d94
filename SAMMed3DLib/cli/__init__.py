"""``python -m SAMMed3DLib COMMAND``: the command line, with its image-file and markups-file helpers.

Each command lives in ``SAMMed3DLib/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``models`` never imports torch.
May import the engine and the benchmarks; nothing else imports it. Never imports slicer, vtk or Qt.
"""

import argparse
import importlib
import os
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, List, NoReturn, Optional

from ..errors import SAMMed3DError

COMMANDS = {
    "segment": "segment a volume from clicks given in RAS millimetres or Slicer markups files",
    "evaluate": "simulate clicks against a label map and report Dice after each click",
    "download": "download a checkpoint from the registry or a URL into the cache",
    "models": "list the registry's checkpoints and what is cached",
    "bench": "benchmark the network against the official implementation",
    "bench-session": "benchmark interactive clicks against the official-style pipeline",
    "bench-mainloop": "benchmark the Slicer module's worker under a GIL-holding main loop against direct runs",
    "serve": "serve the engine over HTTP on Ray Serve (one worker per GPU)",
    "bench-server": "benchmark clicks through a server against local ones, and latency under concurrency",
    "segment-dataset": "segment every image of a folder from recorded markups prompts, locally or on a server",
    "bench-web": "benchmark a click in the browser station's page against the engine's own click time",
    "web": "the browser station: label volumes in a web page, one scene per browser session",
}
"""Command name → one-line help; the module is ``cli/<name with _ for ->.py``."""

NO_TORCH = (
    "this command runs the network on this machine and needs PyTorch, which this installation lacks: "
    "pip install 'SAMMed3DLib[torch]' (the dataset commands can run on a team server instead: --server URL)"
)
"""The one line for a command that needs torch in an installation without it (the base install is the client)."""


def _command_module(name: str):
    return importlib.import_module(f"{__package__}.{name.replace('-', '_')}")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``error: ...``, exit status 2), not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m SAMMed3DLib", description="SAM-Med3D interactive segmentation engine")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, text in COMMANDS.items():
        command = sub.add_parser(name, help=text, description=text, add_help=name == selected)
        if name == selected:
            _command_module(name).add_arguments(command)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that the same clean-up runs
    (staged outputs removed, a decided commit finished, sessions closed)."""


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere it keeps its handler).

    After the first, further SIGTERMs are ignored until the block ends: the clean-up they would cut short
    is what keeps the files whole (SIGKILL still stops the process).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(_signum, _frame) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(selected).parse_args(argv)
    try:
        with sigterm_as_interrupt():
            status = int(_command_module(args.command).run(args) or 0)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's last flush
            return status
    except BrokenPipeError:  # the reader went away (``models | head``): quiet, as other tools are
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except SAMMed3DError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:  # every parser builds without torch; a command's run imports it
        if exc.name != "torch":
            raise
        print(f"error: {NO_TORCH}", file=sys.stderr)
        return 2
