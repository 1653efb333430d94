"""Start (or join) Ray, the worker actors and the Serve gateway; block until interrupted."""

import contextlib
import signal
import sys
import threading
from typing import Any, Callable, List, Optional

import ray
from ray import serve

from ..errors import SAMMed3DError
from .config import NAMESPACE, SERVE_LOGGING, ServerConfig, check_config
from .loopback import keep_ray_on_loopback
from .raytoken import secure_token_file
from .worker import start_worker

APP_NAME = "sammed3d"
PORT_BUSY = "cannot listen on"
"""How the message for an HTTP address that cannot be bound starts."""


def connect(config: ServerConfig) -> None:
    """Join ``config.address``, or start a private local Ray with few resources and no dashboard, on loopback
    only (:mod:`.loopback`). First, Ray's cluster token file is made readable by its owner only."""
    note = secure_token_file(create=not config.address)
    if note:
        print(note, file=sys.stderr, flush=True)
    options = {"namespace": NAMESPACE, "log_to_driver": False, "include_dashboard": False}
    if config.address:
        try:
            ray.init(address=config.address, **options)
        except ConnectionError as exc:
            raise SAMMed3DError(f"cannot join the Ray cluster at {config.address}: {exc} (is `ray start --head` "
                                "running there, and does this machine have the cluster's token?)") from None
    else:  # every process at normal priority, Serve's proxy too (see NORMAL_PRIORITY)
        keep_ray_on_loopback()
        ray.init(num_cpus=config.num_cpus, _system_config={"worker_niceness": 0}, **options)


def worker_plan(config: ServerConfig) -> "tuple[int, float]":
    """(workers, GPUs each): one per GPU of the cluster by default, else one CPU worker; more workers than GPUs
    share them (fractions of a GPU)."""
    gpus = int(ray.cluster_resources().get("GPU", 0)) if config.device in ("auto", "cuda") else 0
    count = config.workers or max(1, gpus)
    return count, (min(1.0, gpus / count) if gpus else 0.0)


def start_workers(config: ServerConfig) -> List[Any]:
    """The named worker actors (loading the model in the background: see :func:`wait_for_workers`)."""
    count, gpus = worker_plan(config)
    cpus = 0 if gpus else min(1.0, config.num_cpus / count)
    device = config.device if gpus or config.device != "auto" else "cpu"
    return [start_worker(config, i, device, gpus, cpus, share=count) for i in range(count)]


def wait_for_workers(handles: List[Any]) -> None:
    """Wait until every worker has its model; SAMMed3DError with the worker's reason if one cannot load it."""
    try:
        ray.get([h.info.remote() for h in handles])
    except ray.exceptions.RayActorError as exc:
        cause = getattr(exc, "cause", None) or exc
        lines = [line for line in str(cause).splitlines() if line.strip()]
        raise SAMMed3DError(f"a worker could not load the model: {lines[-1] if lines else cause}") from None


def start(config: ServerConfig) -> List[Any]:
    """Check the configuration, start Ray, the gateway, then the workers; the worker handles, to be held for as
    long as the server runs. Serve starts first, alone: its HTTP proxy must come up within Serve's fixed 60 s,
    which workers loading torch at the same time can break on a busy machine. Until the workers have loaded
    the model, /v1/health answers "degraded"."""
    from .gateway import Gateway

    check_config(config)
    connect(config)
    count, _ = worker_plan(config)
    listen(config)
    serve.run(Gateway.bind(config, count), name=APP_NAME, route_prefix="/")
    handles = start_workers(config)
    wait_for_workers(handles)
    return handles


def listen(config: ServerConfig) -> None:
    """Start Serve's HTTP proxy on ``config.host``:``config.port``; SAMMed3DError in one line if it cannot."""
    try:
        serve.start(http_options={"host": config.host, "port": config.port}, logging_config=SERVE_LOGGING)
    except ray.exceptions.RayTaskError as exc:
        if "Failed to bind" not in str(exc):
            raise
        raise SAMMed3DError(f"{PORT_BUSY} {config.host}:{config.port}: another program uses the port, or the "
                            "address is not one of this machine's; choose another --port or --host") from None


def stop() -> None:
    """Remove the gateway and disconnect (a private local Ray stops with it); after a failed start, whatever
    had started (an error here must not hide the one that stopped the start)."""
    if ray.is_initialized():
        with contextlib.suppress(Exception):
            serve.delete(APP_NAME)
            serve.shutdown()
    ray.shutdown()


def serve_forever(config: ServerConfig, ready: Optional[Callable[[str], None]] = None) -> None:
    """Run until SIGINT or SIGTERM; ``ready`` gets the base URL once requests are accepted."""
    done = threading.Event()
    try:
        handles = start(config)  # held: a worker actor with no reference left is destroyed
        for sig in (signal.SIGINT, signal.SIGTERM):  # after Ray's own set-up, which installs handlers
            signal.signal(sig, lambda *_: done.set())
        if ready is not None:
            ready(f"http://{config.host}:{config.port}")
        done.wait()
        del handles
    finally:
        stop()
