"""The browser station for the browser tests and ``bench-web``-style runs: the real launcher and station code,
with the deterministic stand-in network (Testing/support/standin.py) or a checkpoint in every station.

``python Testing/support/web_station.py [--data FOLDER] [--weights PATH]`` prints the launcher's ready line;
the launcher starts each browser session's station as ``... --station CONFIG_JSON PORT``."""

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path[:0] = [str(HERE.parents[1]), str(HERE.parents[2])]  # Testing/ (support.*) and the repository

from SAMMed3DLib.bench.web import READY  # noqa: E402  (the ready line the web command prints)


def station(config_json: str, port: int) -> None:
    from SAMMed3DLib.web.config import StationConfig
    from SAMMed3DLib.web.session import serve

    config = StationConfig.from_json(config_json)
    model = None
    if config.weights == "stand-in":
        from support.standin import StandInModel

        model = StandInModel()
    serve(config, port, model=model)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data")
    parser.add_argument("--weights", default="stand-in", help="stand-in, or a checkpoint path / registry id")
    parser.add_argument("--station", nargs=2, metavar=("CONFIG_JSON", "PORT"))
    parser.add_argument("--spares", type=int, default=0, help="stations started ahead (the tests start none: on "
                                                                "2 cores a spare's start slows the test's clicks)")
    args = parser.parse_args()
    if args.station:
        station(args.station[0], int(args.station[1]))
        return
    from SAMMed3DLib.web.config import StationConfig
    from SAMMed3DLib.web.launcher import Launcher, run

    settings = StationConfig(weights=args.weights, device="cpu", data=args.data, max_upload_mb=16).to_json()
    launcher = Launcher(lambda port: [sys.executable, str(HERE), "--station", settings, str(port)], max_sessions=4,
                        spares=args.spares)
    run(launcher, "127.0.0.1", 0, lambda url: print(f"{READY} {url}", flush=True))


if __name__ == "__main__":
    main()
