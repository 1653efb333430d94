"""``web``: the browser station (see README, "The browser station"): one address, one station process per browser
session, each with its own Slicer scene; the page drives the Slicer module's own controller."""

import argparse
import sys
from pathlib import Path

from ..device import PRECISIONS
from ..errors import InputError
from ..slicer.models import DEFAULT_MODEL, DEVICE_CHOICES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, help="worklist folder: its volumes are the cases (default: the page "
                                                  "uploads a volume or opens the sample)")  # fmt: skip
    parser.add_argument("--weights", default=DEFAULT_MODEL, help=f"checkpoint file or registry id (default "
                                                                 f"{DEFAULT_MODEL}; see `models`)")  # fmt: skip
    parser.add_argument("--device", default="auto", choices=list(DEVICE_CHOICES), help="where the engine runs")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS, help="image encoder precision")
    parser.add_argument("--server", default="", help="a team SAM-Med3D server's URL: the engines run there")
    parser.add_argument("--token-file", type=Path, help="file holding the team server's token")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--access-token-file", type=Path,
                        help="file holding the page's access token (required off loopback)")  # fmt: skip
    parser.add_argument("--max-upload-mb", type=float, default=512.0, help="largest uploaded volume, MiB")
    parser.add_argument("--max-sessions", type=int, default=4, help="browser sessions at once (default 4)")


def config_from(args: argparse.Namespace):
    """The stations' options, checked before anything starts."""
    from ..server.config import read_token
    from ..web.config import StationConfig

    if not 0 <= args.port <= 65535:
        raise InputError(f"--port must be between 0 and 65535, got {args.port}")
    if args.data is not None and not args.data.is_dir():
        raise InputError(f"--data {args.data}: not a folder")
    if args.max_upload_mb <= 0 or args.max_sessions < 1:
        raise InputError("--max-upload-mb must be positive and --max-sessions at least 1")
    if args.token_file and not args.server:
        raise InputError("--token-file is the team server's token: give --server URL too")
    device = "server" if args.server else args.device
    token = read_token(args.token_file) if args.token_file else ""
    return StationConfig(weights=str(args.weights), device=device, precision=args.precision,
                         server_url=args.server.strip(), server_token=token,
                         data=str(args.data.resolve()) if args.data else None,
                         max_upload_mb=args.max_upload_mb)  # fmt: skip


def access_token(args: argparse.Namespace):
    """The page's token; refused off loopback without one (anyone on the network could read the cases)."""
    from ..server.config import is_loopback, read_token

    if args.access_token_file:
        return read_token(args.access_token_file)
    if not is_loopback(args.host):
        raise InputError(
            f"refusing to listen on {args.host} without a token: anyone on the network could open the cases; give "
            "--access-token-file FILE (one line, the shared secret) or bind to 127.0.0.1"
        )
    return None


def run(args: argparse.Namespace) -> int:
    config = config_from(args)
    token = access_token(args)
    try:
        from ..web.launcher import Launcher
        from ..web.launcher import run as serve
    except ImportError as exc:
        raise InputError(f"the browser station needs trame-slicer: pip install 'SAMMed3DLib[web]' ({exc})") from exc
    settings = config.to_json()
    launcher = Launcher(lambda port: [sys.executable, "-m", "SAMMed3DLib.web", settings, str(port)], token=token,
                        max_sessions=args.max_sessions)

    def ready(url: str) -> None:
        shown = f"{url}?token=<the token in {args.access_token_file}>" if token else url
        print(f"SAM-Med3D browser station at {shown} (Ctrl+C stops it)", flush=True)

    serve(launcher, args.host, args.port, ready)
    return 0
