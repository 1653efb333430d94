"""Run one station (one browser session's process): a trame server on a loopback port with its page.

``python -m SAMMed3DLib.web CONFIG_JSON PORT`` is what :mod:`.launcher` starts for every browser session; the
process prints ``SAM-Med3D station ready on port N`` once it listens; the launcher ends it."""

import functools
import os
import signal
import sys
from typing import Any, Callable, Optional

if sys.platform.startswith("linux"):  # before VTK makes its first render window: off-screen, no display needed
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
# Before torch and Mesa start their threads. The engine's OpenMP threads must not spin while they wait: they
# would take the cores the views render on (a tiny network's step took 850 ms instead of 60 ms on 2 cores).
# One llvmpipe render thread: the engine's threads have the other cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("LP_NUM_THREADS", "1")

from .config import StationConfig  # noqa: E402
from .station import Station  # noqa: E402

READY = "SAM-Med3D station ready on port"


def serve(config: StationConfig, port: int, model: Any = None, idle_exit_s: float = 0.0,
          on_ready: Optional[Callable[[int], None]] = None) -> None:  # fmt: skip
    """Build the station and serve its page on 127.0.0.1:``port`` until it is terminated (the launcher ends it)
    or, with ``idle_exit_s``, until no page has been connected for that long. Blocks; the station closes its
    case on the way out (SIGTERM included)."""
    from trame.app import get_server
    from trame_slicer import module as trame_slicer_module

    from . import page, worklist_panel

    server = get_server(name=f"sammed3d-station-{port}", client_type="vue3")
    # trame reads its own options from sys.argv; this process's arguments are not for it.
    server.cli.parse_known_args = functools.partial(type(server.cli).parse_known_args, server.cli, [])
    server.enable_module(trame_slicer_module)
    station = Station(server, config, model=model)
    case_panel = worklist_panel.attach(station, config.owner) if config.data else None
    page.build(station, case_panel)
    announce = on_ready or (lambda p: print(f"{READY} {p}", flush=True))
    server.controller.on_server_ready.add(lambda **_: announce(server.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwind: the case's lock is given back
    try:
        server.start(port=port, host="127.0.0.1", open_browser=False, show_connection_info=False,
                     disable_logging=True, timeout=int(idle_exit_s))  # fmt: skip
    finally:
        station.close()
