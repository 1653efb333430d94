"""``python -m SAMMed3DLib COMMAND``: the command-line entry point.

Each command lives in ``SAMMed3DLib/commands/<name>.py`` with ``HELP``, ``add_arguments(parser)``
and ``run(args) -> int``; it is imported only when chosen, so ``models`` never imports torch.
"""

import argparse
import importlib
import sys
from typing import List, Optional

from .errors import SAMMed3DError

COMMANDS = ("segment", "evaluate", "download", "models", "bench")


def _command_module(name: str):
    return importlib.import_module(f"{__package__}.commands.{name}")


def build_parser(selected: Optional[str] = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m SAMMed3DLib", description="SAM-Med3D interactive segmentation engine"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        if selected is None or name == selected:
            module = _command_module(name)
            module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
        else:
            sub.add_parser(name, help=_command_module(name).HELP, add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if a in COMMANDS), None)
    args = build_parser(selected).parse_args(argv)
    try:
        return int(_command_module(args.command).run(args) or 0)
    except SAMMed3DError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
